"""Waiting for an asynchronous provider's handle to finish, as the engine's polls do."""

from __future__ import annotations

import asyncio
import time

from service.providers.base import AsyncProvider, RemoteHandle


async def until_finished(
    provider: AsyncProvider, handle: RemoteHandle, *, within_s: float = 10
) -> RemoteHandle:
    """Poll every 20 ms until `handle` is finished; the test fails after `within_s`."""
    deadline = time.monotonic() + within_s
    while not handle.finished:
        assert time.monotonic() < deadline, f"{handle.id} did not finish"
        await asyncio.sleep(0.02)
        handle = await provider.poll(handle)
    return handle
