"""The simulator as one ASGI app: Replicate at the root, OpenAI under /v1/images, an
OAuth token server at /oauth/2.0/token, control routes under /_sim (no auth, never
counted).

Starlette rather than FastAPI: the simulator has no schema to publish, and skipping
FastAPI's per-request validation keeps it fast enough to drive 1000 requests/s on a
small machine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from simulators import oauth, openai, openai_edits, replicate
from simulators.config import SimConfig
from simulators.control import config_routes
from simulators.faults import reset_route
from simulators.predictions import Lifecycle
from simulators.responses import json_response
from simulators.state import SimState
from simulators.webhooks import WebhookSender


def control_routes(state: SimState) -> list[Route]:
    async def stats(request: Request) -> Response:
        return json_response(state.stats())

    return [
        *config_routes(lambda: state.config, state.configure),
        reset_route(state.reset),
        Route("/_sim/stats", stats, methods=["GET"]),
    ]


class SimulatorApp:
    """Counts every provider request and its status, and hands handlers uvicorn's
    transport (`scope["sim.transport"]`) so that a `reset` fault can abort the TCP
    connection. It must be the outermost app: only uvicorn's own `send` is a bound
    method of the request cycle that holds the transport."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.state = SimState(config or SimConfig())
        self.lifecycle = Lifecycle(self.state)
        # The OAuth token server whose tokens the OpenAI routes take when it is enabled.
        self.tokens = oauth.TokenServer()
        routes = [
            *replicate.routes(self.state, self.lifecycle),
            *openai.routes(self.state, self.tokens),
            *openai_edits.routes(self.state, self.tokens),
            *oauth.routes(self.tokens),
            *oauth.control_routes(self.tokens),
            *control_routes(self.state),
        ]
        self.app = Starlette(routes=routes, lifespan=self._lifespan)

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        sender = WebhookSender(self.state)
        self.lifecycle.sender = sender
        try:
            yield
        finally:
            self.lifecycle.sender = None
            self.state.reset()  # cancels every prediction timer
            await sender.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_sim/"):
            await self.app(scope, receive, send)
            return
        scope["sim.transport"] = getattr(getattr(send, "__self__", None), "transport", None)
        status: list[int] = []

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            route: Any = scope.get("route")
            path = route.path if route is not None else "(unmatched)"
            # A response "sent" after the client went away (a reset, an abandoned hang)
            # never reached anyone: no status is counted for it.
            gone = getattr(getattr(send, "__self__", None), "disconnected", False)
            sent = status[0] if status and not gone else None
            self.state.count_request(f"{scope['method']} {path}", sent)


def create_app(config: SimConfig | None = None) -> SimulatorApp:
    return SimulatorApp(config)
