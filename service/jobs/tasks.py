"""arq tasks and queue plumbing for jobs. Thin: open sessions, call the service, enqueue
what follows.

Submissions do not go through arq: the dispatcher (service.dispatch.dispatcher) hands
granted jobs to service.jobs.runner. arq carries what waits: polls of generations that
run at a provider, completions reported by provider callbacks, cancellations at the
provider. arq runs a task at least once, so each is safe to repeat: a job that is no
longer waiting at its provider makes every one of them a no-op.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import structlog
from arq import Retry
from redis.exceptions import RedisError

from service.config import Settings
from service.db import session_scope
from service.dispatch.latency import FLOOR_S
from service.events import publish_noted
from service.jobs import attempts, repository, service
from service.jobs.polls import (
    enqueue_poll,
    next_poll_delay_s,
    observe_completion,
    poll_job_id,
    polling,
    waited_s,
)
from service.jobs.queue import missing_from_queue
from service.kit.base import utcnow
from service.logging import bind_ids, get_logger
from service.metrics import recorded as metrics
from service.models import JobStatus, Priority
from service.providers.base import (
    AsyncProvider,
    ProviderError,
    ProviderPermanentError,
    ProviderRateLimited,
    ProviderRetryableError,
    RemoteHandle,
)
from service.state import State

log = get_logger(__name__)

FINISH_REMOTE_JOB = "finish_remote_job"
CANCEL_REMOTE_JOBS = "cancel_remote_jobs"


def cancel_queue_name(settings: Settings) -> str:
    return f"{settings.queue_name}:cancel"


async def enqueue_jobs(
    state: State, batch_id: uuid.UUID, priority: Priority, jobs: Sequence[tuple[uuid.UUID, str]]
) -> None:
    """Put (job id, model) pairs in line at their provider accounts. Best effort, after
    commit: what is stored is accepted, and the reconciler enqueues whatever a Redis
    failure here leaves behind."""
    by_account: dict[str, list[str]] = defaultdict(list)
    for job_id, model in jobs:
        spec = state.registry.model(model)
        if spec is not None:
            by_account[spec.provider].append(str(job_id))
    try:
        for account, ids in by_account.items():
            await state.dispatch.queue(account).enqueue(str(batch_id), ids, priority)
    except (RedisError, OSError) as exc:
        log.warning("enqueue_deferred_to_reconciler", jobs=len(jobs), error=repr(exc))


async def poll_job(ctx: dict[str, Any], job_id: str) -> None:
    state: State = ctx["state"]
    with structlog.contextvars.bound_contextvars(job_id=job_id):
        again_in = await _poll_job(state, uuid.UUID(job_id), polls=int(ctx.get("job_try", 1)))
    if again_in is not None:
        raise Retry(defer=timedelta(seconds=again_in))


async def poll_once(state: State, job_id: uuid.UUID) -> None:
    """The first poll, on time, from the process that submitted the generation; arq's
    deferred poll follows one step later whatever this finds (see jobs.polls)."""
    with structlog.contextvars.bound_contextvars(job_id=str(job_id)):
        try:
            await _poll_job(state, job_id, polls=1)
        except Exception:
            log.exception("on_time_poll_failed")


async def _poll_job(state: State, job_id: uuid.UUID, *, polls: int) -> float | None:
    """Ask the provider how the generation is doing. Returns seconds until the next poll."""
    async with polling(state, job_id) as mine:
        if not mine:  # another poll is under way: look again once it is done
            return FLOOR_S
        return await _poll_job_now(state, job_id, polls=polls)


async def _poll_job_now(state: State, job_id: uuid.UUID, *, polls: int) -> float | None:
    async with state.sessionmaker() as session:
        started = await service.resume_remote(session, job_id)
    if started is None or started.remote_id is None:
        return None
    bind_ids(batch_id=started.batch_id, account=started.account)  # this task's own context
    spec = state.registry.model(started.model)
    provider = state.registry.providers.get(started.account)
    if spec is None or not isinstance(provider, AsyncProvider):
        await _fail_unconfigured(state, [job_id])
        return None
    remote: RemoteHandle | None = None
    again_in: float | None = None
    try:
        with metrics.provider_request(started.account, "poll"):
            remote = await provider.poll(started.handle)
    except ProviderRateLimited as error:
        again_in = error.retry_after_s
    except ProviderRetryableError as error:
        log.warning("poll_failed", code=error.code, error=error.message)
    except ProviderError as error:
        # The provider no longer knows the generation (404) or us (401): this attempt
        # is over; another may still succeed.
        lost = ProviderRetryableError(error.code, error.message, http_status=error.http_status)
        remote = RemoteHandle(started.remote_id, "failed", error=lost)
    if remote is not None and remote.finished:
        # Even past the deadline: a late poll (its worker died, Redis was away) must not
        # throw away a generation that is done and paid for.
        # The slot is freed first (complete_remote), what it took is noted after.
        took_s = waited_s(started)
        again_in = await attempts.complete_remote(state, spec, started, remote)
        await observe_completion(state, provider, started, remote, took_s=took_s, polled=True)
        return again_in
    if remote is not None and remote.queue_position != started.queue_position:
        async with session_scope(state.sessionmaker) as session:
            await service.note_queue_position(session, job_id, remote.queue_position)
    waited = waited_s(started)
    if waited > spec.deadline_s:
        await _give_up(state, started, provider_cancel=True, waited_s=waited)
        return None
    # Renewed only now that the generation is known to run: a finished one's slot, freed
    # by its callback meanwhile, is not taken back.
    await state.dispatch.limiter(started.account).renew(str(job_id), attempts.REMOTE_LEASE_S)
    scheduled = await next_poll_delay_s(state, started, polls=polls)
    return max(again_in or 0.0, scheduled)


async def _give_up(
    state: State, started: service.StartedJob, *, provider_cancel: bool, waited_s: float
) -> None:
    provider = state.registry.providers[started.account]
    stopped = started.remote_id is None
    if provider_cancel and started.remote_id is not None and isinstance(provider, AsyncProvider):
        try:
            await provider.cancel(started.handle)
            stopped = True
        except ProviderError as error:
            log.warning("provider_cancel_failed", code=error.code, error=error.message)
    late = f"the provider had not finished after {waited_s:.0f} s"
    overdue: ProviderError = ProviderRetryableError("deadline_exceeded", late)
    if not stopped:
        # It may still run, and be billed: sending the job again, here or to a fallback
        # model, could pay for it twice.
        overdue = ProviderPermanentError(
            "deadline_not_cancelled",
            f"{late}, and it could not be cancelled there; the job is not sent again "
            "(here or to a fallback model) so that it is not paid for twice",
        )
    remote = RemoteHandle(started.remote_id or "", "failed", error=overdue)
    spec = state.registry.model(started.model)
    if spec is not None:
        await attempts.complete_remote(state, spec, started, remote)


async def finish_remote_job(
    ctx: dict[str, Any], job_id: str, account: str, payload: Mapping[str, Any]
) -> None:
    """A provider's callback said the generation finished; finish the job with it.
    `payload` is the finished RemoteHandle, as RemoteHandle.to_json wrote it."""
    state: State = ctx["state"]
    with structlog.contextvars.bound_contextvars(job_id=job_id):
        again_in = await _finish_remote_job(state, uuid.UUID(job_id), account, payload)
    if again_in is not None:
        await enqueue_poll(state, uuid.UUID(job_id), delay_s=again_in)


async def _finish_remote_job(
    state: State, job_id: uuid.UUID, account: str, payload: Mapping[str, Any]
) -> float | None:
    provider = state.registry.providers.get(account)
    async with state.sessionmaker() as session:
        started = await service.resume_remote(session, job_id)
    if provider is None or started is None or started.account != account:
        return None
    bind_ids(batch_id=started.batch_id, account=account)  # this task's own context
    remote = RemoteHandle.from_json(payload)
    spec = state.registry.model(started.model)
    if remote.id != started.remote_id or not remote.finished or spec is None:
        return None
    took_s = waited_s(started)
    again_in = await attempts.complete_remote(state, spec, started, remote)
    await observe_completion(state, provider, started, remote, took_s=took_s, polled=False)
    return again_in


async def cancel_remote_jobs(ctx: dict[str, Any], batch_id: str) -> None:
    state: State = ctx["state"]
    with structlog.contextvars.bound_contextvars(batch_id=batch_id):
        await _cancel_remote_jobs(state, uuid.UUID(batch_id))


async def _cancel_remote_jobs(state: State, batch_id: uuid.UUID) -> int:
    """A cancelled batch's generations still running at their providers are cancelled
    there, so nobody pays for what will be thrown away."""
    async with state.sessionmaker() as session:
        job_ids = await repository.remote_job_ids(session, batch_id)
    cancelled = 0
    for job_id in job_ids:
        bind_ids(job_id=job_id)  # this task's own context
        async with state.sessionmaker() as session:
            started = await service.resume_remote(session, job_id)
        spec = state.registry.model(started.model) if started is not None else None
        if started is None or started.remote_id is None or spec is None:
            continue
        provider = state.registry.providers.get(started.account)
        if not isinstance(provider, AsyncProvider):
            continue
        try:
            await provider.cancel(started.handle)
        except ProviderError as error:
            log.warning("provider_cancel_failed", code=error.code, error=error.message)
            if error.code != "not_cancelled":
                continue  # the job ends as its provider ends it
            # It runs on at the provider (fal: it had started), but the batch is cancelled:
            # the job is too.
        canceled = RemoteHandle(started.remote_id, "canceled")
        await attempts.complete_remote(state, spec, started, canceled)
        cancelled += 1
    return cancelled


async def enqueue_cancel(state: State, batch_id: uuid.UUID) -> None:
    """After a cancel commits: drop the batch's queued jobs from the dispatch queues and
    cancel what runs at providers. Best effort: queued jobs left behind are skipped
    (their grant refunded) when they come up."""
    try:
        for account in state.dispatch.accounts():
            await state.dispatch.queue(account).purge(str(batch_id))
        await state.redis.enqueue_job(
            CANCEL_REMOTE_JOBS, str(batch_id), _queue_name=cancel_queue_name(state.settings)
        )
    except (RedisError, OSError) as exc:
        log.warning("cancel_at_providers_failed", error=repr(exc))


async def reconcile_jobs(state: State) -> int:
    """Put back in line every active job that Redis has lost track of: a crash between
    commit and enqueue, a worker that died holding a job, a Redis that forgot."""
    older_than = utcnow() - timedelta(seconds=state.settings.reconcile_stale_after_s)
    restored = 0
    after: uuid.UUID | None = None
    while True:
        async with state.sessionmaker() as session:
            rows = await repository.stale_active_jobs(
                session, older_than=older_than, after_id=after, limit=2_000
            )
        if not rows:
            break
        after = rows[-1].id
        restored += await _restore(state, rows)
    if restored:
        log.warning("reconciler_restored_jobs", count=restored)
    await _complete_idle_batches(state)
    return restored


async def _complete_idle_batches(state: State) -> None:
    """Batches whose last job finished while the completion step failed (Postgres away
    between the two transactions) are completed here."""
    async with state.sessionmaker() as session:
        batch_ids = await repository.idle_unfinished_batch_ids(session)
    for batch_id in batch_ids:
        await attempts.settle(state, service.Transition([], batch_to_check=batch_id))


async def _restore(state: State, rows: Sequence[repository.ActiveJob]) -> int:
    restored = 0
    polls = [row for row in rows if row.remote_id is not None]
    missing = set(await missing_from_queue(state.redis, [poll_job_id(r.id) for r in polls]))
    for row in polls:
        if poll_job_id(row.id) in missing:
            await enqueue_poll(state, row.id, delay_s=0)
            restored += 1
    by_account: dict[str, list[repository.ActiveJob]] = defaultdict(list)
    for row in rows:
        spec = state.registry.model(row.model)
        if row.remote_id is None:
            by_account[spec.provider if spec else ""].append(row)
    for account, group in by_account.items():
        if not account:
            restored += await _fail_unconfigured(state, [row.id for row in group])
            continue
        queue = state.dispatch.queue(account)
        ids = [str(row.id) for row in group]
        waiting = await queue.waiting(ids)
        held = await queue.holds_slot(ids)
        for row, is_waiting, is_held in zip(group, waiting, held, strict=True):
            if is_waiting or is_held:
                continue
            front = row.status is JobStatus.running  # its worker died: it was next in line
            await queue.enqueue(str(row.batch_id), [str(row.id)], row.priority, front=front)
            restored += 1
    return restored


async def _fail_unconfigured(state: State, job_ids: Sequence[uuid.UUID]) -> int:
    """Jobs whose model or provider account left the configuration fail, saying so."""
    for job_id in job_ids:
        async with session_scope(state.sessionmaker) as session:
            transition = await service.fail_unconfigured(
                session, job_id, public_url=state.settings.public_url
            )
        await publish_noted(state, session)
        if transition is not None:
            await attempts.settle(state, transition)
    return len(job_ids)
