"""The client side of the simulators' `/_sim` control routes, for tests and benchmarks."""

from __future__ import annotations

from typing import Any

import httpx


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
