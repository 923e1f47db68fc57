"""/v1/jobs: one job, its attempts and its output file."""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from service.deps import ApiKeyDep, SessionDep, StateDep
from service.jobs import repository
from service.jobs.presenter import job_out
from service.jobs.schemas import AttemptOut, JobOut
from service.jobs.serve import serve_output
from service.kit.errors import ERROR_RESPONSES, ErrorResponse, NotFound, ServiceUnavailable
from service.logging import get_logger
from service.models import Job, JobStatus
from service.storage.base import StorageError

log = get_logger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=ERROR_RESPONSES)


@router.get("/{job_id}")
async def get_job(
    job_id: uuid.UUID, state: StateDep, session: SessionDep, api_key: ApiKeyDep
) -> JobOut:
    job = await _own_job(session, job_id, api_key.id)
    return job_out(job, state.settings.public_url, state.storage)


@router.get("/{job_id}/attempts")
async def list_job_attempts(
    job_id: uuid.UUID, session: SessionDep, api_key: ApiKeyDep
) -> list[AttemptOut]:
    """Every try at the job: provider, timing, outcome and error."""
    await _own_job(session, job_id, api_key.id)
    attempts = await repository.list_attempts(session, job_id)
    return [AttemptOut.model_validate(a, from_attributes=True) for a in attempts]


@router.get(
    "/{job_id}/output",
    response_class=FileResponse,
    responses={
        200: {
            "content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}},
            "description": "The generated file (local storage)",
        },
        307: {"description": "The file's storage URL (S3: public or presigned)"},
        503: {"model": ErrorResponse, "description": "The output storage is unavailable"},
    },
)
async def get_job_output(
    job_id: uuid.UUID, state: StateDep, session: SessionDep, api_key: ApiKeyDep
) -> Response:
    job = await _own_job(session, job_id, api_key.id)
    if job.status is not JobStatus.succeeded or job.output_key is None:
        raise NotFound(f"job {job_id} has no output (status {job.status.value})", code="no_output")
    try:
        return await serve_output(state.storage, job, job.output_key)
    except StorageError as exc:
        log.warning("output_storage_unavailable", error=str(exc))
        raise ServiceUnavailable(
            "the output storage is unavailable; try again shortly", code="storage_unavailable"
        ) from exc


async def _own_job(session: SessionDep, job_id: uuid.UUID, api_key_id: uuid.UUID) -> Job:
    job = await repository.get_job_for_key(session, job_id, api_key_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job
