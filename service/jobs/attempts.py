"""An attempt's lifecycle after its request went out: submitted, finished at the
provider, stored, recorded.

This module owns those steps for every entry point: the runner (a synchronous provider's
output, or an asynchronous one's handle), polls and provider callbacks (jobs.tasks), the
deadline and cancellations. Each step is safe to repeat: an attempt that no longer owns
its job makes it a no-op.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from decimal import Decimal

from redis.exceptions import RedisError

from service.callbacks.early import take_early_callback
from service.catalog import health, pricing
from service.db import session_scope
from service.events import publish_noted
from service.jobs import service
from service.jobs.batching import batcher
from service.jobs.outcomes import Failed, Outcome, RateLimited, Succeeded
from service.jobs.polls import schedule_polls
from service.jobs.requests import generation_request
from service.jobs.service import StartedJob, Transition
from service.jobs.steps import Hopped
from service.kit.backoff import exponential_backoff
from service.kit.base import utcnow
from service.logging import get_logger
from service.models import Batch, Priority
from service.providers.base import (
    AsyncProvider,
    Output,
    ProviderError,
    ProviderRateLimited,
    ProviderRetryableError,
    RemoteHandle,
)
from service.providers.registry import ModelSpec
from service.state import State
from service.storage.base import StorageError
from service.webhooks.tasks import enqueue_deliveries

log = get_logger(__name__)

RETRY_CAP_S = 120.0
# How long a job waiting at an asynchronous provider holds its slot without a poll or
# callback renewing it, before the slot counts as free again.
REMOTE_LEASE_S = 180.0
# A succeeded generation whose output could not be downloaded is looked at again after this.
FETCH_RETRY_S = 5.0


def retry_delay_s(attempt: int, base_s: float) -> float:
    return exponential_backoff(attempt, base_s=base_s, cap_s=RETRY_CAP_S)


async def submitted(
    state: State,
    spec: ModelSpec,
    provider: AsyncProvider,
    started: StartedJob,
    handle: RemoteHandle,
) -> None:
    """Store the handle before anything else: from here the job resumes by polling."""
    async with session_scope(state.sessionmaker) as session:
        owned = await service.record_submitted(session, started, handle)
    if not owned:
        log.warning("submitted_job_no_longer_owned", remote_id=handle.id)
        return
    started = service.with_remote(started, handle)
    early = await take_early_callback(state, started.account, handle.id)
    if early is not None:
        handle = early
    if handle.finished:
        await complete_remote(state, spec, started, handle)
        return
    limiter = state.dispatch.limiter(started.account)
    await limiter.renew(str(started.job_id), REMOTE_LEASE_S)
    await schedule_polls(state, provider, started)


async def complete_remote(
    state: State, spec: ModelSpec, started: StartedJob, handle: RemoteHandle
) -> float | None:
    """A finished generation: free the slot, fetch the output (its URL expires), record.
    Returns seconds until a poll should try again (a failed download), else None."""
    limiter = state.dispatch.limiter(started.account)
    await limiter.release(str(started.job_id))
    provider = state.registry.providers[started.account]
    assert isinstance(provider, AsyncProvider)
    if handle.status == "succeeded":
        try:
            request = await generation_request(state, spec, started, with_inputs=False)
            output = await provider.fetch_result(handle, request)
        except ProviderRetryableError as error:
            log.warning("fetch_result_failed", code=error.code, error=error.message)
            return FETCH_RETRY_S
        except ProviderError as error:
            await record_error(state, spec, started, error, _since_submitted_ms(started))
            return None
        await store_and_record(state, spec, started, output, _since_submitted_ms(started))
        return None
    if handle.status == "canceled" and await _batch_cancelled(state, started):
        await record_cancelled(state, spec, started)
        return None
    reason = handle.error or ProviderRetryableError(
        f"remote_{handle.status}", f"the provider reported {handle.status} with no reason"
    )
    await record_error(state, spec, started, reason, _since_submitted_ms(started))
    return None


async def store_and_record(
    state: State, spec: ModelSpec, started: StartedJob, output: Output, latency_ms: int | None
) -> None:
    # The provider made it, so it is paid for, stored or not.
    cost = pricing.actual(spec, started.params, output)
    try:
        stored = await state.storage.put(started.output_key, output.data, output.content_type)
    except StorageError as exc:  # the store is down, not the provider: retry the job
        log.warning("storing_output_failed", error=str(exc))
        error = ProviderRetryableError("storage_unavailable", str(exc))
        await record_error(state, spec, started, error, latency_ms, cost=cost)
        return
    except Exception as exc:
        log.exception("storing_output_failed")
        error = ProviderRetryableError("storage_error", f"{type(exc).__name__}: {exc}")
        await record_error(state, spec, started, error, latency_ms, cost=cost)
        return
    price = pricing.estimate(spec, started.params)
    outcome = Succeeded(started, output, stored, latency_ms, cost, price)
    transition = await batcher(state).record(outcome)
    await health.record(
        state.redis, state.registry.health, started.model, ok=True, latency_ms=latency_ms
    )
    await settle(state, transition)


async def record_error(
    state: State,
    spec: ModelSpec,
    started: StartedJob,
    error: ProviderError,
    latency_ms: int | None,
    *,
    sent_at_ms: int | None = None,
    cost: Decimal | None = None,
) -> None:
    """`cost`: what the attempt cost although it failed (its output was made but could
    not be stored); else what the provider charges for the failure (pricing.failed)."""
    log.warning("job_attempt_failed", code=error.code, error=error.message)
    price = pricing.estimate(spec, started.params)
    outcome: Outcome
    if isinstance(error, ProviderRateLimited) and sent_at_ms is not None:
        outcome = RateLimited(started, error, latency_ms or 0, price)
    else:
        retry_in_s = retry_delay_s(started.attempt, state.settings.job_retry_base_s)
        if cost is None:
            cost = pricing.failed(spec, started.params, error)
        outcome = Failed(started, error, latency_ms, spec.max_attempts, retry_in_s, price, cost)
    transition = await batcher(state).record(outcome)
    if health.blames_model(error):  # one EVALSHA; never raises (health is advice)
        await health.record(
            state.redis, state.registry.health, started.model, ok=False, latency_ms=latency_ms
        )
    if isinstance(error, ProviderRateLimited) and sent_at_ms is not None:
        limiter = state.dispatch.limiter(started.account)
        new_rate = await limiter.rate_limited(
            sent_at_ms=sent_at_ms, retry_after_s=error.retry_after_s
        )
        if new_rate is not None:
            log.info("account_slowed_down", rate_per_s=round(new_rate, 3))
    await follow(state, started, transition)


async def record_cancelled(state: State, spec: ModelSpec, started: StartedJob) -> None:
    async with session_scope(state.sessionmaker) as session:
        transition = await service.record_cancelled(
            session,
            started,
            price=pricing.estimate(spec, started.params),
            public_url=state.settings.public_url,
        )
    await publish_noted(state, session)
    await follow(state, started, transition)


async def follow(state: State, started: StartedJob, transition: Transition) -> None:
    """After commit: put the job back in line if it goes on, deliver events."""
    queue = state.dispatch.queue(started.account)
    job_id, batch_id = str(started.job_id), str(started.batch_id)
    try:
        if transition.requeue_front:
            await queue.enqueue(batch_id, [job_id], started.priority, front=True)
        elif transition.retry_in_s is not None:
            await queue.enqueue_later(
                batch_id, job_id, started.priority, delay_s=transition.retry_in_s
            )
    except (RedisError, OSError) as exc:  # the reconciler puts it back in line later
        log.warning("requeue_deferred_to_reconciler", error=repr(exc))
    await settle(state, transition)


async def settle(state: State, transition: Transition) -> None:
    """After a transition committed: complete the batch if that was its last active job,
    then deliver the events. If this fails, the reconciler completes the batch later."""
    events = list(transition.event_ids)
    if transition.hopped is not None:
        await _put_hopped_in_line(state, transition.hopped, transition.priority)
    if transition.released and transition.batch_to_check is not None:
        await _put_in_line(state, transition.batch_to_check, transition)
    if transition.batch_to_check is not None:
        events += await batcher(state).complete_if_done(transition.batch_to_check)
    await enqueue_deliveries(state, events)


async def _put_in_line(state: State, batch_id: uuid.UUID, transition: Transition) -> None:
    """Chained jobs whose parent just succeeded. Best effort: the reconciler puts them in
    line if this fails."""
    by_account: dict[str, list[str]] = defaultdict(list)
    for job_id, model in transition.released:
        spec = state.registry.model(model)
        if spec is not None:
            by_account[spec.provider].append(str(job_id))
    try:
        for account, ids in by_account.items():
            await state.dispatch.queue(account).enqueue(str(batch_id), ids, transition.priority)
    except (RedisError, OSError) as exc:
        log.warning(
            "enqueue_deferred_to_reconciler", jobs=len(transition.released), error=repr(exc)
        )


async def _put_hopped_in_line(state: State, hopped: Hopped, priority: Priority) -> None:
    """A job that moved to its next model waits in that model's account's line (not the
    account it failed on). Best effort: the reconciler puts it in line if this fails; a
    grant on the wrong account hands it on (batching.Moved)."""
    spec = state.registry.model(hopped.model)
    # A model no longer configured: any account's claim fails the job, saying so.
    account = spec.provider if spec is not None else next(iter(state.registry.providers), None)
    if account is None:
        return
    log.info("job_moved_to_fallback", job_id=str(hopped.job_id), model=hopped.model)
    try:
        await state.dispatch.queue(account).enqueue(
            str(hopped.batch_id), [str(hopped.job_id)], priority
        )
    except (RedisError, OSError) as exc:
        log.warning("enqueue_deferred_to_reconciler", error=repr(exc))


async def _batch_cancelled(state: State, started: StartedJob) -> bool:
    async with state.sessionmaker() as session:
        batch = await session.get(Batch, started.batch_id)
        return batch is not None and batch.cancel_requested_at is not None


def ms_since(began: float) -> int:
    return int((time.perf_counter() - began) * 1000)


def _since_submitted_ms(started: StartedJob) -> int | None:
    """An asynchronous attempt's latency: from submission to the provider's answer."""
    if started.submitted_at is None:
        return None
    return int((utcnow() - started.submitted_at).total_seconds() * 1000)
