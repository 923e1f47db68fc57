"""What every CMS simulator shares: a log of the API requests it received, faults to
inject on demand, the `/_sim` control routes, and a runner on a real port.

Control routes (never logged, never faulted):
- `GET /_sim/config`: the simulator's settings (secrets included: it is a test double);
- `GET /_sim/state`: the CMS's content as the write-back left it (per simulator);
- `GET /_sim/requests`: every API request received, oldest first;
- `POST /_sim/faults` `{"method": "PUT", "path": "regex", "status": 503, "count": 2,
  "body": {...}, "headers": {...}}`: the next `count` matching requests get that answer
  (`"status": "reset"` drops the connection, `"status": "hang"` answers after `seconds`);
- `POST /_sim/reset`: clears requests, faults and content.
"""

from __future__ import annotations

import email.parser
import email.policy
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from simulators.faults import Fault, drop_connection, fault_route, hang, reset_route, take_fault
from simulators.responses import json_body, json_response
from simulators.runner import serve_in_thread


@dataclass
class RequestLog:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body_bytes: int
    json: Any = None


class CmsSim:
    """Mix into a simulator's state: `await sim.intercept(request)` at the top of every API
    route logs the request and answers an injected fault if one matches."""

    def __init__(self, kind: str, config: dict[str, Any] | None = None) -> None:
        self.kind = kind
        self.config: dict[str, Any] = dict(config or {})
        self.requests: list[RequestLog] = []
        self.faults: list[Fault] = []

    def reset(self) -> None:
        self.requests.clear()
        self.faults.clear()

    def state(self) -> Any:
        """The CMS's content, for tests to verify a write-back. Override."""
        return {}

    async def intercept(self, request: Request) -> Response | None:
        body = await request.body()
        parsed = None
        if body and "json" in request.headers.get("content-type", ""):
            parsed = await json_body(request)
        self.requests.append(
            RequestLog(
                method=request.method,
                path=request.url.path,
                query=request.url.query,
                headers={k.lower(): v for k, v in request.headers.items()},
                body_bytes=len(body),
                json=parsed,
            )
        )
        fault = take_fault(self.faults, request)
        if fault is None:
            return None
        if fault.status == "reset":
            return await drop_connection(request)
        if fault.status == "hang":
            return await hang(request, fault.seconds, json_response({}, 504))
        return json_response(fault.body or {}, int(fault.status), headers=fault.headers)

    def control_routes(self) -> list[BaseRoute]:
        async def get_config(request: Request) -> Response:
            return json_response(self.config)

        async def get_state(request: Request) -> Response:
            return json_response(self.state())

        async def get_requests(request: Request) -> Response:
            return json_response([vars(entry) for entry in self.requests])

        return [
            Route("/_sim/config", get_config, methods=["GET"]),
            Route("/_sim/state", get_state, methods=["GET"]),
            Route("/_sim/requests", get_requests, methods=["GET"]),
            fault_route(self.faults),
            reset_route(self.reset),
        ]


@dataclass(frozen=True)
class FormPart:
    """One part of a multipart/form-data body; `filename` is None for a plain field."""

    name: str
    filename: str | None
    content_type: str
    data: bytes

    def text(self) -> str:
        return self.data.decode()


def parse_multipart(content_type: str, body: bytes) -> list[FormPart]:
    """The named parts of a multipart/form-data body, in order (stdlib email parser:
    python-multipart is not a dependency, and a simulator reads small bodies whole)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        return []
    parts: list[FormPart] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            data = part.get_payload(decode=True)
            raw = data if isinstance(data, bytes) else b""
            parts.append(FormPart(name, part.get_filename(), part.get_content_type(), raw))
    return parts


class CmsApp(Starlette):
    """Hands handlers uvicorn's transport (`scope["sim.transport"]`, as the provider
    simulator does) so that a `reset` fault can abort the TCP connection: only the
    outermost app sees uvicorn's own `send`, the bound method that holds it."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            owner = getattr(send, "__self__", None)
            scope["sim.transport"] = getattr(owner, "transport", None)
        await super().__call__(scope, receive, send)


def cms_app(sim: CmsSim, routes: list[BaseRoute]) -> Starlette:
    """The simulator's app: its control routes, then its API `routes`; "reset" faults
    abort the connection (see CmsApp)."""
    return CmsApp(routes=[*sim.control_routes(), *routes])


@asynccontextmanager
async def run_cms(build: Callable[[], Starlette], *, port: int = 0) -> AsyncIterator[str]:
    """A CMS simulator app on 127.0.0.1 in a background thread; yields its base URL."""
    async with serve_in_thread(build(), port=port) as url:
        yield url
