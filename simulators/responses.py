"""Small response helpers both providers share."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

# What a 502 from the CDN in front of either provider looks like: HTML, not the API's JSON.
BAD_GATEWAY_HTML = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


def dump(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def json_response(
    payload: Any,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    media_type: str = "application/json",
) -> Response:
    return Response(dump(payload), status_code=status, headers=headers, media_type=media_type)


def bad_gateway() -> Response:
    return Response(BAD_GATEWAY_HTML, status_code=502, media_type="text/html")


def whole_seconds(wait_s: float) -> int:
    """A Retry-After value: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(wait_s))


def bearer_token(request: Request, *schemes: str) -> str | None:
    """The credential of an `Authorization: <scheme> <token>` header, if the scheme is one
    of `schemes` (default: Bearer)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() in {s.lower() for s in (schemes or ("Bearer",))} and token:
        return token.strip()
    return None


async def json_body(request: Request) -> Any:
    """The parsed body, or None when it is not JSON."""
    try:
        return json.loads(await request.body())
    except ValueError:
        return None
