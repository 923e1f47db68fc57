"""Every request gets an id (the caller's `x-request-id`, or a new one) bound to each log
line it causes, echoed in the response, and one access-log line when it ends.

Plain ASGI rather than Starlette's `BaseHTTPMiddleware`, which runs the rest of the app in
a task of its own behind a memory stream: on a small endpoint (a CMS hook, a health
check) that costs as much as the endpoint itself.
"""

from __future__ import annotations

import time
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logging import get_logger

access_log = get_logger("darkroom.access")

MAX_REQUEST_ID = 200


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        status = 500  # what the server sends when the app raises before answering
        began = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                access_log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    duration_ms=round((time.perf_counter() - began) * 1000, 1),
                )


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            given: str = value.decode("latin-1")[:MAX_REQUEST_ID]
            if given.isprintable() and given.strip():
                return given
    return uuid.uuid4().hex
