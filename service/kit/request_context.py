"""Every request gets an id (the caller's `X-Request-Id` when it is sane, or a new one)
bound to each log line it causes, echoed in the response (errors and 500s included), one
access-log line when it ends, and one observation in the HTTP request histogram.

Plain ASGI rather than Starlette's `BaseHTTPMiddleware`, which runs the rest of the app in
a task of its own behind a memory stream: on a small endpoint (a CMS hook, a health
check) that costs as much as the endpoint itself.

It must wrap Starlette's ServerErrorMiddleware, which `add_middleware` cannot reach (that
one is always outermost): the 500 it writes, and the `unhandled_error` line its handler
logs, belong to the request too. `App.build_middleware_stack` puts it there.
"""

from __future__ import annotations

import re
import time
import uuid

import structlog
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logging import get_logger
from service.metrics import recorded

access_log = get_logger("darkroom.access")

MAX_REQUEST_ID = 128
# What a caller's id may hold: enough for UUIDs, ULIDs, trace ids and "svc-1/req:42",
# nothing that could forge a log line or a header (spaces, quotes, control characters).
_SANE_ID = re.compile(rf"[A-Za-z0-9._:/+=@-]{{1,{MAX_REQUEST_ID}}}")
# The route label of a request that matched no route (404s, probes): raw paths are never
# labels, so scanners cannot grow the series without bound.
UNMATCHED = "unmatched"


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        status = 500  # what the server sends when the app raises before answering
        complete = False
        began = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status, complete
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                complete = True
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                # ServerErrorMiddleware re-raises after its handler logged the error and
                # answered 500: a whole answer was sent, and the server need not log the
                # same traceback again without the request's id.
                if not complete:
                    raise
            finally:
                seconds = time.perf_counter() - began
                recorded.http_request(route_of(scope), scope["method"], status, seconds)
                access_log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    duration_ms=round(seconds * 1000, 1),
                )


class App(FastAPI):
    """FastAPI with RequestContext outside everything, ServerErrorMiddleware included."""

    def build_middleware_stack(self) -> ASGIApp:
        return RequestContext(super().build_middleware_stack())


def request_id_of(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            given: str = value.decode("latin-1")
            if _SANE_ID.fullmatch(given):
                return given
            break
    return uuid.uuid4().hex


def route_of(scope: Scope) -> str:
    """The template of the route that answered ("/v1/batches/{batch_id}")."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED
