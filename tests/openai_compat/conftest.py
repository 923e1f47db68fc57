"""The door on a real port with a worker running beside it, for the official `openai`
client: the API serves in its thread (tests/live.py), the dispatcher and arq workers run
in the test's event loop against the same Postgres and Redis, on the built-in renderer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from openai import AsyncOpenAI

from service.config import Settings
from service.jobs.polls import stop_on_time_polls
from service.state import State
from service.worker import build_dispatcher, build_workers
from tests.conftest import Caller
from tests.live import live_server


@asynccontextmanager
async def running_worker(state: State) -> AsyncIterator[None]:
    """A worker process's loops, until the block ends."""
    workers = build_workers(state)
    dispatcher = build_dispatcher(state)
    mains = [asyncio.create_task(worker.main()) for worker in workers]
    dispatcher.start()
    try:
        yield
    finally:
        await dispatcher.stop(grace_s=5)
        await stop_on_time_polls(grace_s=5)
        for main in mains:
            main.cancel()
        await asyncio.gather(*mains, return_exceptions=True)
        for worker in workers:
            await asyncio.gather(*worker.tasks.values(), return_exceptions=True)


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
