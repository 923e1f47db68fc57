"""Manifests and archives of a batch, streamed.

Jobs are read a page at a time (keyset on the job index), each page in a session of its
own that is closed before its rows are sent: a slow reader of a 50,000-job manifest holds
neither all the jobs in memory nor a database connection. The totals are read once, before
the rows; a batch still running may move on while its rows go out.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.batches.repository import totals_for
from service.db import session_scope
from service.logging import get_logger
from service.manifests import repository
from service.manifests.rows import (
    MANIFEST_NAME,
    FileNames,
    ManifestRow,
    csv_header,
    csv_line,
    job_row,
    variable_names,
)
from service.manifests.zipstream import ZipStream
from service.models import Batch, JobStatus
from service.storage.base import Storage, StorageError

log = get_logger(__name__)

PAGE = 1000
FLUSH_CHARS = 64 * 1024


@dataclass(frozen=True)
class Source:
    """What streaming a batch's manifest needs once the request's own session is gone."""

    batch_id: uuid.UUID
    head: dict[str, Any]
    variables: list[str]
    sessionmaker: async_sessionmaker[AsyncSession]
    storage: Storage
    public_url: str


async def open_source(
    session: AsyncSession,
    batch: Batch,
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    storage: Storage,
    public_url: str,
) -> Source:
    totals = (await totals_for(session, [batch.id]))[batch.id]
    variables = variable_names(batch.templates, await repository.variable_names(session, batch.id))
    end = batch.completed_at or datetime.now(UTC)
    head = {
        "batch_id": str(batch.id),
        "name": batch.name,
        "status": batch.status.value,
        "created_at": batch.created_at.isoformat(),
        "completed_at": batch.completed_at.isoformat() if batch.completed_at else None,
        "totals": {
            "jobs": batch.job_count,
            "by_status": {status.value: totals.counts.get(status.value, 0) for status in JobStatus},
            "cost_usd": float(totals.cost_usd),
            "cost_by_model": {m: float(usd) for m, usd in sorted(totals.by_model.items())},
            "wall_time_s": round(max((end - batch.created_at).total_seconds(), 0.0), 3),
        },
        "variables": variables,
    }
    return Source(batch.id, head, variables, sessionmaker, storage, public_url)


async def rows(source: Source) -> AsyncIterator[ManifestRow]:
    """Every job's row, in index order, a page per session."""
    names = FileNames()
    after = -1
    while True:
        async with session_scope(source.sessionmaker) as session:
            jobs = await repository.jobs_page(
                session, source.batch_id, after_index=after, limit=PAGE
            )
            facts = await repository.attempt_facts(session, [job.id for job in jobs])
            page = [
                job_row(
                    job,
                    facts.get(job.id),
                    names,
                    public_url=source.public_url,
                    storage=source.storage,
                )
                for job in jobs
            ]
        for row in page:
            yield row
        if len(jobs) < PAGE:
            return
        after = jobs[-1].position


async def json_manifest(
    source: Source, *, in_archive: set[int] | None = None
) -> AsyncIterator[bytes]:
    """The JSON manifest: the head, then `"jobs": [...]`, written as the rows come. With
    `in_archive`, a row's `file` is kept only if that file went into the archive."""
    head = json.dumps(source.head, ensure_ascii=False)
    parts = [head[:-1], ', "jobs": [']
    size, first = 0, True
    async for row in rows(source):
        if in_archive is not None and row.values["index"] not in in_archive:
            row.values["file"] = None
        text = json.dumps(row.as_json(), ensure_ascii=False)
        parts.append(text if first else ",\n" + text)
        first = False
        size += len(text)
        if size >= FLUSH_CHARS:
            yield "".join(parts).encode()
            parts, size = [], 0
    parts.append("]}\n")
    yield "".join(parts).encode()


async def csv_manifest(source: Source) -> AsyncIterator[bytes]:
    """The CSV manifest: one header, then one record per job (no totals: the JSON has them)."""
    header = csv_header(source.variables)
    parts = [csv_line(None, source.variables, header)]
    size = 0
    async for row in rows(source):
        line = csv_line(row, source.variables, header)
        parts.append(line)
        size += len(line)
        if size >= FLUSH_CHARS:
            yield "".join(parts).encode()
            parts, size = [], 0
    yield "".join(parts).encode()


async def archive(source: Source) -> AsyncIterator[bytes]:
    """A zip of the outputs under their manifest names, then manifest.json. An output that
    storage no longer has is left out (its row's `file` is null); a storage that fails
    mid-way ends the stream unfinished, so the client sees an incomplete zip, never a
    complete-looking one."""
    zip_stream = ZipStream()
    in_archive: set[int] = set()
    async for row in rows(source):
        name, key = row.file, row.output_key
        if name is None or key is None:
            continue
        try:
            chunks = await _opened(source.storage, key)
        except StorageError:
            log.warning("archive_storage_unavailable", batch_id=str(source.batch_id), key=key)
            raise
        if chunks is None:
            log.warning("archive_output_missing", batch_id=str(source.batch_id), key=key)
            continue
        finished = row.values["finished_at"]
        when = datetime.fromisoformat(finished) if finished else datetime.now(UTC)
        async for data in zip_stream.add(name, chunks, when=when, size=row.values["bytes"]):
            yield data
        in_archive.add(row.values["index"])
    manifest = json_manifest(source, in_archive=in_archive)
    now = datetime.now(UTC)
    async for data in zip_stream.add(MANIFEST_NAME, manifest, when=now, compress=True):
        yield data
    yield zip_stream.finish()


async def _opened(storage: Storage, key: str) -> AsyncIterator[bytes] | None:
    """The object's chunks, or None if it is missing: found on the first read, before the
    entry's header is written."""
    try:
        chunks = storage.open(key)
        first = await anext(chunks, b"")
    except (FileNotFoundError, ValueError):
        return None
    return _chain(first, chunks)


async def _chain(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk
