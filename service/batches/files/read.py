"""A request's batch file, read into a FileBatchCreate: the raw body (text/csv,
application/x-ndjson, application/yaml) or a multipart form with the file in `file`
and batch-level settings beside it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Literal

import anyio
import anyio.from_thread
import anyio.to_thread
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request

from service.batches.files.csv_file import parse_csv
from service.batches.files.jsonl_file import parse_jsonl
from service.batches.files.rows import FileRows, build_batch, invalid, locate
from service.batches.files.source import text_lines
from service.batches.files.yaml_file import parse_yaml
from service.batches.schemas import FileBatchCreate
from service.kit.collector import collection_paused
from service.kit.errors import ApiError, ErrorDetail
from service.kit.json_guard import unstorable

FileFormat = Literal["csv", "jsonl", "yaml"]
CONTENT_TYPES: dict[str, FileFormat] = {
    "text/csv": "csv",
    "application/csv": "csv",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/x-jsonlines": "jsonl",
    "application/yaml": "yaml",
    "application/x-yaml": "yaml",
    "text/yaml": "yaml",
    "text/x-yaml": "yaml",
}
EXTENSIONS: dict[str, FileFormat] = {
    "csv": "csv",
    "jsonl": "jsonl",
    "ndjson": "jsonl",
    "yaml": "yaml",
    "yml": "yaml",
}
FORM = "multipart/form-data"
# Batch-level settings a form may carry beside the file; `batch` is a JSON object of any.
FORM_FIELDS = ("name", "priority", "budget_usd", "callback_url", "template")
# `format` names the file's format when neither its part's type nor its name does.
_CHUNK = 64 * 1024


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def takes(content_type: str | None) -> bool:
    """Whether a request with this Content-Type is a batch file (not a JSON body)."""
    kind = media_type(content_type)
    return kind in CONTENT_TYPES or kind == FORM


async def read_batch_file(request: Request) -> tuple[FileBatchCreate, FileRows]:
    """The batch in the request's file; a 422 names the line and column of each problem."""
    kind = media_type(request.headers.get("content-type"))
    try:
        if kind == FORM:
            rows = await _read_form(request)
        else:
            rows = await _parse_stream(CONTENT_TYPES[kind], request.stream())
    except ClientDisconnect:
        raise ApiError("the client went away before the file was read") from None
    with collection_paused():  # the body is in: what is left is CPU-bound
        return build_batch(rows), rows


def relocate(error: ApiError, rows: FileRows) -> ApiError:
    return locate(error, rows.places)


async def _parse_stream(fmt: FileFormat, stream: AsyncIterator[bytes]) -> FileRows:
    async def next_chunk() -> bytes | None:
        try:
            return await stream.__anext__()
        except StopAsyncIteration:
            return None

    def chunks() -> Iterator[bytes]:
        while (chunk := anyio.from_thread.run(next_chunk)) is not None:
            yield chunk

    return await anyio.to_thread.run_sync(_parser(fmt), chunks)


def _parser(fmt: FileFormat) -> Callable[[Callable[[], Iterator[bytes]]], FileRows]:
    def parse(chunks: Callable[[], Iterator[bytes]]) -> FileRows:
        lines = text_lines(chunks())
        try:
            if fmt == "csv":
                return parse_csv(lines)
            if fmt == "jsonl":
                return parse_jsonl(lines)
            return parse_yaml("".join(lines))
        except RecursionError:
            detail = ErrorDetail(field="body", message="nested too deep to read")
            raise invalid([detail]) from None

    return parse


async def _read_form(request: Request) -> FileRows:
    form = await request.form(max_files=1, max_fields=len(FORM_FIELDS) + 3)
    try:
        problems = [
            ErrorDetail(field=f'form field "{key}"', message="not a field this form takes")
            for key in form
            if key not in (*FORM_FIELDS, "batch", "file", "format")
        ]
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            problems.append(
                ErrorDetail(field='form field "file"', message="the batch file is missing")
            )
            raise invalid(problems)
        named = form.get("format")
        fmt = _format_of(upload) if not isinstance(named, str) else EXTENSIONS.get(named.lower())
        if fmt is None:
            problems.append(
                ErrorDetail(
                    field='form field "file"',
                    message="cannot tell the file's format: name it .csv, .jsonl or .yaml, "
                    "give its part a Content-Type (text/csv, application/x-ndjson, "
                    "application/yaml), or send a `format` field (csv, jsonl or yaml)",
                )
            )
        settings = _form_settings(form, problems)
        if problems:
            raise invalid(problems)
        assert fmt is not None
        file = upload.file

        def chunks() -> Iterator[bytes]:
            while chunk := file.read(_CHUNK):
                yield chunk

        rows = await anyio.to_thread.run_sync(_parser(fmt), chunks)
    finally:
        await form.close()
    rows.batch.update(settings)
    return rows


def _format_of(upload: UploadFile) -> FileFormat | None:
    by_type = CONTENT_TYPES.get(media_type(upload.content_type))
    if by_type is not None:
        return by_type
    name = (upload.filename or "").lower()
    return EXTENSIONS.get(name.rsplit(".", 1)[-1]) if "." in name else None


def _form_settings(form: Any, problems: list[ErrorDetail]) -> dict[str, Any]:
    """Batch-level settings from the form: `batch` (a JSON object), then the fields."""
    settings: dict[str, Any] = {}
    raw = form.get("batch")
    if isinstance(raw, str):
        value = _json(raw, "batch", problems)
        if isinstance(value, dict):
            settings.update(value)
        elif value is not None:
            problems.append(ErrorDetail(field='form field "batch"', message="not a JSON object"))
    for key in FORM_FIELDS:
        value = form.get(key)
        if not isinstance(value, str):
            continue
        if "\x00" in value:
            problems.append(ErrorDetail(field=f'form field "{key}"', message="contains NUL"))
            continue
        if key == "template" and value.lstrip().startswith("{"):
            settings[key] = _json(value, key, problems)
        elif key == "budget_usd":
            settings[key] = value.strip()
        else:
            settings[key] = value
    return settings


def _json(raw: str, key: str, problems: list[ErrorDetail]) -> Any:
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        message = f"malformed JSON: {exc}" if isinstance(exc, ValueError) else "nested too deep"
        problems.append(ErrorDetail(field=f'form field "{key}"', message=message))
        return None
    bad = unstorable(value)
    for detail in bad:
        where = f'form field "{key}"' + (f", {detail.field}" if detail.field != "body" else "")
        problems.append(ErrorDetail(field=where, message=detail.message))
    return None if bad else value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")
