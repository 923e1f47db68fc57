"""Pieces the Ghost and WordPress simulators share: a clock, delivering a signed webhook to
a target, reading a JWT, and parsing a multipart form (python-multipart is not a
dependency, and a simulator reads small bodies whole)."""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import json
import time
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from simulators.cms.base import CmsSim

Form = dict[str, tuple[str | None, str, bytes]]


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


def parse_form(content_type: str, body: bytes) -> Form:
    """multipart/form-data parts by name: (filename, content type, bytes)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    parts: Form = {}
    if not message.is_multipart():
        return parts
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            data = part.get_payload(decode=True)
            raw = data if isinstance(data, bytes) else b""
            parts[name] = (part.get_filename(), part.get_content_type(), raw)
    return parts


class _TransportApp(Starlette):
    """What `cms_app` makes, plus uvicorn's transport in the scope (as simulators/app.py
    does for the providers), so that a "reset" fault aborts the TCP connection instead of
    ending in a 500. Only the outermost app sees uvicorn's own bound `send`."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            cycle = getattr(send, "__self__", None)
            scope["sim.transport"] = getattr(cycle, "transport", None)
        await super().__call__(scope, receive, send)


def cms_app_with_resets(sim: CmsSim, routes: list[BaseRoute]) -> Starlette:
    return _TransportApp(routes=[*sim.control_routes(), *routes])
