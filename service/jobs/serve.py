"""A job's output as an HTTP response, for every route that serves it (the API's
GET /v1/jobs/{id}/output and the UI's, each with its own authorisation)."""

from __future__ import annotations

from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from service.kit.errors import NotFound
from service.models import Job
from service.storage.base import Storage
from service.storage.local import LocalStorage


async def serve_output(storage: Storage, job: Job, key: str) -> Response:
    """A redirect to the storage's URL when it has one; else the file, from the API.
    A 404 (NotFound) if the storage lost it; StorageError if the storage is away."""
    url = storage.url(key)
    if url is not None:
        return RedirectResponse(url, status_code=307)
    missing = NotFound(f"output of job {job.id} is missing from storage", code="output_missing")
    if isinstance(storage, LocalStorage):
        path = storage.path_for(key)
        if not path.is_file():
            raise missing
        return FileResponse(
            path,
            media_type=job.output_content_type,
            filename=path.name,
            content_disposition_type="inline",
        )
    if not await storage.exists(key):
        raise missing
    return StreamingResponse(storage.open(key), media_type=job.output_content_type)
