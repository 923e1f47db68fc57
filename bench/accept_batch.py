"""How long a 10,000-job batch takes to be accepted: POST /v1/batches to 202, over real HTTP.

Target (issue): 202 returned, every row durable, every job enqueued, in <= 1.0 s on the
2-core machine. The API runs as `python -m service.cli serve` (uvicorn) against a fresh
database and Redis db; after every POST the bench checks that Postgres holds the 10,000
jobs of that batch and that the arq queue grew by 10,000.

Then, in this process, the same call path is replayed step by step with perf_counter
around each step (the code under service/ is called, not changed) to show where the
time goes, and the whole FastAPI app is called once more over ASGI (no socket, no
uvicorn) to separate the HTTP server from the application.

    .venv/bin/python -m bench.accept_batch [--runs 5] [--warmup 1] [--jobs 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import hashlib
import io
import json
import pstats
import statistics
import time
import uuid
from decimal import Decimal
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
from arq.jobs import serialize_job
from sqlalchemy import text

from bench._harness import (
    BenchEnv,
    BusyMeter,
    bench_env,
    log,
    machine,
    pepper_for,
    wait_for_quiet,
)
from bench._payload import batch_body
from service.app import create_app
from service.auth.service import find_key
from service.batches import repository, service
from service.batches.schemas import BatchCreate
from service.jobs.queue import RUN_JOB, enqueue_run_jobs
from service.kit.base import utcnow
from service.models import Batch, BatchStatus
from service.state import build_state, close_state

TARGET_S = 1.0


def _pg_dsn(env: BenchEnv) -> str:
    return env.settings.database_url.replace("postgresql+asyncpg://", "postgresql://")


async def _http_runs(
    env: BenchEnv, key: str, bodies: list[bytes], warmup: int, jobs: int
) -> list[dict[str, Any]]:
    base = env.start_api()
    log(f"API up at {base}")
    redis = env.redis()
    zcard: Any = redis.zcard
    pg = await asyncpg.connect(_pg_dsn(env))
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    results = []
    try:
        async with httpx.AsyncClient(base_url=base, timeout=120) as client:
            for number, body in enumerate(bodies):
                queued_before = zcard(env.settings.queue_name)
                meter = BusyMeter()
                meter.start()
                began = time.perf_counter()
                response = await client.post("/v1/batches", content=body, headers=headers)
                elapsed = time.perf_counter() - began
                busy = meter.stop()
                if response.status_code != 202:
                    raise RuntimeError(f"POST returned {response.status_code}: {response.text}")
                batch_id = uuid.UUID(response.json()["id"])
                stored = await pg.fetchval(
                    "SELECT count(*) FROM jobs WHERE batch_id = $1", batch_id
                )
                enqueued = zcard(env.settings.queue_name) - queued_before
                if stored != jobs or enqueued != jobs:
                    raise RuntimeError(f"batch {batch_id}: {stored} rows, {enqueued} enqueued")
                kind = "warmup" if number < warmup else "measured"
                log(f"{kind} run {number}: {elapsed:.3f} s, {stored} rows, +{enqueued} queued")
                results.append({"kind": kind, "s": elapsed, "cpu_busy_all_cores": busy})
    finally:
        await pg.close()
        redis.close()
    return results


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


# A what-if for the enqueue step: one script call per chunk instead of one per job.
_ENQUEUE_MANY_IF_ABSENT = """
-- KEYS: queue. ARGV: job key prefix, result key prefix, expiry ms, then id, payload
-- pairs, then the score.
local added = 0
local score = tonumber(ARGV[#ARGV])
for i = 1, #ARGV - 4, 2 do
  local id = ARGV[i + 3]
  local job_key = ARGV[1] .. id
  if redis.call('EXISTS', job_key) == 0 and redis.call('EXISTS', ARGV[2] .. id) == 0 then
    redis.call('PSETEX', job_key, ARGV[3], ARGV[i + 4])
    redis.call('ZADD', KEYS[1], score, id)
    added = added + 1
  end
end
return added
"""


async def _enqueue_batched_script(redis: Any, ids: list[str], queue: str) -> int:
    from arq.constants import expires_extra_ms, job_key_prefix, result_key_prefix

    script = redis.register_script(_ENQUEUE_MANY_IF_ABSENT)
    now = int(time.time() * 1000)
    added = 0
    for start in range(0, len(ids), 1_000):
        args: list[Any] = [job_key_prefix, result_key_prefix, expires_extra_ms]
        for job_id in ids[start : start + 1_000]:
            args += [
                job_id,
                serialize_job(RUN_JOB, (job_id,), {}, None, now, serializer=redis.job_serializer),
            ]
        args.append(now)
        added += int(await script(keys=[queue], args=args))
    return added


async def _breakdown(env: BenchEnv, key: str, body: bytes, what_if: bool) -> dict[str, Any]:
    """The submit path of service/batches/endpoints.py, one step at a time, with the
    garbage collector's share of each step."""
    state = await build_state(env.settings)
    async with state.engine.connect() as connection:  # a warm pool, as in the server
        await connection.execute(text("SELECT 1"))
    await state.redis.ping()
    steps: dict[str, float] = {}
    gc_steps: dict[str, float] = {}
    clock = GcClock()
    mark = time.perf_counter()
    gc_mark = 0.0

    def lap(name: str) -> None:
        nonlocal mark, gc_mark
        now = time.perf_counter()
        steps[name] = round(now - mark, 4)
        gc_s = clock.seconds - gc_mark
        if gc_s >= 0.001:
            gc_steps[name] = round(gc_s, 4)
        mark, gc_mark = now, clock.seconds

    result: dict[str, Any] = {}
    try:
        with clock:
            mark = time.perf_counter()
            data = json.loads(body)
            lap("json_parse")
            batch_in = BatchCreate.model_validate(data)
            lap("pydantic_validate")
            async with state.sessionmaker() as session:
                api_key = await find_key(session, key, **pepper_for(find_key, env.settings))
                assert api_key is not None
                lap("auth_lookup")
                digest = hashlib.sha256(batch_in.model_dump_json().encode()).hexdigest()
                lap("request_hash")
                resolved = service._resolve_jobs(batch_in, state.registry, state.settings)
                lap("resolve_jobs")
                now = utcnow()
                batch = Batch(
                    id=uuid.uuid4(),
                    api_key_id=api_key.id,
                    name=batch_in.name,
                    status=BatchStatus.queued,
                    callback_url=None,
                    metadata_=batch_in.metadata or {},
                    idempotency_key=None,
                    request_hash=digest,
                    job_count=len(resolved),
                    created_at=now,
                )
                session.add(batch)
                await session.flush()
                lap("insert_batch_row")
                job_ids = [uuid.uuid4() for _ in resolved]
                rows = [
                    repository.job_copy_row(job_id=j, batch_id=batch.id, index=i, now=now, **f)
                    for i, (j, f) in enumerate(zip(job_ids, resolved, strict=True))
                ]
                lap("build_copy_rows")
                await repository.copy_jobs(session, rows)
                lap("copy_jobs")
                await session.commit()
                lap("commit")
            ids = [str(i) for i in job_ids]
            added = await enqueue_run_jobs(state.redis, ids, queue_name=env.settings.queue_name)
            assert added == len(ids)
            lap("enqueue")
            out = service.batch_out(
                batch, repository.BatchTotals({"queued": len(ids)}, cost_usd=Decimal(0))
            )
            out.model_dump_json()
            lap("response")
        result["steps_s"] = steps
        result["total_s"] = round(sum(steps.values()), 4)
        result["gc_s_within_steps"] = gc_steps
        result["gc_total_s"] = round(clock.seconds, 4)
        result["gc_passes_by_generation"] = clock.passes
        if what_if:
            result["what_if_s"] = await _what_ifs(env, state, body, rows, ids)
    finally:
        await close_state(state)
    return result


async def _what_ifs(
    env: BenchEnv, state: Any, body: bytes, rows: list[tuple[Any, ...]], ids: list[str]
) -> dict[str, float]:
    """Timings of alternatives, to size the suggestions; none of this is in service/."""
    found: dict[str, float] = {}
    gc.collect()
    began = time.perf_counter()
    BatchCreate.model_validate_json(body)
    found["parse_and_validate_with_model_validate_json"] = time.perf_counter() - began

    was = gc.isenabled()
    gc.disable()
    began = time.perf_counter()
    batch_in = BatchCreate.model_validate(json.loads(body))
    resolved = service._resolve_jobs(batch_in, state.registry, state.settings)
    now = utcnow()
    [
        repository.job_copy_row(job_id=uuid.uuid4(), batch_id=uuid.uuid4(), index=i, now=now, **f)
        for i, f in enumerate(resolved)
    ]
    found["parse_validate_resolve_rows_with_gc_off"] = time.perf_counter() - began
    if was:
        gc.enable()
    del batch_in, resolved

    began = time.perf_counter()
    for job_id in ids:
        serialize_job(RUN_JOB, (job_id,), {}, None, 0, serializer=state.redis.job_serializer)
    found["enqueue_pickling_alone"] = time.perf_counter() - began

    fresh = [str(uuid.uuid4()) for _ in ids]
    scratch_queue = f"{env.settings.queue_name}:what-if"
    began = time.perf_counter()
    added = await _enqueue_batched_script(state.redis, fresh, scratch_queue)
    found["enqueue_one_script_call_per_1000_jobs"] = time.perf_counter() - began
    assert added == len(fresh), added
    await state.redis.delete(scratch_queue, *(f"arq:job:{i}" for i in fresh))

    # The same rows into a table with the jobs columns but no index or constraint:
    # what COPY costs without index maintenance (a temp table, gone with the connection).
    async with state.engine.connect() as connection:
        raw = (await connection.get_raw_connection()).driver_connection
        await raw.execute("CREATE TEMP TABLE jobs_unindexed (LIKE jobs)")
        began = time.perf_counter()
        await raw.copy_records_to_table(
            "jobs_unindexed", records=rows, columns=repository.JOB_COPY_COLUMNS
        )
        found["copy_into_unindexed_table"] = time.perf_counter() - began
        await connection.rollback()
    return {k: round(v, 4) for k, v in found.items()}


async def _asgi_once(env: BenchEnv, key: str, body: bytes, profile: bool) -> dict[str, Any]:
    """The full app without uvicorn or a socket; optionally under cProfile."""
    state = await build_state(env.settings)
    app = create_app(env.settings)
    app.state.darkroom = state
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    profiler = cProfile.Profile() if profile else None
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://asgi") as client:
            began = time.perf_counter()
            if profiler:
                profiler.enable()
            response = await client.post("/v1/batches", content=body, headers=headers)
            if profiler:
                profiler.disable()
            elapsed = time.perf_counter() - began
            assert response.status_code == 202, response.text
    finally:
        await close_state(state)
    result: dict[str, Any] = {"s": round(elapsed, 4)}
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
        (env.workdir.parent / f"darkroom-bench-accept-{env.run_id}.prof.txt").write_text(
            text.getvalue()
        )
        result["cprofile"] = str(
            env.workdir.parent / f"darkroom-bench-accept-{env.run_id}.prof.txt"
        )
    return result


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
    runs = await _http_runs(env, key, bodies[: args.warmup + args.runs], args.warmup, args.jobs)
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
        await _breakdown(env, key, next(extra), False)  # warm imports and caches
        figures["breakdown"] = await _breakdown(env, key, next(extra), True)
        figures["asgi_in_process_s"] = (await _asgi_once(env, key, next(extra), False))["s"]
        profiled = await _asgi_once(env, key, next(extra), True)
        figures["cprofile_report"] = profiled["cprofile"]
    figures["machine"] = machine()
    return figures


if __name__ == "__main__":
    main()
