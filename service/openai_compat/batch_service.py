"""The OpenAI Batch API on Darkroom: files, batches and their results.

An OpenAI batch is one Darkroom batch (bulk priority) made through `submit_batch`, every
line checked before anything is created. Its status is read from the Darkroom batch. When
that batch has finished, the first look at it writes the output file (the lines with
images: their URLs, not base64, which would make a file of gigabytes) and the error file
(the lines without), under the row lock so that exactly one look writes them.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from service.batches.schemas import BatchCreate
from service.batches.service import SubmittedBatch, submit_batch
from service.kit.base import new_id, utcnow
from service.kit.errors import ApiError, field_path
from service.models import (
    FINAL_BATCH_STATUSES,
    FINAL_JOB_STATUSES,
    ApiKey,
    Batch,
    BatchStatus,
    Job,
    JobStatus,
    OpenAIBatch,
    OpenAIFile,
)
from service.openai_compat import repository
from service.openai_compat.batch_lines import ReadLines, line_error, read_lines
from service.openai_compat.errors import OpenAIError, bad_request, from_validation, openai_param
from service.openai_compat.images import job_failure
from service.openai_compat.outputs import BATCH_URL_TTL_S, output_url
from service.openai_compat.schemas import BatchObject, FileObject, RequestCounts
from service.state import State
from service.storage.base import StorageError

FILE_PREFIX = "file-"
BATCH_PREFIX = "batch_"
MAX_FILE_BYTES = 100 * 1024 * 1024
COMPLETION_WINDOW = "24h"


def file_id(file: OpenAIFile | uuid.UUID) -> str:
    value = file.id if isinstance(file, OpenAIFile) else file
    return f"{FILE_PREFIX}{value.hex}"


def batch_id(batch: OpenAIBatch) -> str:
    return f"{BATCH_PREFIX}{batch.id.hex}"


def parse_id(value: str, prefix: str, what: str) -> uuid.UUID:
    """The uuid in "file-<hex>" / "batch_<hex>"; a 404 for anything else."""
    try:
        if value.startswith(prefix):
            return uuid.UUID(hex=value[len(prefix) :])
    except ValueError:
        pass
    raise OpenAIError(404, f"No such {what}: '{value[:100]}'", code="not_found")


def storage_unavailable(exc: Exception) -> OpenAIError:
    return OpenAIError(503, "the storage is unavailable; try again shortly", code="unavailable")


def _epoch(value: Any) -> int | None:
    return int(value.timestamp()) if value is not None else None


def file_out(file: OpenAIFile) -> FileObject:
    return FileObject(
        id=file_id(file),
        bytes=file.bytes,
        created_at=int(file.created_at.timestamp()),
        filename=file.filename,
        purpose=file.purpose,
    )


def _safe_filename(name: str | None) -> str:
    cleaned = "".join(ch for ch in (name or "") if ch.isprintable())[:255]
    return cleaned or "batch.jsonl"


async def store_file(
    session: AsyncSession,
    state: State,
    *,
    api_key_id: uuid.UUID,
    data: bytes,
    filename: str | None,
    purpose: str,
) -> OpenAIFile:
    """The bytes in storage first, then the row (a row always has its bytes)."""
    file = OpenAIFile(
        id=new_id(),
        api_key_id=api_key_id,
        purpose=purpose,
        filename=_safe_filename(filename),
        bytes=len(data),
        created_at=utcnow(),
    )
    file.storage_key = f"openai/files/{file.id.hex}.jsonl"
    try:
        await state.storage.put(file.storage_key, data, "application/jsonl")
    except StorageError as exc:
        raise storage_unavailable(exc) from exc
    session.add(file)
    await session.flush()
    return file


async def own_file(session: AsyncSession, value: str, api_key: ApiKey) -> OpenAIFile:
    file = await repository.get_file(session, parse_id(value, FILE_PREFIX, "file"), api_key.id)
    if file is None:
        raise OpenAIError(404, f"No such file: '{value[:100]}'", code="not_found")
    return file


async def read_file(state: State, file: OpenAIFile) -> bytes:
    try:
        return await state.storage.get(file.storage_key)
    except (StorageError, FileNotFoundError) as exc:
        raise storage_unavailable(exc) from exc


@dataclass(frozen=True)
class CreatedBatch:
    openai_batch: OpenAIBatch
    submitted: SubmittedBatch


def _at_line(read: ReadLines, field: str | None, message: str) -> OpenAIError | None:
    """A problem with jobs[i] as a 400 naming i's input line (None: not a job's)."""
    if not field or not field.startswith("jobs["):
        return None
    index = int(field[5 : field.index("]")])
    if index >= len(read.line_of_job):
        return None
    return line_error(read.line_of_job[index], message, f"body.{openai_param(field)}")


def _batch_body(read: ReadLines, input_file_id: str, endpoint: str) -> BatchCreate:
    try:
        return BatchCreate.model_validate(
            {
                "name": f"openai batch {input_file_id}"[:200],
                "priority": "bulk",
                "metadata": {"openai": {"endpoint": endpoint, "input_file_id": input_file_id}},
                "jobs": read.jobs,
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        error = _at_line(read, field_path(first["loc"]), str(first["msg"]))
        raise error or from_validation(exc.errors()) from None


async def create_batch(
    session: AsyncSession,
    state: State,
    *,
    api_key: ApiKey,
    input_file_id: str,
    endpoint: str,
    completion_window: str,
    metadata: dict[str, str] | None,
) -> CreatedBatch:
    """Check every line, then one Darkroom batch and its OpenAI row; the caller commits
    and enqueues."""
    if endpoint != "/v1/images/generations":
        raise bad_request(
            f"Invalid value: '{endpoint[:100]}'. Supported: '/v1/images/generations'.",
            "endpoint",
            "invalid_value",
        )
    if completion_window != COMPLETION_WINDOW:
        raise bad_request(
            "Invalid value for 'completion_window': only '24h'.",
            "completion_window",
            "invalid_value",
        )
    file = await own_file(session, input_file_id, api_key)
    if file.purpose != "batch":
        raise bad_request(
            f"File {input_file_id} has purpose '{file.purpose}', not 'batch'.", "input_file_id"
        )
    read = read_lines(await read_file(state, file), endpoint, state.registry, state.settings)
    body = _batch_body(read, input_file_id, endpoint)
    try:
        submitted = await submit_batch(
            session,
            api_key=api_key,
            body=body,
            idempotency_key=None,
            registry=state.registry,
            settings=state.settings,
            redis=state.redis,
        )
    except ApiError as exc:
        first = exc.details[0] if exc.details else None
        error = _at_line(read, first.field, first.message) if first else None
        if exc.status_code != 422 or error is None:
            raise
        raise error from None
    row = OpenAIBatch(
        id=new_id(),
        api_key_id=api_key.id,
        batch_id=submitted.batch.id,
        input_file_id=file.id,
        endpoint=endpoint,
        completion_window=completion_window,
        metadata_=metadata,
        lines=read.lines,
        created_at=utcnow(),
    )
    session.add(row)
    await session.flush()
    return CreatedBatch(row, submitted)


def _line_jobs(row: OpenAIBatch, items: Sequence[Any]) -> list[tuple[str, list[Any]]]:
    """Each line's custom_id and its share of `items` (jobs or statuses, in index order)."""
    out = []
    start = 0
    for custom_id, count in row.lines:
        out.append((custom_id, list(items[start : start + count])))
        start += count
    return out


def _counts(row: OpenAIBatch, statuses: Sequence[JobStatus]) -> RequestCounts:
    """A line is completed when it finished with at least one image, failed when it
    finished with none."""
    completed = failed = 0
    for _, line in _line_jobs(row, statuses):
        if all(status in FINAL_JOB_STATUSES for status in line):
            if JobStatus.succeeded in line:
                completed += 1
            else:
                failed += 1
    return RequestCounts(total=len(row.lines), completed=completed, failed=failed)


def _result_line(
    state: State, row: OpenAIBatch, custom_id: str, jobs: list[Job], created: int
) -> tuple[bool, dict[str, Any]]:
    """(succeeded, the line of OpenAI's batch output)."""
    request_id = str(jobs[0].id)
    line_id = f"batch_req_{jobs[0].id.hex}"
    done = [job for job in jobs if job.status is JobStatus.succeeded and job.output_key]
    if done:
        data = [
            {
                "url": output_url(
                    job,
                    state.storage,
                    public_url=state.settings.public_url,
                    secret_key=state.settings.secret_key,
                    ttl_s=BATCH_URL_TTL_S,
                )
            }
            for job in done
        ]
        response = {
            "status_code": 200,
            "request_id": request_id,
            "body": {"created": created, "data": data},
        }
        return True, {"id": line_id, "custom_id": custom_id, "response": response, "error": None}
    first = jobs[0]
    if first.status is JobStatus.cancelled:
        error = {"code": "batch_cancelled", "message": "The batch was cancelled."}
        return False, {"id": line_id, "custom_id": custom_id, "response": None, "error": error}
    failure = job_failure(first, row.batch_id)
    body = {
        "error": {
            "message": failure.message,
            "type": failure.type,
            "param": failure.param,
            "code": failure.code,
        }
    }
    response = {"status_code": failure.status_code, "request_id": request_id, "body": body}
    return False, {"id": line_id, "custom_id": custom_id, "response": response, "error": None}


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


async def finalize(session: AsyncSession, state: State, row: OpenAIBatch, batch: Batch) -> None:
    """Write the output and error files of a finished batch, once. The caller holds the
    row lock (repository.get_batch(lock=True))."""
    if row.finalized_at is not None or batch.status not in FINAL_BATCH_STATUSES:
        return
    jobs = await repository.batch_jobs(session, batch.id)
    created = int(time.time())
    outputs: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for custom_id, line_jobs in _line_jobs(row, jobs):
        ok, line = _result_line(state, row, custom_id, line_jobs, created)
        (outputs if ok else errors).append(line)
    row.output_file_id = await _result_file(session, state, row, outputs, "output")
    row.error_file_id = await _result_file(session, state, row, errors, "error")
    row.completed_count = len(outputs)
    row.failed_count = len(errors)
    row.finalized_at = utcnow()
    await session.flush()


async def _result_file(
    session: AsyncSession, state: State, row: OpenAIBatch, lines: list[dict[str, Any]], kind: str
) -> uuid.UUID | None:
    """A batch's `output` or `error` JSONL file, stored; its id, or None when no line is
    one (OpenAI leaves the file id unset then)."""
    if not lines:
        return None
    stored = await store_file(
        session,
        state,
        api_key_id=row.api_key_id,
        data=_jsonl(lines),
        filename=f"{batch_id(row)}_{kind}.jsonl",
        purpose="batch_output",
    )
    return stored.id


async def present(session: AsyncSession, row: OpenAIBatch, batch: Batch) -> BatchObject:
    cancelling = batch.cancel_requested_at is not None
    final = batch.status in FINAL_BATCH_STATUSES
    if row.finalized_at is not None:
        status = "cancelled" if batch.status is BatchStatus.cancelled else "completed"
        counts = RequestCounts(
            total=len(row.lines), completed=row.completed_count, failed=row.failed_count
        )
    else:
        status = "finalizing" if final else ("cancelling" if cancelling else "in_progress")
        counts = _counts(row, await repository.job_statuses(session, batch.id))
    done_at = _epoch(batch.completed_at)
    return BatchObject(
        id=batch_id(row),
        endpoint=row.endpoint,
        input_file_id=file_id(row.input_file_id),
        completion_window=row.completion_window,
        status=status,
        output_file_id=file_id(row.output_file_id) if row.output_file_id else None,
        error_file_id=file_id(row.error_file_id) if row.error_file_id else None,
        created_at=int(row.created_at.timestamp()),
        in_progress_at=int(row.created_at.timestamp()),
        expires_at=int((row.created_at + timedelta(hours=24)).timestamp()),
        finalizing_at=done_at if final else None,
        completed_at=done_at if status == "completed" else None,
        cancelling_at=_epoch(batch.cancel_requested_at),
        cancelled_at=done_at if status == "cancelled" else None,
        request_counts=counts,
        metadata=row.metadata_,
        darkroom_batch_id=batch.id,
    )
