"""/openai/v1/files and /openai/v1/batches: OpenAI's Batch API for images, on Darkroom
batches. Thin handlers; the work is in batch_service.py."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from service.batches import repository as batches_repository
from service.batches.actions import cancel_and_notify, enqueue_submitted
from service.deps import ApiKeyDep, SessionDep, StateDep
from service.kit.errors import Conflict
from service.kit.text import Text, _NamesAreText
from service.models import FINAL_BATCH_STATUSES
from service.openai_compat import batch_service as svc
from service.openai_compat import repository
from service.openai_compat.errors import (
    NO_RETRY,
    OPENAI_ERROR_RESPONSES,
    OpenAIError,
    OpenAIErrorResponse,
    OpenAIRoute,
)
from service.openai_compat.schemas import BatchList, BatchObject, FileObject

FILES_PATH = "/openai/v1/files"

router = APIRouter(
    prefix="/openai/v1",
    tags=["openai"],
    route_class=OpenAIRoute,
    responses=OPENAI_ERROR_RESPONSES,
)

FileId = Annotated[Text, Field(max_length=100)]
BatchId = Annotated[Text, Field(max_length=100)]
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": OpenAIErrorResponse, "description": "The batch already finished"}
}
# OpenAI's metadata: string values; keys and values text Postgres can keep.
Metadata = Annotated[
    dict[Text, Annotated[Text, Field(max_length=512)]], _NamesAreText(), Field(max_length=16)
]


@router.post("/files")
async def create_file(
    file: Annotated[UploadFile, File(description="JSONL: one request per line")],
    purpose: Annotated[Literal["batch"], Form(description="Only batch")],
    state: StateDep,
    session: SessionDep,
    api_key: ApiKeyDep,
) -> FileObject:
    """A batch's input file (purpose=batch). Its lines are checked by POST /batches."""
    data = await file.read(svc.MAX_FILE_BYTES + 1)
    if len(data) > svc.MAX_FILE_BYTES:
        raise OpenAIError(413, f"A file is at most {svc.MAX_FILE_BYTES} bytes.", param="file")
    stored = await svc.store_file(
        session, state, api_key_id=api_key.id, data=data, filename=file.filename, purpose=purpose
    )
    await session.commit()
    return svc.file_out(stored)


@router.get("/files/{file_id}")
async def get_file(file_id: FileId, session: SessionDep, api_key: ApiKeyDep) -> FileObject:
    return svc.file_out(await svc.own_file(session, file_id, api_key))


@router.get(
    "/files/{file_id}/content",
    response_class=Response,
    responses={200: {"content": {"application/jsonl": {}}}},
)
async def get_file_content(
    file_id: FileId, state: StateDep, session: SessionDep, api_key: ApiKeyDep
) -> Response:
    """The file's bytes: an input as sent, or a batch's output or error JSONL."""
    file = await svc.own_file(session, file_id, api_key)
    await session.commit()
    data = await svc.read_file(state, file)
    return Response(data, media_type="application/jsonl")


class BatchCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: FileId
    endpoint: Literal["/v1/images/generations"]
    completion_window: Literal["24h"]
    metadata: Metadata | None = Field(
        default=None, description="Up to 16 pairs, each value up to 512 characters"
    )


@router.post("/batches")
async def create_batch(
    body: BatchCreateRequest, state: StateDep, session: SessionDep, api_key: ApiKeyDep
) -> BatchObject:
    """One Darkroom batch (bulk) for the whole file: every line checked first, a bad
    one is a 400 naming it, and nothing is created."""
    created = await svc.create_batch(
        session,
        state,
        api_key=api_key,
        input_file_id=body.input_file_id,
        endpoint=body.endpoint,
        completion_window=body.completion_window,
        metadata=body.metadata,
    )
    await session.commit()
    await enqueue_submitted(state, created.submitted)
    return await svc.present(session, created.openai_batch, created.submitted.batch)


async def _look(
    session: SessionDep, state: StateDep, value: str, api_key: ApiKeyDep
) -> BatchObject:
    """The batch, its files written first if it has just finished."""
    uid = svc.parse_id(value, svc.BATCH_PREFIX, "batch")
    found = await repository.get_batch(session, uid, api_key.id)
    if found is None:
        raise OpenAIError(404, f"No such batch: '{value[:100]}'", code="not_found")
    row, batch = found
    if row.finalized_at is None and batch.status in FINAL_BATCH_STATUSES:
        locked = await repository.get_batch(session, uid, api_key.id, lock=True)
        assert locked is not None
        row, batch = locked
        await svc.finalize(session, state, row, batch)
        await session.commit()
    return await svc.present(session, row, batch)


@router.get("/batches/{openai_batch_id}")
async def get_batch(
    openai_batch_id: BatchId, state: StateDep, session: SessionDep, api_key: ApiKeyDep
) -> BatchObject:
    return await _look(session, state, openai_batch_id, api_key)


@router.get("/batches")
async def list_batches(
    state: StateDep,
    session: SessionDep,
    api_key: ApiKeyDep,
    after: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> BatchList:
    """The key's batches, newest first; `after` is the last id of the previous page."""
    before = None
    if after is not None:
        uid = svc.parse_id(after, svc.BATCH_PREFIX, "batch")
        found = await repository.get_batch(session, uid, api_key.id)
        if found is None:
            raise OpenAIError(404, f"No such batch: '{after[:100]}'", param="after")
        before = (found[0].created_at, found[0].id)
    rows = await repository.list_batches(session, api_key.id, limit=limit + 1, before=before)
    page = rows[:limit]
    data = [await svc.present(session, row, batch) for row, batch in page]
    return BatchList(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=len(rows) > limit,
    )


@router.post("/batches/{openai_batch_id}/cancel", responses=_CONFLICT)
async def cancel(
    openai_batch_id: BatchId, state: StateDep, session: SessionDep, api_key: ApiKeyDep
) -> BatchObject:
    """Queued images are cancelled at once, running ones at their provider; the batch
    is `cancelling` until nothing runs, then `cancelled`."""
    uid = svc.parse_id(openai_batch_id, svc.BATCH_PREFIX, "batch")
    found = await repository.get_batch(session, uid, api_key.id)
    if found is None:
        raise OpenAIError(404, f"No such batch: '{openai_batch_id[:100]}'", code="not_found")
    batch = found[1]
    locked = await batches_repository.get_batch(session, batch.id, api_key.id, for_update=True)
    assert locked is not None
    try:
        await cancel_and_notify(state, session, locked)
    except Conflict:
        status = locked.status.value  # read before the rollback expires the row
        await session.rollback()
        raise OpenAIError(
            409,
            f"Cannot cancel a batch that already finished ({status}).",
            code="batch_finished",
            headers=NO_RETRY,
        ) from None
    return await _look(session, state, openai_batch_id, api_key)
