"""The retry schedule as it really runs: when each attempt of a failing event arrives.

Two receivers on a raw asyncio server: one always answers 500, the other always answers
503 with `Retry-After: <seconds>` (2700 by default, so the clamp to [step, twice the step] shows
in all three ways: raised to the step, cut to twice the step, and taken as it is). N events
are written to the outbox for each at once and a `darkroom worker` process (started as
every bench starts one) with DARKROOM_WEBHOOK_SCHEDULE_SCALE set small delivers them. The
receiver notes when each attempt arrives; the waits are scaled back to real time and set
against the nominal step and its bounds. Postgres is then asked how many attempts each
event had and how it ended.

Prints JSON: per receiver and step, the measured wait (min/median/max, real time) against
the nominal and its bounds; the total from the first attempt to `failed`; attempts per
event and the events' final status.

    .venv/bin/python -m bench.delivery_schedule [--events 20] [--scale 0.002]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections import defaultdict
from typing import Any

from sqlalchemy import select

from bench._harness import BenchEnv, bench_env, log
from bench._machine import machine, wait_for_quiet
from service.auth.service import create_key
from service.db import session_scope
from service.models import WebhookAttempt, WebhookEvent
from service.state import State, build_state, close_state
from service.webhooks.schedule import JITTER, MAX_ATTEMPTS, STEPS_S
from service.webhooks.service import record_outbox_event
from service.webhooks.tasks import enqueue_deliveries

# arq polls the webhook queue every 0.25 s (service/worker.py); a deferred retry runs at
# most that late, plus the time to plan, attempt and record (scaled seconds).
POLL_ALLOWANCE_S = 0.3

Arrivals = dict[str, dict[str, list[float]]]  # receiver -> event id -> arrival times


def answer_for(path: str, retry_after: int) -> bytes:
    if path == "/busy":
        head = f"HTTP/1.1 503 Service Unavailable\r\nretry-after: {retry_after}\r\n"
    else:
        head = "HTTP/1.1 500 Internal Server Error\r\n"
    return (head + "content-length: 4\r\nconnection: close\r\n\r\nnope").encode()


async def receiver(arrivals: Arrivals, retry_after: int) -> tuple[asyncio.Server, str]:
    """Notes when each attempt's request line and headers arrived (wall clock), then fails it."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            arrived = time.time()
            lines = head.decode().split("\r\n")
            path = "/busy" if lines[0].split(" ")[1].startswith("/busy") else "/fail"
            headers = {
                k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:] if ": " in line)
            }
            await reader.readexactly(int(headers.get("content-length", "0")))
            arrivals[path][headers["webhook-id"]].append(arrived)
            writer.write(answer_for(path, retry_after))
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, KeyError, IndexError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def expected_waits(path: str, retry_after: int) -> list[tuple[float, float, float]]:
    """(nominal, shortest, longest) real-time wait before attempts 2..8."""
    if path == "/busy":
        return [(w, w, w) for w in (min(max(retry_after, s), 2 * s) for s in STEPS_S[1:])]
    return [(s, s * (1 - JITTER), s * (1 + JITTER)) for s in STEPS_S[1:]]


def spread(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 1),
        "median": round(statistics.median(values), 1),
        "max": round(max(values), 1),
    }


def step_figures(
    path: str, times: dict[str, list[float]], scale: float, retry_after: int
) -> list[dict[str, Any]]:
    """Per step: the measured waits (scaled back to real time) against what the code means."""
    rows = []
    for index, (nominal, low, high) in enumerate(expected_waits(path, retry_after)):
        waits = [t[index + 1] - t[index] for t in times.values() if len(t) > index + 1]
        real = [w / scale for w in waits]
        allowance = POLL_ALLOWANCE_S / scale
        rows.append(
            {
                "attempt": index + 2,
                "nominal_s": nominal,
                "bounds_s": [round(low, 1), round(high, 1)],
                "measured_s": spread(real),
                "measured_scaled_ms": spread([w * 1000 for w in waits]),
                "in_bounds": sum(low <= r <= high for r in real),
                "in_bounds_with_poll": sum(low <= r <= high + allowance for r in real),
                "events": len(real),
            }
        )
    return rows


async def settle(state: State, ids: list[str], timeout_s: float) -> None:
    """Wait until no event is pending any more (or the time is up)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with state.sessionmaker() as session:
            statuses = (
                await session.scalars(select(WebhookEvent.status).where(WebhookEvent.id.in_(ids)))
            ).all()
        pending = sum(s.value == "pending" for s in statuses)
        if not pending:
            return
        log(f"{pending} of {len(ids)} events still pending")
        await asyncio.sleep(5)
    log("timed out waiting for the events to settle")


async def postgres_figures(state: State, ids: list[str], scale: float) -> dict[str, Any]:
    """What Postgres recorded: attempts per event, final status, first attempt to `failed`
    (the eighth attempt's end, when the same transaction marks the event failed)."""
    async with state.sessionmaker() as session:
        events = (await session.scalars(select(WebhookEvent).where(WebhookEvent.id.in_(ids)))).all()
        attempts = (
            await session.scalars(
                select(WebhookAttempt)
                .where(WebhookAttempt.event_id.in_(ids))
                .order_by(WebhookAttempt.event_id, WebhookAttempt.number)
            )
        ).all()
    by_event: dict[str, list[WebhookAttempt]] = defaultdict(list)
    for attempt in attempts:
        by_event[attempt.event_id].append(attempt)
    totals = []
    for rows in by_event.values():
        last = rows[-1]
        ended = last.started_at.timestamp() + last.duration_ms / 1000
        totals.append((ended - rows[0].started_at.timestamp()) / scale)
    counts = sorted({len(rows) for rows in by_event.values()})
    return {
        "statuses": sorted({e.status.value for e in events}),
        "events_failed": sum(e.status.value == "failed" for e in events),
        "attempts_per_event": counts,
        "attempt_numbers_1_to_8": all(
            [a.number for a in rows] == list(range(1, MAX_ATTEMPTS + 1))
            for rows in by_event.values()
        ),
        "status_codes": sorted({a.status_code or 0 for a in attempts}),
        "first_attempt_to_failed_s": spread(totals),
        "first_attempt_to_failed_h": {k: round(v / 3600, 2) for k, v in spread(totals).items()},
    }


async def write_events(
    state: State, env: BenchEnv, base: str, count: int, *, own_endpoint: bool
) -> dict[str, list[str]]:
    """N events per receiver, at one endpoint (URL) each, or at an endpoint of their own:
    a failing endpoint has one slot, so its events take turns (`fairness.py`)."""
    async with session_scope(state.sessionmaker) as session:
        key = (await create_key(session, "schedule", pepper=env.settings.secret_key)).api_key
        ids = {
            path: [
                await record_outbox_event(
                    session,
                    api_key_id=key.id,
                    url=base + path + (f"/{n}" if own_endpoint else ""),
                    type="bench.ping",
                    data={"n": n},
                )
                for n in range(count)
            ]
            for path in ("/fail", "/busy")
        }
    await enqueue_deliveries(state, ids["/fail"] + ids["/busy"])
    return ids


async def run(env: BenchEnv, args: argparse.Namespace) -> dict[str, Any]:
    state = await build_state(env.settings, pool_size=4)
    arrivals: Arrivals = defaultdict(lambda: defaultdict(list))
    server, base = await receiver(arrivals, args.retry_after)
    scale_env = {"DARKROOM_WEBHOOK_SCHEDULE_SCALE": str(args.scale)}
    try:
        quiet = wait_for_quiet()
        worker = env.spawn("worker", name="worker", extra_env=scale_env)
        await asyncio.sleep(3)  # the worker's startup is not part of any wait
        began = time.monotonic()
        ids = await write_events(state, env, base, args.events, own_endpoint=args.own_endpoint)
        every = ids["/fail"] + ids["/busy"]
        longest = max(
            sum(STEPS_S) * (1 + JITTER),
            sum(w for w, _, _ in expected_waits("/busy", args.retry_after)),
        )
        log(f"{len(every)} events written; about {longest * args.scale:.0f} s to go")
        await settle(state, every, longest * args.scale + 120)
        elapsed = time.monotonic() - began
        await asyncio.sleep(2)  # a stray extra attempt would arrive now
        env.stop(worker)
        receivers = {}
        for path, name in (("/fail", "http_500"), ("/busy", "http_503_retry_after")):
            times = {i: sorted(arrivals[path][i]) for i in ids[path]}
            receivers[name] = {
                "arrivals_per_event": sorted({len(t) for t in times.values()}),
                "steps": step_figures(path, times, args.scale, args.retry_after),
                "first_to_last_arrival_s": spread(
                    [(t[-1] - t[0]) / args.scale for t in times.values() if t]
                ),
                "postgres": await postgres_figures(state, ids[path], args.scale),
            }
        return {
            "bench": "delivery_schedule",
            "machine": {**machine(), **quiet},
            "events_per_receiver": args.events,
            "endpoint_per_event": args.own_endpoint,
            "scale": args.scale,
            "retry_after_s": args.retry_after,
            "nominal_total_s": sum(STEPS_S),
            "wall_clock_s": round(elapsed, 1),
            "receivers": receivers,
        }
    finally:
        server.close()
        await close_state(state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20, help="per receiver")
    parser.add_argument("--scale", type=float, default=0.002, help="27.6 h becomes ~200 s")
    parser.add_argument("--retry-after", type=int, default=2700, help="the 503's, in seconds")
    parser.add_argument(
        "--own-endpoint", action="store_true", help="each event at a URL (endpoint) of its own"
    )
    args = parser.parse_args()
    with bench_env() as env:
        result = asyncio.run(run(env, args))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
