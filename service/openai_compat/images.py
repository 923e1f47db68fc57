"""images/generations and images/edits: OpenAI's request, one realtime Darkroom batch,
the wait, and OpenAI's answer.

The batch goes through `batches.service.submit_batch` like any other, so the registry,
routes, limits, fallbacks and budgets all apply. The wait holds no database connection:
each look at the jobs is a short session of its own, taken when the batch's live events
say something changed.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from service.batches.schemas import BatchCreate
from service.batches.service import SubmittedBatch, submit_batch
from service.events.hub import Listener, hub_for
from service.kit.errors import ApiError
from service.kit.json_guard import unstorable
from service.logging import get_logger
from service.models import FINAL_JOB_STATUSES, ApiKey, Job, JobStatus
from service.openai_compat import repository
from service.openai_compat.errors import NO_RETRY, OpenAIError, bad_request, from_validation
from service.openai_compat.outputs import IMAGE_URL_TTL_S, output_url
from service.openai_compat.params import ImageParams, job_fields
from service.openai_compat.schemas import ImageData, ImagesResponse
from service.state import State
from service.storage.base import StorageError

log = get_logger(__name__)
FIRST_LOOK_S = 0.05
LONGEST_PAUSE_S = 1.0


@dataclass(frozen=True)
class Inputs:
    """An edit's images, as upload ids."""

    references: list[str]
    mask: str | None = None


def edit_params(fields: dict[str, Any]) -> ImageParams:
    """An edit's form fields as ImageParams (a bad value: a 400 naming it). A form is not
    JSON, so the body guard has not seen it: what cannot be stored is refused here."""
    problems = unstorable(fields)
    if problems:
        raise bad_request(f"{problems[0].field}: {problems[0].message}", problems[0].field)
    try:
        return ImageParams.model_validate(fields)
    except ValidationError as exc:
        raise from_validation(exc.errors()) from None


def batch_body(
    jobs: list[dict[str, Any]], *, name: str, priority: str, metadata: dict[str, Any]
) -> BatchCreate:
    try:
        return BatchCreate.model_validate(
            {"name": name, "priority": priority, "metadata": metadata, "jobs": jobs}
        )
    except ValidationError as exc:
        raise from_validation(exc.errors()) from None


def check_edit_model(model: str, inputs: Inputs, state: State) -> None:
    """A model named directly must take reference images (and a mask, if one came); a
    route's candidates are checked by the submit."""
    spec = state.registry.model(model)
    if spec is None:
        return
    if "reference" not in spec.inputs:
        raise bad_request(
            f"The model `{model}` does not take reference images: choose one that does "
            "(GET /v1/models shows each model's inputs).",
            "model",
            "model_not_supported",
        )
    if inputs.mask is not None and "mask" not in spec.inputs:
        raise bad_request(
            f"The model `{model}` does not take a mask.", "model", "model_not_supported"
        )


async def submit_images(
    session: AsyncSession,
    state: State,
    *,
    api_key: ApiKey,
    params: ImageParams,
    inputs: Inputs | None,
    idempotency_key: str | None,
) -> SubmittedBatch:
    """The realtime batch of the request's images; the caller commits and enqueues."""
    model, jobs = job_fields(params, state.registry, state.settings)
    endpoint = "images/generations"
    if inputs is not None:
        endpoint = "images/edits"
        check_edit_model(model, inputs, state)
        for job in jobs:
            job["reference_images"] = inputs.references
            if inputs.mask is not None:
                job["mask"] = inputs.mask
    body = batch_body(
        jobs,
        name=f"openai {endpoint}",
        priority="realtime",
        metadata={"openai": {"endpoint": endpoint}},
    )
    try:
        return await submit_batch(
            session,
            api_key=api_key,
            body=body,
            idempotency_key=idempotency_key,
            registry=state.registry,
            settings=state.settings,
            redis=state.redis,
        )
    except ApiError as exc:
        if inputs is not None and exc.details and exc.details[0].field:
            field = exc.details[0].field
            if field.endswith((".reference_images", ".mask", ".task")):
                raise bad_request(exc.message, "model", "model_not_supported") from None
        raise


async def wait_for_jobs(state: State, batch_id: uuid.UUID, timeout_s: float) -> Sequence[Job]:
    """The batch's jobs once every one has finished; OpenAIError 504 naming the batch when
    they have not within `timeout_s` (the work goes on and is not lost).

    Postgres decides; the batch's live events (events.hub) say when to look again, so an
    image is answered as soon as it is stored. Redis may lose an event or be away: a look
    at least every LONGEST_PAUSE_S, growing from FIRST_LOOK_S, covers both."""
    deadline = time.monotonic() + timeout_s
    listener = await _listen(state, batch_id)
    pause = FIRST_LOOK_S
    try:
        while True:
            async with state.sessionmaker() as session:
                jobs = await repository.batch_jobs(session, batch_id)
            if jobs and all(job.status in FINAL_JOB_STATUSES for job in jobs):
                return jobs
            left = deadline - time.monotonic()
            if left <= 0:
                raise OpenAIError(
                    504,
                    f"The images were not ready within {timeout_s:g} s. They are still being "
                    f"made in Darkroom batch {batch_id}: GET /v1/batches/{batch_id}/jobs "
                    "returns them when done.",
                    type="timeout",
                    code="timeout",
                    headers=NO_RETRY,
                    extra={"batch_id": str(batch_id)},
                )
            if listener is not None and not listener.dropped:
                await listener.wait(min(LONGEST_PAUSE_S, left))
            else:  # no events (Redis away, or the stream ended): the growing pause alone
                await asyncio.sleep(min(pause, left))
                pause = min(pause * 1.5, LONGEST_PAUSE_S)
    finally:
        if listener is not None:
            hub_for(state).unsubscribe(listener)


async def _listen(state: State, batch_id: uuid.UUID) -> Listener | None:
    """A listener on the batch's events, taken before the first look so that nothing
    falls between; None when Redis cannot be read (the pauses still find the jobs)."""
    try:
        return await hub_for(state).subscribe(batch_id)
    except (RedisError, OSError) as exc:
        log.warning("openai_wait_without_events", batch_id=str(batch_id), error=repr(exc))
        return None


def job_failure(job: Job, batch_id: uuid.UUID) -> OpenAIError:
    """A failed (or cancelled) job as OpenAI's error."""
    code = job.error_code or job.status.value
    message = f"{job.error_message or code} (Darkroom batch {batch_id}, job {job.id})"
    extra = {"batch_id": str(batch_id)}
    if code == "content_policy":
        return OpenAIError(
            400,
            message,
            param="prompt",
            code="content_policy_violation",
            headers=NO_RETRY,
            extra=extra,
        )
    if code == "budget_exceeded":
        return OpenAIError(
            429,
            message,
            code="insufficient_quota",
            type="insufficient_quota",
            headers=NO_RETRY,
            extra=extra,
        )
    return OpenAIError(502, message, code=code, headers=NO_RETRY, extra=extra)


async def present(
    state: State, batch_id: uuid.UUID, jobs: Sequence[Job], response_format: str
) -> ImagesResponse:
    """The succeeded jobs' images; when none succeeded, the first job's error."""
    done = [job for job in jobs if job.status is JobStatus.succeeded and job.output_key]
    if not done:
        raise job_failure(jobs[0], batch_id)
    data = []
    for job in done:
        assert job.output_key is not None
        if response_format == "url":
            url = output_url(
                job,
                state.storage,
                public_url=state.settings.public_url,
                secret_key=state.settings.secret_key,
                ttl_s=IMAGE_URL_TTL_S,
            )
            data.append(ImageData(url=url))
            continue
        try:
            image = await state.storage.get(job.output_key)
        except (StorageError, FileNotFoundError) as exc:
            raise OpenAIError(
                503, "the output storage is unavailable; try again shortly", headers=NO_RETRY
            ) from exc
        data.append(ImageData(b64_json=base64.b64encode(image).decode()))
    first = done[0]
    fmt = (first.output_content_type or "image/png").removeprefix("image/")
    return ImagesResponse(
        created=int(time.time()),
        data=data,
        output_format=fmt,
        size=f"{first.output_width}x{first.output_height}",
        darkroom_batch_id=batch_id,
    )
