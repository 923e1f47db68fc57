"""A job as the API (and its webhooks) show it."""

from __future__ import annotations

from service.jobs.schemas import JobError, JobOut, JobOutput
from service.models import Job, JobStatus


def job_out(job: Job, public_url: str) -> JobOut:
    output = None
    if job.status is JobStatus.succeeded and job.output_key is not None:
        output = JobOutput(
            url=f"{public_url.rstrip('/')}/v1/jobs/{job.id}/output",
            content_type=job.output_content_type or "application/octet-stream",
            width=job.output_width or 0,
            height=job.output_height or 0,
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
        provider=job.provider,
        params=job.params,
        metadata=job.metadata_,
        attempts=job.attempts,
        error=error,
        output=output,
        cost_usd=float(job.cost_usd),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )
