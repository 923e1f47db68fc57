"""Deferred polls of generations that run at an asynchronous provider: one arq job per
job, id `poll:<job id>`, re-deferred by each poll until the generation finishes."""

from __future__ import annotations

import uuid
from datetime import timedelta

from redis.exceptions import RedisError

from service.logging import get_logger
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
