"""Running one job against its provider, from a dispatch grant to a recorded outcome.

A grant (service.dispatch) carries a concurrency slot of the job's provider account.
The job's attempt is claimed in Postgres first; then, the account's rate token taken at
the last moment, the request goes out:
- a synchronous provider answers with the output: the slot is freed, the output stored;
- an asynchronous one answers with a handle (a prediction id), stored at once, and the
  worker lets go: a deferred poll, or the provider's callback, finishes the job later
  while the slot stays held by the job (renewed on every poll);
  what follows the request belongs to service.jobs.attempts;
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

from service.dispatch.lease import slot_kept
from service.dispatch.queue import Grant
from service.jobs import attempts, resubmission
from service.jobs.batching import Claimed, Moved, batcher
from service.jobs.requests import generation_request
from service.jobs.service import StartedJob, Transition
from service.logging import get_logger
from service.metrics import recorded as metrics
from service.providers.base import (
    AsyncProvider,
    GenerationRequest,
    Output,
    Provider,
    ProviderError,
    ProviderRetryableError,
    RemoteHandle,
    SyncProvider,
)
from service.providers.registry import ModelSpec
from service.ratelimit import now_ms
from service.state import State

log = get_logger(__name__)

# After a claim failed (Postgres away), wait this long before the job goes back in line.
CLAIM_RETRY_S = 1.0


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
    lease_s = state.dispatch.queue(grant.account).lease_ms / 1000
    async with slot_kept(limiter, grant.job_id, lease_s):
        prepared = await _prepare(state, spec, provider, started)
    if isinstance(prepared, RemoteHandle):
        assert isinstance(provider, AsyncProvider)
        await attempts.submitted(state, spec, provider, started, prepared)
        return
    if isinstance(prepared, ProviderError):
        await limiter.refund(grant.job_id)
        await attempts.record_error(state, spec, started, prepared, None)
        return
    request = prepared
    if grant.paced:
        with metrics.rate_token_wait(grant.account):
            await limiter.wait_turn(grant.job_id)
    sent_at = now_ms()
    if grant.paced:
        # Told once the request is on its way (the task runs after submit's first await,
        # by which time the request is written), so the next turn counts from here.
        _background(limiter.sent(sent_at))
    began = time.perf_counter()
    try:
        outcome = await _send(provider, request)
    except ProviderError as error:
        await limiter.release(grant.job_id)
        await resubmission.remember_unconfirmed(state, provider, started, error)
        took = attempts.ms_since(began)
        await attempts.record_error(state, spec, started, error, took, sent_at_ms=sent_at)
        return
    except Exception as exc:  # a bug must not leave the job running
        log.exception("provider_submit_crashed")
        await limiter.release(grant.job_id)
        crash = ProviderRetryableError("internal_error", f"{type(exc).__name__}: {exc}")
        # The request may have gone out before the crash: look before sending again.
        await resubmission.remember_unconfirmed(state, provider, started, crash)
        took = attempts.ms_since(began)
        await attempts.record_error(state, spec, started, crash, took, sent_at_ms=sent_at)
        return
    if isinstance(outcome, Output):
        await limiter.release(grant.job_id)
        await attempts.store_and_record(state, spec, started, outcome, attempts.ms_since(began))
        return
    assert isinstance(provider, AsyncProvider)
    await attempts.submitted(state, spec, provider, started, outcome)


async def _prepare(
    state: State, spec: ModelSpec, provider: Provider, started: StartedJob
) -> GenerationRequest | RemoteHandle | ProviderError:
    """Before anything is sent: the request (its input images read), or a generation an
    earlier attempt made to resume, or why nothing can be sent."""
    try:
        request = await generation_request(state, spec, started)
    except ProviderError as error:
        return error
    earlier = await resubmission.look_before_sending(state, provider, started, request)
    return request if earlier is None else earlier


async def _send(provider: Provider, request: GenerationRequest) -> Output | RemoteHandle:
    if isinstance(provider, SyncProvider):
        with metrics.provider_request(provider.name, "generate"):
            return await provider.generate(request)
    assert isinstance(provider, AsyncProvider)
    with metrics.provider_request(provider.name, "submit"):
        return await provider.submit(request)


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
        await attempts.settle(state, claimed)
    return None


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
