"""Live events fanned out to many listeners: 200 SSE clients on one batch (and a few on
some other batches) through a real `darkroom serve`, while one worker runs the batches on
the local renderer. Prints one JSON object.

Each event carries `published_at` (set by the worker right before its XADD); each
listener notes when it read the event. The lag is the difference, over every
(listener, event) pair: the whole path worker -> Redis -> the API's one reader ->
200 listener buffers -> HTTP -> client. Every listener must get every event, in the
same order, and its stream must end after the batch's final event.

    .venv/bin/python -m bench.sse_fanout [--listeners 200] [--jobs 300] [--other-batches 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from bench._harness import BenchEnv, bench_env, free_port, log
from bench._machine import BusyMeter, machine, wait_for_quiet
from bench._payload import batch_body


@dataclass
class Seen:
    ids: list[str] = field(default_factory=list)
    lags_ms: list[float] = field(default_factory=list)
    snapshot: bool = False
    final_status: str | None = None
    ended: bool = False


async def listen(http: httpx.AsyncClient, key: str, batch_id: str, seen: Seen) -> None:
    """Reads raw bytes and picks out only what it measures: a JSON parse of every event
    in 200 clients would make this process the bottleneck it is meant to measure around."""
    headers = {"authorization": f"Bearer {key}"}
    async with http.stream("GET", f"/v1/batches/{batch_id}/events", headers=headers) as response:
        response.raise_for_status()
        buffer = b""
        async for raw in response.aiter_raw():
            received = time.time()
            buffer += raw
            *messages, buffer = buffer.split(b"\n\n")
            for message in messages:
                if b"data: " in message:
                    note(seen, message, received)
    seen.ended = True


def note(seen: Seen, message: bytes, received: float) -> None:
    event_id = None
    if message.startswith(b"id: "):
        event_id = message[4 : message.index(b"\n")].decode()
    if event_id is None:
        seen.snapshot = True
    else:
        seen.ids.append(event_id)
        at = message.index(b'"published_at":"') + 16
        published = datetime.fromisoformat(message[at : message.index(b'"', at)].decode())
        seen.lags_ms.append((received - published.timestamp()) * 1000)
    if message.startswith(b"event: batch", message.find(b"event: ")):
        at = message.index(b'"status":"') + 10
        seen.final_status = message[at : message.index(b'"', at)].decode()


async def start_api(env: BenchEnv, timeout_s: float = 180.0) -> str:
    """`darkroom serve`, as BenchEnv.start_api, but patient: a loaded machine may take
    more than 30 s to import the app."""
    port = free_port()
    child = env.spawn("serve", "--port", str(port), name="api")
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            if child.poll() is not None:
                raise RuntimeError(f"API exited with {child.returncode}; see {env.workdir}")
            try:
                if (await http.get(f"{base}/readyz")).status_code == 200:
                    return base
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"API did not become ready in {timeout_s} s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(env: BenchEnv, listeners: int, jobs: int, other_batches: int) -> dict[str, Any]:
    key = await env.create_api_key()
    base = await start_api(env)
    limits = httpx.Limits(max_connections=listeners + 50, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as http:
        headers = {"authorization": f"Bearer {key}"}
        batch_ids = []
        for n in range(1 + other_batches):
            body = batch_body(jobs if n == 0 else jobs // 5, size=256, seed=n)
            response = await http.post("/v1/batches", json=body, headers=headers)
            response.raise_for_status()
            batch_ids.append(response.json()["id"])
        main, others = batch_ids[0], batch_ids[1:]
        plan = [main] * listeners + [b for b in others for _ in range(5)]
        seen = [Seen() for _ in plan]
        tasks = [
            asyncio.create_task(listen(http, key, b, s)) for b, s in zip(plan, seen, strict=True)
        ]
        while not all(s.snapshot for s in seen):  # every listener subscribed
            if any(t.done() for t in tasks):
                await asyncio.gather(*tasks)
            await asyncio.sleep(0.05)
        log(f"{len(plan)} listeners connected; starting a worker")
        meter = BusyMeter()
        meter.start()
        began = time.perf_counter()
        worker = env.spawn("worker", name="worker")
        await asyncio.wait_for(asyncio.gather(*tasks), 600)
        elapsed = time.perf_counter() - began
        busy = meter.stop()
        env.stop(worker)

    mains = seen[:listeners]
    reference = mains[0].ids
    if not all(s.ids == reference for s in mains):
        raise RuntimeError("listeners of the main batch saw different events")
    if not all(s.ended and s.final_status == "succeeded" for s in seen):
        raise RuntimeError("a stream did not end with the batch succeeded")
    lags = [lag for s in seen for lag in s.lags_ms]
    main_lags = [lag for s in mains for lag in s.lags_ms]
    return {
        "listeners": len(plan),
        "listeners_on_main_batch": listeners,
        "jobs_main_batch": jobs,
        "other_batches": other_batches,
        "events_per_main_listener": len(reference),
        "events_received_total": len(lags),
        "run_s": round(elapsed, 2),
        "lag_ms_p50": round(statistics.median(lags), 1),
        "lag_ms_p99": round(percentile(lags, 0.99), 1),
        "lag_ms_max": round(max(lags), 1),
        "main_batch_lag_ms_p50": round(statistics.median(main_lags), 1),
        "main_batch_lag_ms_p99": round(percentile(main_lags, 0.99), 1),
        "cpu_busy_all_cores": busy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listeners", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--other-batches", type=int, default=3)
    args = parser.parse_args()
    quiet = wait_for_quiet()
    with bench_env(worker_concurrency=8) as env:
        result = asyncio.run(run(env, args.listeners, args.jobs, args.other_batches))
    print(json.dumps({"bench": "sse_fanout", "machine": machine(), **quiet, **result}, indent=2))


if __name__ == "__main__":
    main()
