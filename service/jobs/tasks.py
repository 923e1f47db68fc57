"""arq tasks for jobs. Thin: open sessions, call the service, enqueue what follows.

arq runs a task at least once, so every step here is safe to repeat: a finished job
is skipped, an abandoned attempt is closed and counted, and an output is written to a
fixed key (a rerun overwrites it with the same bytes).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import structlog
from arq import Retry
from redis.exceptions import RedisError

from service.db import session_scope
from service.jobs import repository, service
from service.jobs.queue import enqueue_run_jobs, missing_from_queue
from service.kit.base import utcnow
from service.logging import get_logger
from service.providers.base import (
    GeneratedImage,
    GenerationRequest,
    ProviderError,
    ProviderPermanentError,
    ProviderRetryableError,
)
from service.providers.registry import ModelSpec
from service.state import State
from service.storage.base import StoredObject
from service.webhooks.tasks import enqueue_deliveries

log = get_logger(__name__)

RETRY_BASE_S = 2.0
RETRY_CAP_S = 120.0


def retry_delay_s(attempt: int) -> float:
    """Exponential backoff with full jitter."""
    return random.uniform(0, min(RETRY_CAP_S, RETRY_BASE_S * 2**attempt))


async def enqueue_jobs(state: State, job_ids: Sequence[uuid.UUID]) -> None:
    """Best effort, after commit: what is stored is accepted, and the reconciler enqueues
    whatever a Redis failure here leaves behind."""
    try:
        await enqueue_run_jobs(
            state.redis, [str(i) for i in job_ids], queue_name=state.settings.queue_name
        )
    except (RedisError, OSError) as exc:
        log.warning("enqueue_deferred_to_reconciler", jobs=len(job_ids), error=repr(exc))


async def run_job(ctx: dict[str, Any], job_id: str) -> None:
    state: State = ctx["state"]
    with structlog.contextvars.bound_contextvars(job_id=job_id):
        retry_in = await _run_job(state, uuid.UUID(job_id))
    if retry_in is not None:
        raise Retry(defer=timedelta(seconds=retry_in))


async def _run_job(state: State, job_id: uuid.UUID) -> float | None:
    """Run one attempt. Returns seconds to wait before the next, if one is due."""
    settings = state.settings
    async with session_scope(state.sessionmaker) as session:
        job = await repository.get_job(session, job_id)
        if job is None:
            return None
        structlog.contextvars.bind_contextvars(batch_id=str(job.batch_id))
        spec = state.registry.model(job.model)
        provider_name = spec.provider if spec else "unknown"
        started = await service.start_attempt(
            session,
            job_id,
            provider=provider_name,
            max_attempts=settings.job_max_attempts,
            public_url=settings.public_url,
        )
    if started is None:
        return None
    if isinstance(started, service.Transition):
        await enqueue_deliveries(state, started.event_ids)
        return None

    began = time.perf_counter()
    failure: ProviderError | None = None
    try:
        image, stored = await _generate_and_store(state, spec, started)
    except ProviderError as error:
        failure = error
    except Exception as exc:  # a bug or a full disk must not leave the job running
        log.exception("job_attempt_crashed")
        failure = ProviderRetryableError("internal_error", f"{type(exc).__name__}: {exc}")
    latency_ms = int((time.perf_counter() - began) * 1000)
    async with session_scope(state.sessionmaker) as session:
        if failure is None:
            transition = await service.record_success(
                session,
                started,
                image,
                stored,
                latency_ms=latency_ms,
                public_url=settings.public_url,
            )
        else:
            log.warning("job_attempt_failed", code=failure.code, error=failure.message)
            transition = await service.record_failure(
                session,
                started,
                failure,
                latency_ms=latency_ms,
                max_attempts=settings.job_max_attempts,
                retry_in_s=retry_delay_s(started.attempt),
                public_url=settings.public_url,
            )
    await enqueue_deliveries(state, transition.event_ids)
    return transition.retry_in_s


async def _generate_and_store(
    state: State, spec: ModelSpec | None, started: service.StartedJob
) -> tuple[GeneratedImage, StoredObject]:
    if spec is None:
        raise ProviderPermanentError("unknown_model", f"model {started.model!r} is not configured")
    image = await state.registry.provider_for(spec).generate(
        GenerationRequest(
            prompt=started.prompt,
            model_ref=spec.ref,
            width=started.params["width"],
            height=started.params["height"],
            format=started.params["format"],
            seed=started.params["seed"],
        )
    )
    stored = await state.storage.put(started.output_key, image.data, image.content_type)
    return image, stored


async def reconcile_jobs(state: State) -> int:
    """Re-enqueue active jobs that Redis has lost (a crash between commit and enqueue,
    or a Redis that forgot). Enqueueing is idempotent, so checking is all it costs."""
    settings = state.settings
    older_than = utcnow() - timedelta(seconds=settings.reconcile_stale_after_s)
    restored = 0
    after: uuid.UUID | None = None
    while True:
        async with state.sessionmaker() as session:
            ids = await repository.stale_active_job_ids(
                session, older_than=older_than, after_id=after, limit=2_000
            )
        if not ids:
            return restored
        after = ids[-1]
        missing = await missing_from_queue(state.redis, [str(i) for i in ids])
        if missing:
            restored += await enqueue_run_jobs(state.redis, missing, queue_name=settings.queue_name)
            log.warning("reconciler_restored_jobs", count=len(missing))
