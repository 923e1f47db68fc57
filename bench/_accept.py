"""The measured part of the accept benchmarks (bench.accept_batch, bench.accept_csv): POST
one batch after another to a real `darkroom serve`, time each 202, and check that every
job of it is durable in Postgres and waiting in the dispatch queue before the next."""

from __future__ import annotations

import time
import uuid
from typing import Any

import asyncpg
import httpx

from bench._harness import BenchEnv, log
from bench._machine import BusyMeter
from service.dispatch.queue import AccountKeys


async def timed_posts(
    env: BenchEnv, key: str, requests: list[dict[str, Any]], *, warmup: int, jobs: int
) -> list[dict[str, Any]]:
    """Each request (httpx keyword arguments for POST /v1/batches, headers included) once,
    the first `warmup` marked as such; every run: its seconds and how busy the cores were."""
    base = env.start_api()
    log(f"API up at {base}")
    redis = env.redis()
    scard: Any = redis.scard
    waiting = AccountKeys("local").waiting  # the batches here all use the local renderer
    pg = await asyncpg.connect(env.pg_dsn)
    results = []
    try:
        async with httpx.AsyncClient(base_url=base, timeout=300) as client:
            for number, request in enumerate(requests):
                headers = {"authorization": f"Bearer {key}", **request.get("headers", {})}
                parts = {name: value for name, value in request.items() if name != "headers"}
                queued_before = scard(waiting)
                meter = BusyMeter()
                meter.start()
                began = time.perf_counter()
                response = await client.post("/v1/batches", headers=headers, **parts)
                elapsed = time.perf_counter() - began
                busy = meter.stop()
                if response.status_code != 202:
                    raise RuntimeError(f"POST returned {response.status_code}: {response.text}")
                batch_id = uuid.UUID(response.json()["id"])
                stored = await pg.fetchval(
                    "SELECT count(*) FROM jobs WHERE batch_id = $1", batch_id
                )
                enqueued = scard(waiting) - queued_before
                if stored != jobs or enqueued != jobs:
                    raise RuntimeError(f"batch {batch_id}: {stored} rows, {enqueued} enqueued")
                kind = "warmup" if number < warmup else "measured"
                log(f"{kind} run {number}: {elapsed:.3f} s, {stored} rows, +{enqueued} queued")
                results.append({"kind": kind, "s": elapsed, "cpu_busy_all_cores": busy})
    finally:
        await pg.close()
        redis.close()
    return results
