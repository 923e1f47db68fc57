"""Opaque cursors: base64url of a small JSON list, so clients cannot depend on their shape."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import Query

from service.kit.errors import ErrorDetail, InvalidInput

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# The query parameters of every listing.
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
Cursor = Annotated[str | None, Query(max_length=200)]
Row = TypeVar("Row")


class Created(Protocol):
    """A row listed newest (or oldest) first by (created_at, id)."""

    @property
    def created_at(self) -> datetime: ...
    @property
    def id(self) -> uuid.UUID | str: ...


def keyset_page(
    rows: Sequence[Row], limit: int, cursor_after: Callable[[Row], str]
) -> tuple[Sequence[Row], str | None]:
    """A listing's page from the `limit + 1` rows its query fetched (the extra one says
    whether there is more), and the cursor after its last row, or None at the end."""
    page = rows[:limit]
    return page, cursor_after(page[-1]) if len(rows) > limit else None


def after_created(row: Created) -> str:
    """The cursor after a row listed by (created_at, id)."""
    return encode_time_cursor(row.created_at, row.id)


def encode_cursor(values: list[Any]) -> str:
    raw = json.dumps(values, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, length: int) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeError) as exc:
        raise bad_cursor() from exc
    if not isinstance(values, list) or len(values) != length:
        raise bad_cursor()
    return values


def encode_time_cursor(at: datetime, row_id: uuid.UUID | str) -> str:
    """The cursor after a row of a listing ordered by (time, id)."""
    return encode_cursor([at.isoformat(), str(row_id)])


def decode_time_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    """(time, id) from encode_time_cursor's cursor; None for the first page."""
    if cursor is None:
        return None
    at, row_id = decode_cursor(cursor, 2)
    if not isinstance(at, str) or not isinstance(row_id, str):
        raise bad_cursor()
    try:
        # In UTC: asyncpg overflows on a year-1 or year-9999 time with an offset.
        return datetime.fromisoformat(at).astimezone(UTC), row_id
    except (ValueError, OverflowError) as exc:
        raise bad_cursor() from exc


def decode_time_uuid_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    """As decode_time_cursor, for rows whose id is a UUID."""
    after = decode_time_cursor(cursor)
    if after is None:
        return None
    try:
        return after[0], uuid.UUID(after[1])
    except ValueError as exc:
        raise bad_cursor() from exc


def bad_cursor() -> InvalidInput:
    return InvalidInput(
        "cursor: not a cursor this API returned",
        details=[ErrorDetail(field="cursor", message="not a cursor this API returned")],
    )
