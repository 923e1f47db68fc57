"""Opaque cursors: base64url of a small JSON list, so clients cannot depend on their shape."""

from __future__ import annotations

import base64
import json
from typing import Any

from service.kit.errors import ErrorDetail, InvalidInput

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


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


def bad_cursor() -> InvalidInput:
    return InvalidInput(
        "cursor: not a cursor this API returned",
        details=[ErrorDetail(field="cursor", message="not a cursor this API returned")],
    )
