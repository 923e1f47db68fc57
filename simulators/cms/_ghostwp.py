"""Pieces the Ghost and WordPress simulators share: a clock, delivering a signed webhook to
a target, and reading a JWT."""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any

import httpx


def now_ms() -> int:
    return int(time.time() * 1000)


async def deliver(url: str, headers: dict[str, str], body: bytes, timeout: float = 10.0) -> Any:
    """POST a webhook as the CMS would; the target's answer as `(status, body)`, or
    `("error", reason)` when it could not be reached."""
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return "error", f"{type(exc).__name__}: {exc}"
    try:
        answer: Any = response.json()
    except ValueError:
        answer = response.text
    return response.status_code, answer


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes] | None:
    """(header, claims, signing input, signature) of a compact JWS; None if malformed."""
    pieces = token.split(".")
    if len(pieces) != 3:
        return None
    try:
        header = json.loads(_b64url(pieces[0]))
        claims = json.loads(_b64url(pieces[1]))
        signature = _b64url(pieces[2])
    except (ValueError, binascii.Error):
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None
    return header, claims, f"{pieces[0]}.{pieces[1]}".encode(), signature
