"""A real HTTP receiver for outbound webhooks, on a real port, that can be told to fail."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str = ""
    received: list[Received] = field(default_factory=list)
    fail_next: int = 0  # answer 503 to this many requests first
    status: int = 200  # what every other request gets
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b"ok"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.received.append(Received(headers, body))
        status, headers = self.status, self.headers
        if self.fail_next > 0:
            self.fail_next -= 1
            status, headers = 503, []
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


@asynccontextmanager
async def running_receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    receiver.url = f"http://127.0.0.1:{port}/hooks/darkroom"
    server = uvicorn.Server(uvicorn.Config(receiver, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield receiver
    finally:
        server.should_exit = True
        await task
        sock.close()


def closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/nobody-home"


@dataclass
class Trickler:
    """A receiver that reads the request, then sends its status line one byte every
    `interval_s`: httpx's per-read timeout never fires, only a total deadline ends it."""

    url: str = ""
    connections: int = 0
    interval_s: float = 5.0


@asynccontextmanager
async def running_trickler(interval_s: float = 5.0) -> AsyncIterator[Trickler]:
    trickler = Trickler(interval_s=interval_s)
    writers: set[asyncio.StreamWriter] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        trickler.connections += 1
        writers.add(writer)
        try:
            await reader.readuntil(b"\r\n\r\n")
            for byte in b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n":
                await asyncio.sleep(trickler.interval_s)
                writer.write(bytes([byte]))
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writers.discard(writer)
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    trickler.url = f"http://127.0.0.1:{port}/slow"
    try:
        yield trickler
    finally:
        server.close()
        for writer in list(writers):
            writer.close()
        await server.wait_closed()
