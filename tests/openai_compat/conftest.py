"""The door on a real port with a worker running beside it, for the official `openai`
client: the API serves in its thread (tests/live.py), the dispatcher and arq workers run
in the test's event loop against the same Postgres and Redis, on the built-in renderer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from openai import AsyncOpenAI

from service.config import Settings
from service.state import State
from service.worker import running_worker
from tests.conftest import Caller
from tests.live import live_server


@dataclass(frozen=True)
class Door:
    url: str  # the server's base URL
    client: AsyncOpenAI
    caller: Caller
    settings: Settings

    def other_client(self, key: str) -> AsyncOpenAI:
        return AsyncOpenAI(base_url=f"{self.url}/openai/v1", api_key=key, max_retries=0)


@pytest.fixture
async def door(state: State, caller: Caller) -> AsyncIterator[Door]:
    with live_server(state.settings) as url:
        state.settings.public_url = url  # the settings object the server shares
        client = AsyncOpenAI(base_url=f"{url}/openai/v1", api_key=caller.key, max_retries=0)
        async with running_worker(state):
            yield Door(url, client, caller, state.settings)
        await client.close()
