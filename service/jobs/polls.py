"""Deferred polls of generations that run at an asynchronous provider: one arq job per
job, id `poll:<job id>`, re-deferred by each poll until the generation finishes.

Polls are timed from the latencies observed for the job's model
(service.dispatch.latency), whether or not a callback was requested: a callback only
makes a completion earlier. Only callbacks seen to arrive for the account let the first
poll wait for the tail (service.dispatch.callbacks).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from redis.exceptions import RedisError

from service.dispatch import latency
from service.jobs.service import StartedJob
from service.kit.base import utcnow
from service.logging import get_logger
from service.providers.base import ImageProvider, RemoteJob
from service.state import State

log = get_logger(__name__)

POLL_JOB = "poll_job"


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


def callbacks_requested(state: State, provider: ImageProvider) -> bool:
    return state.settings.provider_callback_base is not None and provider.capabilities.callbacks


async def first_poll_delay_s(state: State, provider: ImageProvider, model: str) -> float:
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
    try:
        profile = await state.dispatch.latencies.profile(started.account, started.model)
    except (RedisError, OSError) as exc:
        log.warning("latency_profile_unavailable", error=repr(exc))
        profile = None
    return latency.next_poll_delay_s(profile, waited_s=waited_s(started), polls=polls)


def waited_s(started: StartedJob) -> float:
    """Seconds since the generation was submitted."""
    return (utcnow() - (started.submitted_at or utcnow())).total_seconds()


async def observe_completion(
    state: State,
    provider: ImageProvider,
    started: StartedJob,
    remote: RemoteJob,
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
            seconds = latency.remote_duration_s(remote.payload)
            if seconds is None and not polled:
                seconds = took_s
            if seconds is not None:
                await state.dispatch.latencies.observe(started.account, started.model, seconds)
        if polled and callbacks_requested(state, provider):
            await state.dispatch.callbacks.completed_by_poll(started.account)
    except (RedisError, OSError) as exc:
        log.warning("completion_not_observed", error=repr(exc))
