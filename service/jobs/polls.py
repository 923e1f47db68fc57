"""Deferred polls of generations that run at an asynchronous provider: one arq job per
job, id `poll:<job id>`, re-deferred by each poll until the generation finishes.

Polls are timed from the latencies observed for the job's model
(service.dispatch.latency), whether or not a callback was requested: a callback only
makes a completion earlier. Only callbacks seen to arrive for the account let the first
poll wait for the tail (service.dispatch.callbacks).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

from redis.exceptions import RedisError

from service.dispatch import latency
from service.jobs.service import StartedJob
from service.kit.base import utcnow
from service.logging import get_logger
from service.providers.base import CompletionWatch, Provider, RemoteHandle
from service.state import State

log = get_logger(__name__)

POLL_JOB = "poll_job"
# A first poll due within this many seconds is made on time by a timer in the process
# that submitted the generation: arq looks for due deferred jobs only every
# worker_poll_delay_s, and for a one-second generation those tens of ms are a few
# percent of its slot. arq's poll stays enqueued one step later, the durable safety net
# (this process may die; a second poll of a finished job is a no-op).
ON_TIME_WITHIN_S = 10.0


def poll_job_id(job_id: uuid.UUID | str) -> str:
    return f"poll:{job_id}"


async def enqueue_poll(state: State, job_id: uuid.UUID, *, delay_s: float) -> None:
    try:
        await state.redis.enqueue_job(
            POLL_JOB,
            str(job_id),
            _job_id=poll_job_id(job_id),
            _defer_by=timedelta(seconds=delay_s),
            _queue_name=state.settings.queue_name,
        )
    except (RedisError, OSError) as exc:
        log.warning("poll_deferred_to_reconciler", job_id=str(job_id), error=repr(exc))


async def schedule_polls(state: State, provider: Provider, started: StartedJob) -> None:
    """After a generation was submitted: its first poll, made by this process when it
    is soon, and arq's deferred poll. A provider that can say when it is done (ComfyUI's
    websocket) makes the poll at once when it does."""
    if isinstance(provider, CompletionWatch) and started.remote_id:
        provider.watch(started.handle, lambda: _poll_now(state, started.job_id))
    delay_s = await first_poll_delay_s(state, provider, started.model)
    if delay_s > ON_TIME_WITHIN_S:
        await enqueue_poll(state, started.job_id, delay_s=delay_s)
        return
    profile = await _profile(state, started.account, started.model)
    backup_s = delay_s + latency.next_poll_delay_s(profile, waited_s=delay_s, polls=1)
    await enqueue_poll(state, started.job_id, delay_s=backup_s)
    due_in = max(0.0, delay_s - waited_s(started))  # counted from the submission
    loop = asyncio.get_running_loop()
    _DUE[started.job_id] = loop.call_later(due_in, _poll_on_time, state, started.job_id)


# On-time polls of this process: due (timers) and running (tasks).
_DUE: dict[uuid.UUID, asyncio.TimerHandle] = {}
_ON_TIME: set[asyncio.Task[None]] = set()


def _poll_now(state: State, job_id: uuid.UUID) -> None:
    """The provider said the generation finished: poll now rather than when due."""
    due = _DUE.pop(job_id, None)
    if due is not None:
        due.cancel()
    _poll_on_time(state, job_id)


def _poll_on_time(state: State, job_id: uuid.UUID) -> None:
    from service.jobs.tasks import poll_once  # tasks builds on this module

    _DUE.pop(job_id, None)
    task = asyncio.ensure_future(poll_once(state, job_id))
    _ON_TIME.add(task)
    task.add_done_callback(_ON_TIME.discard)


async def stop_on_time_polls(*, grace_s: float) -> None:
    """Before a worker closes its connections: on-time polls not yet due are dropped (arq's
    deferred poll, enqueued beside each, makes them), running ones get `grace_s` to finish."""
    for handle in _DUE.values():
        handle.cancel()
    _DUE.clear()
    if not _ON_TIME:
        return
    _, pending = await asyncio.wait(set(_ON_TIME), timeout=grace_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


# Longest a poll may hold its job's poll lock (arq's own poll timeout).
POLL_LOCK_MS = 60_000


@contextlib.asynccontextmanager
async def polling(state: State, job_id: uuid.UUID) -> AsyncIterator[bool]:
    """One poll of a job at a time: the on-time poll and arq's may overlap when the
    first is slow (a download under load), and two would fetch the same image. Yields
    False when another poll holds the job; True (best effort) when Redis is away."""
    key = f"dr:poll:{job_id}"
    try:
        mine = bool(await state.redis.set(key, "1", nx=True, px=POLL_LOCK_MS))
    except (RedisError, OSError):
        yield True
        return
    try:
        yield mine
    finally:
        if mine:
            with contextlib.suppress(RedisError, OSError):
                await state.redis.delete(key)


def callbacks_requested(state: State, provider: Provider) -> bool:
    return state.settings.provider_callback_base is not None and provider.capabilities.callbacks


async def first_poll_delay_s(state: State, provider: Provider, model: str) -> float:
    try:
        profile = await state.dispatch.latencies.profile(provider.name, model)
        arriving = callbacks_requested(state, provider) and (
            await state.dispatch.callbacks.arriving(provider.name)
        )
    except (RedisError, OSError) as exc:
        log.warning("latency_profile_unavailable", error=repr(exc))
        profile, arriving = None, False
    return latency.first_poll_delay_s(profile, callbacks_arriving=arriving)


async def next_poll_delay_s(state: State, started: StartedJob, *, polls: int) -> float:
    profile = await _profile(state, started.account, started.model)
    return latency.next_poll_delay_s(profile, waited_s=waited_s(started), polls=polls)


async def _profile(state: State, account: str, model: str) -> latency.Profile | None:
    try:
        return await state.dispatch.latencies.profile(account, model)
    except (RedisError, OSError) as exc:
        log.warning("latency_profile_unavailable", error=repr(exc))
        return None


def waited_s(started: StartedJob) -> float:
    """Seconds since the generation was submitted."""
    return (utcnow() - (started.submitted_at or utcnow())).total_seconds()


async def observe_completion(
    state: State,
    provider: Provider,
    started: StartedJob,
    remote: RemoteHandle,
    *,
    took_s: float,
    polled: bool,
) -> None:
    """A generation finished: keep how long it took (a success only: failures often
    come early and say nothing about a generation's time), and how its completion came.
    `took_s`: from submission to when Darkroom learnt of the completion. It stands in
    for the provider's own timing only when a callback brought the news: a poll learns
    late by its own delay, and polls timed from such figures would drift ever later.
    Best effort: scheduling falls back to its defaults without it."""
    try:
        if remote.status == "succeeded":
            seconds = latency.remote_duration_s(remote.data)
            if seconds is None and not polled:
                seconds = took_s
            if seconds is not None:
                await state.dispatch.latencies.observe(started.account, started.model, seconds)
        if polled and callbacks_requested(state, provider):
            await state.dispatch.callbacks.completed_by_poll(started.account)
    except (RedisError, OSError) as exc:
        log.warning("completion_not_observed", error=repr(exc))
