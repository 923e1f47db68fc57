"""/v1/batches: thin handlers; the work is in service.py."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import Field

from service.batches import repository, service
from service.batches.actions import cancel_and_notify, enqueue_submitted, retry_and_enqueue
from service.batches.files.read import read_batch_file, relocate
from service.batches.files.route import FileRoute, openapi_request_body
from service.batches.schemas import (
    MAX_FILE_ROWS,
    BatchCreate,
    BatchCreated,
    BatchOut,
    BatchPage,
    DryRunOut,
)
from service.deps import ApiKeyDep, SessionDep, StateDep
from service.jobs.presenter import job_out
from service.jobs.schemas import JobPage, JobStatusName
from service.kit.collector import collection_paused
from service.kit.errors import ERROR_RESPONSES, ApiError, ErrorResponse, NotFound
from service.kit.pagination import (
    DEFAULT_LIMIT,
    Cursor,
    Limit,
    after_created,
    bad_cursor,
    decode_cursor,
    decode_time_uuid_cursor,
    encode_cursor,
    keyset_page,
)
from service.kit.text import VisibleText
from service.logging import get_logger
from service.models import Batch, JobStatus

log = get_logger(__name__)
BATCHES_PATH = "/v1/batches"
router = APIRouter(prefix=BATCHES_PATH, tags=["batches"], responses=ERROR_RESPONSES)
# POST /v1/batches with a CSV, JSONL or YAML file; included before `router` (app.py).
files_router = APIRouter(prefix=BATCHES_PATH, tags=["batches"], route_class=FileRoute)

# An empty key would be stored like any other, and every later request without a real
# key would replay that batch.
IdempotencyKey = Annotated[
    Annotated[VisibleText, Field(min_length=1, max_length=255)] | None,
    Header(
        alias="Idempotency-Key",
        description="Repeat a submission safely: the same key and body return the same batch. "
        "1 to 255 characters, not all of them blank.",
    ),
]


DryRun = Annotated[
    bool,
    Query(
        description="Validate, route, map and estimate the jobs without creating anything "
        "(the Idempotency-Key is not looked at); a bad batch gets the same 422"
    ),
]
SUBMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": BatchCreated, "description": "Accepted: the batch, and its estimate"},
    200: {
        "model": BatchOut | DryRunOut,
        "description": "Idempotent replay: the batch already exists (BatchOut); or, with "
        "dry_run=true, what a submit would do (DryRunOut)",
    },
    409: {"model": ErrorResponse, "description": "Idempotency-Key reused with another body"},
    413: {
        "model": ErrorResponse,
        "description": f"Body over DARKROOM_MAX_REQUEST_BYTES, or a file of more than "
        f"{MAX_FILE_ROWS:,} rows",
    },
}


@router.post(
    "",
    status_code=202,
    response_model=None,
    responses=SUBMIT_RESPONSES,
    openapi_extra=openapi_request_body(),
)
async def submit_batch(
    body: BatchCreate,
    response: Response,
    state: StateDep,
    session: SessionDep,
    api_key: ApiKeyDep,
    idempotency_key: IdempotencyKey = None,
    dry_run: DryRun = False,
) -> BatchCreated | BatchOut | DryRunOut:
    """Accept up to 10,000 jobs as JSON, or up to 100,000 rows as a file (CSV, JSONL or
    YAML: the raw body with its Content-Type, or a multipart form's `file`; a 422 names
    the line and column). They are durable when this returns."""
    with collection_paused():  # kit.collector: bulk work on a body already read
        return await _accept(body, response, state, session, api_key, idempotency_key, dry_run)


@files_router.post("", status_code=202, response_model=None, include_in_schema=False)
async def submit_batch_file(
    request: Request,
    response: Response,
    state: StateDep,
    session: SessionDep,
    api_key: ApiKeyDep,
    idempotency_key: IdempotencyKey = None,
    dry_run: DryRun = False,
) -> BatchCreated | BatchOut | DryRunOut:
    """The same submit, from a file (documented on the JSON route)."""
    body, rows = await read_batch_file(request)
    try:
        with collection_paused():
            return await _accept(body, response, state, session, api_key, idempotency_key, dry_run)
    except ApiError as exc:
        raise relocate(exc, rows) from None


async def _accept(
    body: BatchCreate,
    response: Response,
    state: StateDep,
    session: SessionDep,
    api_key: ApiKeyDep,
    idempotency_key: str | None,
    dry_run: bool,
) -> BatchCreated | BatchOut | DryRunOut:
    if dry_run:
        response.status_code = 200
        return await service.dry_run(
            session,
            api_key=api_key,
            body=body,
            registry=state.registry,
            settings=state.settings,
            redis=state.redis,
        )
    submitted = await service.submit_batch(
        session,
        api_key=api_key,
        body=body,
        idempotency_key=idempotency_key,
        registry=state.registry,
        settings=state.settings,
        redis=state.redis,
    )
    await session.commit()
    batch = submitted.batch
    response.headers["Location"] = f"/v1/batches/{batch.id}"
    if not submitted.created:
        response.status_code = 200
        return await service.present_batch(session, batch)
    await enqueue_submitted(state, submitted)
    return submitted.created_out()


@router.get("")
async def list_batches(
    session: SessionDep,
    api_key: ApiKeyDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> BatchPage:
    """The key's batches, newest first."""
    after = decode_time_uuid_cursor(cursor)
    batches = await repository.list_batches(session, api_key.id, limit=limit + 1, after=after)
    page, next_cursor = keyset_page(batches, limit, after_created)
    totals = await repository.totals_for(session, [b.id for b in page])
    return BatchPage(
        items=[service.batch_out(b, totals[b.id]) for b in page], next_cursor=next_cursor
    )


@router.get("/{batch_id}")
async def get_batch(batch_id: uuid.UUID, session: SessionDep, api_key: ApiKeyDep) -> BatchOut:
    batch = await _own_batch(session, batch_id, api_key.id)
    return await service.present_batch(session, batch)


@router.get("/{batch_id}/jobs")
async def list_batch_jobs(
    batch_id: uuid.UUID,
    state: StateDep,
    session: SessionDep,
    api_key: ApiKeyDep,
    status: JobStatusName | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Limit = DEFAULT_LIMIT,
) -> JobPage:
    """The batch's jobs in submission order."""
    await _own_batch(session, batch_id, api_key.id)
    after_index = None
    if cursor is not None:
        (after_index,) = decode_cursor(cursor, 1)
        # bool is an int to Python, not to SQL.
        if type(after_index) is not int or not 0 <= after_index < MAX_FILE_ROWS:
            raise bad_cursor()
    jobs = await repository.list_jobs(
        session,
        batch_id,
        status=JobStatus(status) if status else None,
        limit=limit + 1,
        after_index=after_index,
    )
    page, next_cursor = keyset_page(jobs, limit, lambda job: encode_cursor([job.index]))
    return JobPage(
        items=[job_out(job, state.settings.public_url, state.storage) for job in page],
        next_cursor=next_cursor,
    )


@router.post(
    "/{batch_id}/cancel",
    responses={409: {"model": ErrorResponse, "description": "The batch already finished"}},
)
async def cancel_batch(
    batch_id: uuid.UUID, state: StateDep, session: SessionDep, api_key: ApiKeyDep
) -> BatchOut:
    """Queued jobs are cancelled at once, generations running at a provider are cancelled
    there; jobs in the middle of a synchronous request finish. Then the batch ends
    cancelled."""
    batch = await _own_batch(session, batch_id, api_key.id, for_update=True)
    await cancel_and_notify(state, session, batch)
    return await service.present_batch(session, batch)


@router.post(
    "/{batch_id}/retry",
    status_code=202,
    responses={
        409: {"model": ErrorResponse, "description": "No failed jobs, or the batch was cancelled"}
    },
)
async def retry_batch(
    batch_id: uuid.UUID, state: StateDep, session: SessionDep, api_key: ApiKeyDep
) -> BatchOut:
    """Put the batch's failed jobs back in line, each with a fresh set of attempts."""
    batch = await _own_batch(session, batch_id, api_key.id, for_update=True)
    await retry_and_enqueue(state, session, batch)
    return await service.present_batch(session, batch)


async def _own_batch(
    session: SessionDep, batch_id: uuid.UUID, api_key_id: uuid.UUID, *, for_update: bool = False
) -> Batch:
    batch = await repository.get_batch(session, batch_id, api_key_id, for_update=for_update)
    if batch is None:
        raise NotFound(f"no batch {batch_id}")
    return batch
