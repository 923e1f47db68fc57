"""One slow receiver must not stall anyone else: the measured failure of issue 8, rerun.

A receiver answers its status line one byte every 5 s (a raw asyncio server, so no
framework buffers it), and 1,000 events are queued for it. A `darkroom worker` process
(started as every bench starts one) delivers them. Meanwhile, once a second, another
key's event is written to the outbox for a prompt receiver, and the time from commit to
its arrival is measured.

Prints JSON: the other key's latency (p50, max), the slow endpoint's slots in flight
(max seen), its parked backlog, and the attempts recorded for it.

    .venv/bin/python -m bench.delivery_fairness [--events 1000] [--probes 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from typing import Any

from sqlalchemy import func, select

from bench._harness import BenchEnv, bench_env, log
from bench._machine import machine
from service.auth.service import create_key
from service.db import session_scope
from service.models import WebhookAttempt, WebhookEvent
from service.state import State, build_state, close_state
from service.webhooks.delivery import endpoint_slots
from service.webhooks.service import record_outbox_event
from service.webhooks.tasks import enqueue_deliveries

STATUS_LINE = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


async def trickler(interval_s: float, connections: list[int]) -> tuple[asyncio.Server, str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections[0] += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            for byte in STATUS_LINE:
                await asyncio.sleep(interval_s)
                writer.write(bytes([byte]))
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/slow"


async def prompt_receiver(arrivals: dict[str, float]) -> tuple[asyncio.Server, str]:
    """Answers 200 at once and notes when each webhook-id arrived."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            arrived = time.monotonic()
            headers = dict(
                line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if ": " in line
            )
            lowered = {k.lower(): v for k, v in headers.items()}
            await reader.readexactly(int(lowered.get("content-length", "0")))
            arrivals.setdefault(lowered["webhook-id"], arrived)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, KeyError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"


async def write_events(state: State, api_key_id: uuid.UUID, url: str, count: int) -> list[str]:
    async with session_scope(state.sessionmaker) as session:
        ids = [
            await record_outbox_event(
                session, api_key_id=api_key_id, url=url, type="bench.ping", data={"n": n}
            )
            for n in range(count)
        ]
    await enqueue_deliveries(state, ids)
    return ids


async def run(env: BenchEnv, args: argparse.Namespace) -> dict[str, Any]:
    state = await build_state(env.settings, pool_size=4)
    connections = [0]
    arrivals: dict[str, float] = {}
    slow_server, slow_url = await trickler(args.interval, connections)
    fast_server, fast_url = await prompt_receiver(arrivals)
    try:
        async with session_scope(state.sessionmaker) as session:
            slow_key = (await create_key(session, "slow", pepper=env.settings.secret_key)).api_key
            other_key = (await create_key(session, "other", pepper=env.settings.secret_key)).api_key
        backlog = await write_events(state, slow_key.id, slow_url, args.events)
        async with state.sessionmaker() as session:
            endpoint_id = (await session.get(WebhookEvent, backlog[0])).endpoint_id  # type: ignore[union-attr]
        log(f"{len(backlog)} events queued for the slow receiver; starting a worker")
        worker = env.spawn("worker", name="worker")
        while connections[0] < 1:
            await asyncio.sleep(0.05)
        log("the slow receiver holds deliveries; probing with another key's events")
        slots = endpoint_slots(state)
        sent: dict[str, float] = {}
        in_flight: list[int] = []
        for _ in range(args.probes):
            [probe] = await write_events(state, other_key.id, fast_url, 1)
            sent[probe] = time.monotonic()
            for _ in range(10):
                in_flight.append(await slots.in_flight(endpoint_id))
                await asyncio.sleep(0.1)
        waited = time.monotonic()
        while len(arrivals) < len(sent) and time.monotonic() - waited < 30:
            await asyncio.sleep(0.1)
        latencies = sorted(arrivals[i] - t for i, t in sent.items() if i in arrivals)
        async with state.sessionmaker() as session:
            recorded = await session.scalar(
                select(func.count())
                .select_from(WebhookAttempt)
                .join(WebhookEvent, WebhookEvent.id == WebhookAttempt.event_id)
                .where(WebhookEvent.endpoint_id == endpoint_id)
            )
        parked = await slots.parked_count(endpoint_id)
        env.stop(worker)
        return {
            "bench": "delivery_fairness",
            "machine": machine(),
            "slow_receiver": {"byte_every_s": args.interval, "events_queued": args.events},
            "other_key": {
                "probes": len(sent),
                "delivered": len(latencies),
                "latency_p50_s": round(statistics.median(latencies), 3) if latencies else None,
                "latency_max_s": round(latencies[-1], 3) if latencies else None,
            },
            "slow_endpoint": {
                "in_flight_max": max(in_flight),
                "connections_opened": connections[0],
                "parked_at_end": parked,
                "attempts_recorded": recorded,
            },
            "duration_s": round(args.probes * 1.0, 1),
        }
    finally:
        slow_server.close()
        fast_server.close()
        await close_state(state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--probes", type=int, default=30, help="one per second")
    parser.add_argument("--interval", type=float, default=5.0, help="s per status-line byte")
    args = parser.parse_args()
    with bench_env() as env:
        result = asyncio.run(run(env, args))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
