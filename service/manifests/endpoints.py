"""GET /v1/batches/{id}/manifest and /archive: thin; the streams are in service.py."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from service.batches import repository as batches
from service.deps import ApiKeyDep, SessionDep, StateDep
from service.kit.errors import ERROR_RESPONSES, ErrorResponse, NotFound, ServiceUnavailable
from service.logging import get_logger
from service.manifests import service
from service.manifests.schemas import Manifest
from service.models import Batch
from service.storage.base import StorageError

log = get_logger(__name__)
router = APIRouter(prefix="/v1/batches", tags=["batches"], responses=ERROR_RESPONSES)

ManifestFormat = Literal["json", "csv"]


@router.get(
    "/{batch_id}/manifest",
    response_class=StreamingResponse,
    responses={
        200: {
            "model": Manifest,
            "description": "One row per job, plus totals (JSON only)",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    },
)
async def get_manifest(
    batch_id: uuid.UUID,
    state: StateDep,
    session: SessionDep,
    api_key: ApiKeyDep,
    format: Annotated[
        ManifestFormat | None,
        Query(description="json (the default) or csv; wins over the Accept header"),
    ] = None,
    accept: Annotated[str | None, Header(max_length=1000)] = None,
) -> StreamingResponse:
    """The batch's manifest: each job's row (its variables, output name, model, route,
    status, output URL, sha256, size, cost, generation time, error) and the totals.
    Streamed, a page of jobs at a time. CSV with `Accept: text/csv` or `?format=csv`."""
    batch = await _own_batch(session, batch_id, api_key.id)
    source = await _source(session, batch, state)
    wants_csv = format == "csv" or (format is None and "text/csv" in (accept or "").lower())
    if wants_csv:
        return StreamingResponse(
            await _started(service.csv_manifest(source)),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'inline; filename="{batch.id}-manifest.csv"'},
        )
    return StreamingResponse(
        await _started(service.json_manifest(source)), media_type="application/json"
    )


@router.get(
    "/{batch_id}/archive",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "A zip of the outputs, named as the manifest's `file`, and "
            "manifest.json",
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
        },
        503: {"model": ErrorResponse, "description": "The output storage is unavailable"},
    },
)
async def get_archive(
    batch_id: uuid.UUID, state: StateDep, session: SessionDep, api_key: ApiKeyDep
) -> StreamingResponse:
    """The batch's outputs and its manifest as one zip, streamed as it is written (never
    whole in memory or on disk). An output missing from storage is left out, and its row's
    `file` is null in the zip's manifest.json."""
    batch = await _own_batch(session, batch_id, api_key.id)
    source = await _source(session, batch, state)
    return StreamingResponse(
        await _started(service.archive(source)),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{batch.id}.zip"'},
    )


async def _source(session: SessionDep, batch: Batch, state: StateDep) -> service.Source:
    source = await service.open_source(
        session,
        batch,
        sessionmaker=state.sessionmaker,
        storage=state.storage,
        public_url=state.settings.public_url,
    )
    # Only reads so far: end the transaction so that the request's connection goes back
    # to the pool now, not when the last byte of a long download has gone out.
    await session.commit()
    return source


async def _started(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The stream, once its first bytes are made: a storage that is down when the
    download starts is a 503 with the error body, not a 200 cut short."""
    try:
        first = await anext(body, b"")
    except StorageError as exc:
        log.warning("manifest_storage_unavailable", error=str(exc))
        raise ServiceUnavailable(
            "the output storage is unavailable; try again shortly", code="storage_unavailable"
        ) from exc
    return _chain(first, body)


async def _chain(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


async def _own_batch(session: SessionDep, batch_id: uuid.UUID, api_key_id: uuid.UUID) -> Batch:
    batch = await batches.get_batch(session, batch_id, api_key_id)
    if batch is None:
        raise NotFound(f"no batch {batch_id}")
    return batch
