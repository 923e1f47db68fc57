"""Running one job against its provider, from a dispatch grant to a recorded outcome.

A grant (service.dispatch) carries a concurrency slot of the job's provider account.
The job's attempt is claimed in Postgres first; then, the account's rate token taken at
the last moment, the request goes out:
- a synchronous provider answers with the image: the slot is freed, the image stored;
- an asynchronous one answers with a handle (a prediction id), stored at once, and the
  worker lets go: a deferred poll, or the provider's callback, finishes the job later
  while the slot stays held by the job (renewed on every poll);
- a 429 slows the whole account down and sends the job back to the front of its line
  without using up an attempt; other errors back off or fail the job with a reason.

Anything sent to a provider is paid for, so a grant whose job turns out to need no
request (finished, cancelled, over budget) gives its slot back and takes no token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

import structlog
from redis.exceptions import RedisError

from service.callbacks.early import take_early_callback
from service.db import session_scope
from service.dispatch.lease import slot_kept
from service.dispatch.queue import Grant
from service.jobs import resubmission, service
from service.jobs.batching import Claimed, Moved, batcher
from service.jobs.polls import schedule_polls
from service.jobs.service import StartedJob, Transition
from service.jobs.transitions import Failed, Outcome, RateLimited, Succeeded
from service.kit.backoff import exponential_backoff
from service.kit.base import utcnow
from service.logging import get_logger
from service.models import Batch
from service.providers.base import (
    GeneratedImage,
    GenerationRequest,
    ImageProvider,
    ProviderError,
    ProviderRateLimited,
    ProviderRetryableError,
    RemoteJob,
)
from service.providers.registry import ModelSpec
from service.ratelimit import now_ms
from service.state import State
from service.storage.base import StorageError
from service.webhooks.tasks import enqueue_deliveries

log = get_logger(__name__)

RETRY_BASE_S = 2.0
RETRY_CAP_S = 120.0
# How long a job waiting at an asynchronous provider holds its slot without a poll or
# callback renewing it, before the slot counts as free again.
REMOTE_LEASE_S = 180.0
# After a claim failed (Postgres away), wait this long before the job goes back in line.
CLAIM_RETRY_S = 1.0
CALLBACK_PATHS = {"replicate": "/v1/callbacks/replicate"}


def retry_delay_s(attempt: int) -> float:
    return exponential_backoff(attempt, base_s=RETRY_BASE_S, cap_s=RETRY_CAP_S)


def generation_request(state: State, spec: ModelSpec, started: StartedJob) -> GenerationRequest:
    provider = state.registry.providers[spec.provider]
    callback_url = None
    base = state.settings.provider_callback_base
    path = CALLBACK_PATHS.get(provider.kind)
    if base is not None and path is not None and provider.capabilities.callbacks:
        callback_url = base + path
    return GenerationRequest(
        prompt=started.prompt,
        model_ref=spec.ref,
        width=started.params["width"],
        height=started.params["height"],
        format=started.params["format"],
        seed=started.params["seed"],
        job_id=str(started.job_id),
        callback_url=callback_url,
    )


async def run_granted(state: State, grant: Grant) -> None:
    with structlog.contextvars.bound_contextvars(
        job_id=grant.job_id, batch_id=grant.batch_id, account=grant.account
    ):
        try:
            await _run_granted(state, grant)
        except Exception:
            # The attempt stays open; the reconciler resumes the job once the slot's
            # lease runs out.
            log.exception("job_run_crashed")


async def _run_granted(state: State, grant: Grant) -> None:
    limiter = state.dispatch.limiter(grant.account)
    try:
        claimed = await _claim(state, grant)
    except Exception:
        # Nothing was sent (Postgres away?): the job goes back to the front of its line
        # at once rather than after its slot's lease.
        log.exception("job_claim_failed")
        await asyncio.sleep(CLAIM_RETRY_S)  # holds this process's capacity: no busy loop
        await limiter.refund(grant.job_id)
        await state.dispatch.queue(grant.account).enqueue(
            grant.batch_id, [grant.job_id], grant.priority, front=True
        )
        return
    if claimed is None:
        return
    started, spec = claimed
    provider = state.registry.providers[grant.account]
    request = generation_request(state, spec, started)
    lease_s = state.dispatch.queue(grant.account).lease_ms / 1000
    async with slot_kept(limiter, grant.job_id, lease_s):
        earlier = await resubmission.look_before_sending(state, provider, started, request)
    if isinstance(earlier, RemoteJob):
        await _submitted(state, spec, provider, started, earlier)
        return
    if earlier is not None:
        await limiter.refund(grant.job_id)
        await _record_error(state, spec, started, earlier, None)
        return
    if grant.paced:
        await limiter.wait_turn(grant.job_id)
    sent_at = now_ms()
    if grant.paced:
        # Told once the request is on its way (the task runs after submit's first await,
        # by which time the request is written), so the next turn counts from here.
        _background(limiter.sent(sent_at))
    began = time.perf_counter()
    try:
        outcome = await provider.submit(request)
    except ProviderError as error:
        await limiter.release(grant.job_id)
        await resubmission.remember_unconfirmed(state, provider, started, error)
        await _record_error(state, spec, started, error, _ms_since(began), sent_at_ms=sent_at)
        return
    except Exception as exc:  # a bug must not leave the job running
        log.exception("provider_submit_crashed")
        await limiter.release(grant.job_id)
        crash = ProviderRetryableError("internal_error", f"{type(exc).__name__}: {exc}")
        await _record_error(state, spec, started, crash, _ms_since(began), sent_at_ms=sent_at)
        return
    if isinstance(outcome, GeneratedImage):
        await limiter.release(grant.job_id)
        await _store_and_record(state, spec, started, outcome, _ms_since(began))
        return
    await _submitted(state, spec, provider, started, outcome)


async def _claim(state: State, grant: Grant) -> tuple[StartedJob, ModelSpec] | None:
    """Claim the granted job's attempt in Postgres (with the other jobs granted at the
    same time: service.jobs.batching). None: nothing is to be sent (the grant is given
    back)."""
    limiter = state.dispatch.limiter(grant.account)
    claimed = await batcher(state).claim(grant)
    if isinstance(claimed, Claimed):
        return claimed.started, claimed.spec
    await limiter.refund(grant.job_id)
    if isinstance(claimed, Moved):
        await state.dispatch.queue(claimed.account).enqueue(
            grant.batch_id, [grant.job_id], claimed.priority
        )
    elif isinstance(claimed, Transition):
        await settle(state, claimed)
    return None


async def _submitted(
    state: State, spec: ModelSpec, provider: ImageProvider, started: StartedJob, remote: RemoteJob
) -> None:
    """Store the handle before anything else: from here the job resumes by polling."""
    async with session_scope(state.sessionmaker) as session:
        owned = await service.record_submitted(session, started, remote.id)
    if not owned:
        log.warning("submitted_job_no_longer_owned", remote_id=remote.id)
        return
    started = service.with_remote(started, remote.id)
    early = await take_early_callback(state, started.account, remote.id)
    if early is not None:
        remote = provider.parse_remote(early)
    if remote.finished:
        await complete_remote(state, spec, started, remote)
        return
    limiter = state.dispatch.limiter(started.account)
    await limiter.renew(str(started.job_id), REMOTE_LEASE_S)
    await schedule_polls(state, provider, started)


async def complete_remote(
    state: State, spec: ModelSpec, started: StartedJob, remote: RemoteJob
) -> float | None:
    """A finished generation: free the slot, fetch the image (its URL expires), record.
    Returns seconds until a poll should try again (a failed download), else None."""
    limiter = state.dispatch.limiter(started.account)
    await limiter.release(str(started.job_id))
    provider = state.registry.providers[started.account]
    if remote.status == "succeeded":
        try:
            image = await provider.fetch_result(remote, generation_request(state, spec, started))
        except ProviderRetryableError as error:
            log.warning("fetch_result_failed", code=error.code, error=error.message)
            return 5.0
        except ProviderError as error:
            await _record_error(state, spec, started, error, _since_submitted_ms(started))
            return None
        await _store_and_record(state, spec, started, image, _since_submitted_ms(started))
        return None
    if remote.status == "canceled" and await _batch_cancelled(state, started):
        await _record_cancelled(state, spec, started)
        return None
    reason = remote.error or ProviderRetryableError(
        f"remote_{remote.status}", f"the provider reported {remote.status} with no reason"
    )
    await _record_error(state, spec, started, reason, _since_submitted_ms(started))
    return None


async def _store_and_record(
    state: State,
    spec: ModelSpec,
    started: StartedJob,
    image: GeneratedImage,
    latency_ms: int | None,
) -> None:
    try:
        stored = await state.storage.put(started.output_key, image.data, image.content_type)
    except StorageError as exc:  # the store is down, not the provider: retry the job
        log.warning("storing_output_failed", error=str(exc))
        error = ProviderRetryableError("storage_unavailable", str(exc))
        await _record_error(state, spec, started, error, latency_ms)
        return
    except Exception as exc:
        log.exception("storing_output_failed")
        error = ProviderRetryableError("storage_error", f"{type(exc).__name__}: {exc}")
        await _record_error(state, spec, started, error, latency_ms)
        return
    cost = image.cost_usd or spec.price_per_image
    outcome = Succeeded(started, image, stored, latency_ms, cost, spec.price_per_image)
    await settle(state, await batcher(state).record(outcome))


async def _record_error(
    state: State,
    spec: ModelSpec,
    started: StartedJob,
    error: ProviderError,
    latency_ms: int | None,
    *,
    sent_at_ms: int | None = None,
) -> None:
    log.warning("job_attempt_failed", code=error.code, error=error.message)
    outcome: Outcome
    if isinstance(error, ProviderRateLimited) and sent_at_ms is not None:
        outcome = RateLimited(started, error, latency_ms or 0, spec.price_per_image)
    else:
        retry_in_s = retry_delay_s(started.attempt)
        outcome = Failed(
            started, error, latency_ms, spec.max_attempts, retry_in_s, spec.price_per_image
        )
    transition = await batcher(state).record(outcome)
    if isinstance(error, ProviderRateLimited) and sent_at_ms is not None:
        limiter = state.dispatch.limiter(started.account)
        new_rate = await limiter.rate_limited(
            sent_at_ms=sent_at_ms, retry_after_s=error.retry_after_s
        )
        if new_rate is not None:
            log.info("account_slowed_down", rate_per_s=round(new_rate, 3))
    await _follow(state, started, transition)


async def _record_cancelled(state: State, spec: ModelSpec, started: StartedJob) -> None:
    async with session_scope(state.sessionmaker) as session:
        transition = await service.record_cancelled(
            session, started, price=spec.price_per_image, public_url=state.settings.public_url
        )
    await _follow(state, started, transition)


async def _follow(state: State, started: StartedJob, transition: Transition) -> None:
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
    if transition.batch_to_check is not None:
        events += await batcher(state).complete_if_done(transition.batch_to_check)
    await enqueue_deliveries(state, events)


async def _batch_cancelled(state: State, started: StartedJob) -> bool:
    async with state.sessionmaker() as session:
        batch = await session.get(Batch, started.batch_id)
        return batch is not None and batch.cancel_requested_at is not None


_BACKGROUND: set[asyncio.Task[None]] = set()


def _background(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` without waiting for it (kept referenced until done; errors logged)."""
    task = asyncio.create_task(work)
    _BACKGROUND.add(task)

    def done(finished: asyncio.Task[None]) -> None:
        _BACKGROUND.discard(finished)
        if not finished.cancelled() and finished.exception() is not None:
            log.warning("background_step_failed", error=repr(finished.exception()))

    task.add_done_callback(done)


def _ms_since(began: float) -> int:
    return int((time.perf_counter() - began) * 1000)


def _since_submitted_ms(started: StartedJob) -> int | None:
    """An asynchronous attempt's latency: from submission to the provider's answer."""
    if started.submitted_at is None:
        return None
    return int((utcnow() - started.submitted_at).total_seconds() * 1000)
