"""One reader per process for every listener: fan-out, clean-up, slow listeners, and a
Redis that is away."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from arq.connections import ArqRedis

from service.app import create_app
from service.events import BatchEvent, publish_batch_events, sse_stream, stream_key
from service.events.hub import hub_for
from service.events.server import Server
from service.state import State
from service.worker import run_until_idle
from tests.conftest import Caller, submit
from tests.events.conftest import Message, messages
from tests.events.test_events import events, small_batch


async def subscribed(state: State, batch_id: str) -> AsyncIterator[bytes]:
    stream = sse_stream(state, uuid.UUID(batch_id), None)
    assert (await anext(stream)).startswith(b"retry: ")  # subscribed from here on
    return stream


async def read_all(stream: AsyncIterator[bytes]) -> list[Message]:
    return events([m async for m in messages(stream)])


async def test_many_listeners_share_one_reader(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    batch_id = await submit(client, caller, small_batch(3))
    other_id = await submit(client, caller, small_batch(2))
    streams = [await subscribed(state, batch_id) for _ in range(40)]
    others = [await subscribed(state, other_id) for _ in range(5)]
    hub = hub_for(state)
    assert hub.listener_count == 45
    assert set(hub.streams) == {stream_key(batch_id), stream_key(other_id)}
    reader = hub.task
    assert reader is not None
    assert not reader.done()

    readers = [asyncio.create_task(read_all(s)) for s in streams + others]
    await run_until_idle(state)
    results = await asyncio.wait_for(asyncio.gather(*readers), 30)

    assert hub.task is reader  # the same one reader throughout
    ids = [[m.id for m in got if m.id is not None] for got in results[:40]]
    assert ids[0]
    assert all(seen == ids[0] for seen in ids)
    for got in results:
        assert got[-1].json["status"] == "succeeded"
    assert {got[-1].json["id"] for got in results[40:]} == {other_id}
    # Every stream ended: nothing is left listening, and the reader stops.
    assert hub.listener_count == 0
    assert hub.streams == {}
    await asyncio.wait_for(reader, 10)


async def test_a_listener_that_disconnects_is_cleaned_up(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    batch_a = await submit(client, caller, small_batch(1))
    batch_b = await submit(client, caller, small_batch(1))
    a1, a2, b1 = [await subscribed(state, b) for b in (batch_a, batch_a, batch_b)]
    hub = hub_for(state)
    assert hub.listener_count == 3
    await a1.aclose()  # what Starlette does when the client goes away
    assert hub.listener_count == 2
    assert set(hub.streams) == {stream_key(batch_a), stream_key(batch_b)}
    await b1.aclose()
    assert set(hub.streams) == {stream_key(batch_a)}
    reader = hub.task
    await a2.aclose()
    assert hub.listener_count == 0
    assert hub.streams == {}
    assert reader is not None
    await asyncio.wait_for(reader, 10)


def job_event(batch_id: str, n: int) -> BatchEvent:
    data = {"id": str(uuid.uuid4()), "batch_id": batch_id, "index": n, "status": "running"}
    return BatchEvent(uuid.UUID(batch_id), "job", data)


async def test_a_slow_listener_is_dropped_not_the_others(
    client: httpx.AsyncClient, caller: Caller, state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state.settings, "events_listener_buffer", 10)
    batch_id = await submit(client, caller, small_batch(1))
    slow = await subscribed(state, batch_id)  # never read again
    fast_got: list[Message] = []

    async def fast_reader() -> None:
        async for message in messages(await subscribed(state, batch_id)):
            fast_got.append(message)

    fast = asyncio.create_task(fast_reader())
    while not fast_got:  # its snapshot
        await asyncio.sleep(0.01)
    for step in range(6):
        await publish_batch_events(state, [job_event(batch_id, 4 * step + n) for n in range(4)])
        while len([m for m in fast_got if m.event == "job"]) < 4 * (step + 1):
            await asyncio.sleep(0.01)
    assert hub_for(state).listener_count == 1  # the slow one was let go
    # What it had is gone; its stream ends, and its client would resume by id.
    rest = [m async for m in messages(slow)]
    assert all(m.event != "job" for m in rest)
    fast.cancel()
    await asyncio.gather(fast, return_exceptions=True)
    indexes = [m.json["index"] for m in fast_got if m.event == "job"]
    assert indexes == list(range(24))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_redis_away_does_not_break_jobs_or_listeners(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    batch_id = await submit(client, caller, small_batch(2))
    # Every publish of this batch fails in Redis itself (a key of the wrong type).
    await state.redis.set(stream_key(batch_id), "not a stream")
    await run_until_idle(state)
    batch = (await client.get(f"/v1/batches/{batch_id}", headers=caller.headers)).json()
    assert batch["status"] == "succeeded"
    assert batch["counts"]["succeeded"] == 2

    # No Redis at all: publishing returns quietly; a listener still gets its snapshot
    # from Postgres, and heartbeats.
    dead = ArqRedis(host="127.0.0.1", port=closed_port(), socket_connect_timeout=1)
    away = State(**{**state.__dict__, "redis": dead})
    await publish_batch_events(away, [job_event(batch_id, 0)])
    stream = sse_stream(away, uuid.UUID(batch_id), "1-0")
    got: list[Message] = []
    async for message in messages(stream):
        got.append(message)
        if message.event == "batch":
            break
    await stream.aclose()
    assert got[-1].json["status"] == "succeeded"
    await dead.aclose()


async def test_stopping_the_server_ends_open_streams(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    """uvicorn waits for open responses before it exits: `darkroom serve` ends its
    streams on SIGTERM, or it would wait for the batch to finish."""
    batch_id = await submit(client, caller, small_batch(1))  # queued: its stream stays open
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = Server(uvicorn.Config(create_app(state.settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        got: list[Message] = []

        async def read() -> None:
            async with (
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
                http.stream(
                    "GET", f"/v1/batches/{batch_id}/events", headers=caller.headers
                ) as response,
            ):
                async for message in messages(response.aiter_text()):
                    got.append(message)
                    if message.event == "batch":
                        server.handle_exit(signal.SIGTERM, None)  # as the signal would

        await asyncio.wait_for(read(), 20)  # ends: the server closed the stream
        assert [m.event for m in got if m.comment is None] == ["batch"]
        await asyncio.to_thread(thread.join, 20)
        assert not thread.is_alive()
    finally:
        server.should_exit = True
        sock.close()
