"""Broken responses, shared by both providers: what a flaky network or upstream does.

`reset` needs the connection itself, which ASGI hides: the outer app (app.py) puts
uvicorn's transport in the scope as `sim.transport`, and the connection is aborted with
SO_LINGER 0 so that the client reads a TCP RST and no HTTP response at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from simulators.responses import json_body, json_response

HUGE_PLACEHOLDER = "__SIM_HUGE_BODY__"
CHUNK = 64 * 1024


async def wait_for_disconnect(request: Request, timeout: float) -> bool:
    """Wait until the client goes away (True) or `timeout` passes (False)."""
    try:
        async with asyncio.timeout(timeout):
            while (await request.receive())["type"] != "http.disconnect":
                pass
    except TimeoutError:
        return False
    return True


async def drop_connection(request: Request) -> Response:
    """Abort the TCP connection without a response; the returned Response is never sent."""
    transport = request.scope.get("sim.transport")
    if transport is None:  # not served by uvicorn (an in-process ASGI transport)
        raise ConnectionResetError("simulated connection reset")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    await wait_for_disconnect(request, timeout=5.0)
    return Response(status_code=499)


async def hang(request: Request, seconds: float, then: Response) -> Response:
    """Answer nothing for `seconds` (or until the client gives up), then answer `then`."""
    await wait_for_disconnect(request, timeout=seconds)
    return then


def malformed(body: bytes, status: int, headers: Mapping[str, str] | None = None) -> Response:
    """A success status with a JSON body cut in half (well-formed HTTP, broken JSON)."""
    return Response(
        body[: max(1, len(body) // 2)],
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def huge(template: bytes, filler: bytes, total: int, status: int) -> StreamingResponse:
    """A success response of `total` bytes, streamed: `template` with its placeholder
    replaced by `filler` repeated (so the body is valid JSON, only enormous)."""
    prefix, _, suffix = template.partition(HUGE_PLACEHOLDER.encode())
    fill = max(0, total - len(prefix) - len(suffix))
    chunk = (filler * (CHUNK // len(filler) + 1))[:CHUNK]

    async def stream() -> AsyncIterator[bytes]:
        yield prefix
        remaining = fill
        while remaining > 0:
            piece = chunk if remaining >= CHUNK else chunk[:remaining]
            remaining -= len(piece)
            yield piece
        yield suffix

    length = str(len(prefix) + fill + len(suffix))
    return StreamingResponse(
        stream(),
        status_code=status,
        media_type="application/json",
        headers={"content-length": length},
    )


@dataclass
class Fault:
    """An answer injected by `POST /_sim/faults` for the next `count` matching requests."""

    method: str | None
    path: re.Pattern[str]
    status: int | str
    count: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 30.0


def take_fault(
    faults: list[Fault], request: Request, statuses: Collection[int | str] | None = None
) -> Fault | None:
    """The first fault left that matches `request` (and is one of `statuses`, when
    given), its count taken down by one."""
    for fault in faults:
        if fault.count <= 0 or (statuses is not None and fault.status not in statuses):
            continue
        if fault.method and fault.method.upper() != request.method:
            continue
        if not fault.path.search(request.url.path):
            continue
        fault.count -= 1
        return fault
    return None


def fault_route(faults: list[Fault]) -> Route:
    """`POST /_sim/faults` `{"status", "path"?, "method"?, "count"?, "body"?, "headers"?,
    "seconds"?}`: adds a fault to `faults`."""

    async def add_fault(request: Request) -> Response:
        spec = await json_body(request)
        if not isinstance(spec, dict) or "status" not in spec:
            return json_response({"detail": "expected {status, path?, method?, count?}"}, 422)
        faults.append(
            Fault(
                method=spec.get("method"),
                path=re.compile(spec.get("path", ".*")),
                status=spec["status"],
                count=int(spec.get("count", 1)),
                body=spec.get("body"),
                headers=dict(spec.get("headers") or {}),
                seconds=float(spec.get("seconds", 30.0)),
            )
        )
        return json_response({"faults": len(faults)})

    return Route("/_sim/faults", add_fault, methods=["POST"])


def reset_route(reset: Callable[[], None], path: str = "/_sim/reset") -> Route:
    """`POST /_sim/reset`: calls `reset`."""

    async def endpoint(request: Request) -> Response:
        reset()
        return json_response({"reset": True})

    return Route(path, endpoint, methods=["POST"])
