"""A job as the API (and its webhooks) show it."""

from __future__ import annotations

import uuid

from service.jobs.schemas import JobError, JobOut, JobOutput
from service.logging import get_logger
from service.models import Job, JobStatus
from service.storage.base import Storage, StorageError

log = get_logger(__name__)


def job_out(job: Job, public_url: str, storage: Storage | None = None) -> JobOut:
    """`storage` given: output.url is the storage's own URL when it has one (S3: the public
    base URL + key, or a presigned GET). Otherwise it is the API's output route, which
    serves the file (local storage) or redirects to the storage's URL."""
    output = None
    if job.status is JobStatus.succeeded and job.output_key is not None:
        output = JobOutput(
            url=output_url(job.id, job.output_key, public_url, storage),
            media="video" if (job.output_content_type or "").startswith("video/") else "image",
            content_type=job.output_content_type or "application/octet-stream",
            width=job.output_width or 0,
            height=job.output_height or 0,
            duration_s=job.output_duration_s,
            frames=job.output_frames,
            bytes=job.output_bytes or 0,
            sha256=job.output_sha256 or "",
        )
    error = None
    if job.error_code is not None and job.status is not JobStatus.succeeded:
        error = JobError(code=job.error_code, message=job.error_message or "")
    return JobOut(
        id=job.id,
        batch_id=job.batch_id,
        index=job.index,
        status=job.status.value,
        prompt=job.prompt,
        model=job.model,
        route=job.route,
        provider=job.provider,
        params=job.params,
        metadata=job.metadata_,
        attempts=job.attempts,
        error=error,
        output=output,
        queue_position=job.queue_position if job.status is JobStatus.running else None,
        parent_job_id=job.parent_id,
        cost_usd=float(job.cost_usd),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def output_url(job_id: uuid.UUID, key: str | None, public_url: str, storage: Storage | None) -> str:
    """Where a job's output is fetched: the storage's own URL, or the API's route."""
    url = _storage_url(storage, key) if storage is not None and key is not None else None
    return url or f"{public_url.rstrip('/')}/v1/jobs/{job_id}/output"


def _storage_url(storage: Storage, key: str) -> str | None:
    """None when the storage has no URL, or cannot sign one now (its credentials failed to
    load): the API's own route then stands in, and answers 503 until the storage is back."""
    try:
        return storage.url(key)
    except StorageError as exc:
        log.warning("storage_url_failed", error=str(exc))
        return None
