"""The simulators' `/_sim` control routes: the configuration routes they share, and the
client tests and benchmarks drive them with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulators.responses import json_body, json_response


def config_routes(
    current: Callable[[], BaseModel],
    patch: Callable[[dict[str, Any]], BaseModel],
    path: str = "/_sim/config",
) -> list[Route]:
    """`GET path`: the configuration; `PATCH path`: `patch` merges the fields given and
    returns the new configuration (a 422 naming the fields it refused)."""

    async def get_config(request: Request) -> Response:
        return json_response(current().model_dump())

    async def patch_config(request: Request) -> Response:
        changes = await json_body(request)
        if not isinstance(changes, dict):
            return json_response({"detail": "expected a JSON object"}, 422)
        try:
            config = patch(changes)
        except ValidationError as error:
            detail = error.errors(include_url=False, include_context=False)
            return json_response({"detail": detail}, 422)
        return json_response(config.model_dump())

    return [
        Route(path, get_config, methods=["GET"]),
        Route(path, patch_config, methods=["PATCH"]),
    ]


class ControlClient:
    """Calls a running simulator's `/_sim` routes over HTTP; each simulator's handle
    adds its own controls."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        # verify=False: plain HTTP, and it spares loading a CA bundle on every call.
        async with httpx.AsyncClient(base_url=self.url, timeout=10, verify=False) as client:
            response = await client.request(method, path, json=body)
            response.raise_for_status()
            return response.json()
