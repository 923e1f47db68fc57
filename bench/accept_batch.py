"""How long a 10,000-job batch takes to be accepted: POST /v1/batches to 202, over real HTTP.

Target (issue): 202 returned, every row durable, every job enqueued, in <= 1.0 s on the
2-core machine. The API runs as `python -m service.cli serve` (uvicorn) against a fresh
database and Redis db; after every POST the bench checks that Postgres holds the 10,000
jobs of that batch and that the arq queue grew by 10,000.

Then, in this process, the handler's service calls are made one at a time with
perf_counter around each (service/ is called, not copied) to show where the time goes,
and the whole FastAPI app is called once more over ASGI (no socket, no uvicorn), once
plain and once under cProfile, to separate the HTTP server from the application.

    .venv/bin/python -m bench.accept_batch [--runs 5] [--warmup 1] [--jobs 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import json
import pstats
import statistics
import time
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import text

from bench._accept import timed_posts
from bench._harness import BenchEnv, bench_env
from bench._machine import machine, wait_for_quiet
from bench._payload import batch_body
from service.app import create_app
from service.auth.service import find_key
from service.batches import repository, service
from service.batches.schemas import BatchCreate
from service.jobs.tasks import enqueue_jobs
from service.state import build_state, close_state

TARGET_S = 1.0


class GcClock:
    """Counts the collector's passes and the time they take (gc.callbacks)."""

    def __init__(self) -> None:
        self.passes = [0, 0, 0]
        self.seconds = 0.0
        self._began = 0.0

    def __enter__(self) -> GcClock:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._began
            self.passes[info["generation"]] += 1

    def snapshot(self) -> tuple[float, list[int]]:
        return self.seconds, list(self.passes)


async def _breakdown(env: BenchEnv, key: str, body: bytes) -> dict[str, Any]:
    """POST /v1/batches one service call at a time (the handler in
    service/batches/endpoints.py, minus FastAPI), with the garbage collector's share of each."""
    state = await build_state(env.settings)
    async with state.engine.connect() as connection:  # a warm pool, as in the server
        await connection.execute(text("SELECT 1"))
    await state.redis.ping()
    steps: dict[str, float] = {}
    gc_steps: dict[str, float] = {}
    clock = GcClock()
    mark, gc_mark = time.perf_counter(), 0.0

    def lap(name: str) -> None:
        nonlocal mark, gc_mark
        now = time.perf_counter()
        steps[name] = round(now - mark, 4)
        if clock.seconds - gc_mark >= 0.001:
            gc_steps[name] = round(clock.seconds - gc_mark, 4)
        mark, gc_mark = now, clock.seconds

    try:
        with clock:
            mark = time.perf_counter()
            data = json.loads(body)
            lap("json_parse")
            batch_in = BatchCreate.model_validate(data)
            lap("pydantic_validate")
            async with state.sessionmaker() as session:
                api_key = await find_key(session, key, pepper=env.settings.secret_key)
                assert api_key is not None
                lap("auth_lookup")
                submitted = await service.submit_batch(
                    session,
                    api_key=api_key,
                    body=batch_in,
                    idempotency_key=None,
                    registry=state.registry,
                    settings=state.settings,
                )
                lap("submit_batch")
                await session.commit()
                lap("commit")
            batch = submitted.batch
            await enqueue_jobs(state, batch.id, batch.priority, submitted.jobs)
            lap("enqueue_jobs")
            totals = repository.BatchTotals({"queued": len(submitted.jobs)}, cost_usd=Decimal(0))
            service.batch_out(submitted.batch, totals).model_dump_json()
            lap("response")
    finally:
        await close_state(state)
    return {
        "steps_s": steps,
        "total_s": round(sum(steps.values()), 4),
        "gc_s_within_steps": gc_steps,
        "gc_total_s": round(clock.seconds, 4),
        "gc_passes_by_generation": clock.passes,
    }


async def _asgi_once(env: BenchEnv, key: str, body: bytes, profile: bool) -> dict[str, Any]:
    """The full app without uvicorn or a socket; with `profile`, under cProfile, whose
    report (top 40 by cumulative time) is written next to the workdir and kept."""
    state = await build_state(env.settings)
    app = create_app(env.settings)
    app.state.darkroom = state
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    profiler = cProfile.Profile()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://asgi") as client:
            began = time.perf_counter()
            with profiler if profile else contextlib.nullcontext():
                response = await client.post("/v1/batches", content=body, headers=headers)
            elapsed = time.perf_counter() - began
            assert response.status_code == 202, response.text
    finally:
        await close_state(state)
    if not profile:
        return {"s": round(elapsed, 4)}
    report = env.workdir.parent / f"darkroom-bench-accept-{env.run_id}.prof.txt"
    with report.open("w") as out:
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(40)
    return {"s": round(elapsed, 4), "cprofile": str(report)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-breakdown", action="store_true")
    parser.add_argument("--no-wait-for-quiet", action="store_true")
    args = parser.parse_args()
    quiet = {} if args.no_wait_for_quiet else wait_for_quiet()

    bodies = [
        json.dumps(batch_body(args.jobs, seed=n)).encode()
        for n in range(args.warmup + args.runs + 4)
    ]
    with bench_env() as env:
        figures = asyncio.run(_measure(env, args, bodies))
    figures["load"] = quiet
    print(json.dumps(figures, indent=2))


async def _measure(env: BenchEnv, args: argparse.Namespace, bodies: list[bytes]) -> dict[str, Any]:
    key = await env.create_api_key()
    json_type = {"content-type": "application/json"}
    requests = [{"content": body, "headers": json_type} for body in bodies]
    runs = await timed_posts(
        env, key, requests[: args.warmup + args.runs], warmup=args.warmup, jobs=args.jobs
    )
    measured = sorted(r["s"] for r in runs if r["kind"] == "measured")
    p50 = statistics.median(measured)
    figures: dict[str, Any] = {
        "benchmark": "accept_batch",
        "jobs": args.jobs,
        "runs": len(measured),
        "warmup_runs": args.warmup,
        "body_bytes": len(bodies[0]),
        "p50_s": round(p50, 4),
        "min_s": round(measured[0], 4),
        "max_s": round(measured[-1], 4),
        "all_s": [round(s, 4) for s in measured],
        "cpu_busy_all_cores_per_run": [r["cpu_busy_all_cores"] for r in runs[args.warmup :]],
        "target_s": TARGET_S,
        "target_met": p50 <= TARGET_S,
        "verified": "every run: 202, COUNT(*) of the batch's jobs == jobs, ZCARD grew by jobs",
    }
    if not args.no_breakdown:
        extra = iter(bodies[args.warmup + args.runs :])
        await _breakdown(env, key, next(extra))  # warm imports and caches
        figures["breakdown"] = await _breakdown(env, key, next(extra))
        figures["asgi_in_process_s"] = (await _asgi_once(env, key, next(extra), False))["s"]
        profiled = await _asgi_once(env, key, next(extra), True)
        figures["cprofile_report"] = profiled["cprofile"]
    figures["machine"] = machine()
    return figures


if __name__ == "__main__":
    main()
