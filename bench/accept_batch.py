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
import hashlib
import io
import json
import pstats
import statistics
import time
import uuid
from typing import Any

import asyncpg
import httpx
from arq.jobs import serialize_job

from bench._harness import BenchEnv, bench_env, log, machine
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
    pg = await asyncpg.connect(_pg_dsn(env))
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    results = []
    try:
        async with httpx.AsyncClient(base_url=base, timeout=120) as client:
            for number, body in enumerate(bodies):
                queued_before = redis.zcard(env.settings.queue_name)
                began = time.perf_counter()
                response = await client.post("/v1/batches", content=body, headers=headers)
                elapsed = time.perf_counter() - began
                if response.status_code != 202:
                    raise RuntimeError(f"POST returned {response.status_code}: {response.text}")
                batch_id = uuid.UUID(response.json()["id"])
                stored = await pg.fetchval("SELECT count(*) FROM jobs WHERE batch_id = $1", batch_id)
                enqueued = redis.zcard(env.settings.queue_name) - queued_before
                if stored != jobs or enqueued != jobs:
                    raise RuntimeError(f"batch {batch_id}: {stored} rows, {enqueued} enqueued")
                kind = "warmup" if number < warmup else "measured"
                log(f"{kind} run {number}: {elapsed:.3f} s, {stored} rows, +{enqueued} queued")
                results.append({"kind": kind, "s": elapsed, "rows": stored, "enqueued": enqueued})
    finally:
        await pg.close()
        redis.close()
    return results


async def _breakdown(env: BenchEnv, key: str, body: bytes) -> dict[str, float]:
    """The submit path of service/batches/endpoints.py, one step at a time."""
    state = await build_state(env.settings)
    steps: dict[str, float] = {}
    mark = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        steps[name] = round(now - mark, 4)
        mark = now

    try:
        data = json.loads(body)
        lap("json_parse")
        batch_in = BatchCreate.model_validate(data)
        lap("pydantic_validate")
        async with state.sessionmaker() as session:
            api_key = await find_key(session, key)
            assert api_key is not None
            lap("auth_lookup")
            digest = hashlib.sha256(batch_in.model_dump_json().encode()).hexdigest()
            lap("request_hash")
            resolved = service._resolve_jobs(batch_in, state.registry, state.settings)
            lap("resolve_jobs")
            now = utcnow()
            batch = Batch(
                id=uuid.uuid4(), api_key_id=api_key.id, name=batch_in.name,
                status=BatchStatus.queued, callback_url=None,
                metadata_=batch_in.metadata or {}, idempotency_key=None,
                request_hash=digest, job_count=len(resolved), created_at=now,
            )
            session.add(batch)
            await session.flush()
            lap("insert_batch_row")
            job_ids = [uuid.uuid4() for _ in resolved]
            rows = [
                repository.job_copy_row(job_id=j, batch_id=batch.id, index=i, now=now, **fields)
                for i, (j, fields) in enumerate(zip(job_ids, resolved, strict=True))
            ]
            lap("build_copy_rows")
            await repository.copy_jobs(session, rows)
            lap("copy_jobs")
            await session.commit()
            lap("commit")
        ids = [str(i) for i in job_ids]
        lap("ids_to_str")
        for job_id in ids:  # the pickling that _enqueue_chunk does, alone
            serialize_job(RUN_JOB, (job_id,), {}, None, 0, serializer=state.redis.job_serializer)
        steps["of_which_enqueue_pickling"] = round(time.perf_counter() - mark, 4)
        mark = time.perf_counter()
        added = await enqueue_run_jobs(state.redis, ids, queue_name=env.settings.queue_name)
        assert added == len(ids)
        lap("enqueue_lua_pipelined")
        out = service.batch_out(
            batch, repository.BatchTotals({"queued": len(ids)}, cost_usd=0)  # type: ignore[arg-type]
        )
        out.model_dump_json()
        lap("response")
    finally:
        await close_state(state)
    steps["total"] = round(
        sum(v for k, v in steps.items() if not k.startswith("of_which")), 4
    )
    return steps


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
        result["cprofile"] = str(env.workdir.parent / f"darkroom-bench-accept-{env.run_id}.prof.txt")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-breakdown", action="store_true")
    args = parser.parse_args()

    bodies = [
        json.dumps(batch_body(args.jobs, seed=n)).encode()
        for n in range(args.warmup + args.runs + 4)
    ]
    with bench_env() as env:
        print(json.dumps(asyncio.run(_measure(env, args, bodies)), indent=2))


async def _measure(env: BenchEnv, args: argparse.Namespace, bodies: list[bytes]) -> dict[str, Any]:
    if True:
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
            "target_s": TARGET_S,
            "target_met": p50 <= TARGET_S,
            "verified": "every run: 202, COUNT(*) of the batch's jobs == jobs, ZCARD grew by jobs",
        }
        if not args.no_breakdown:
            extra = iter(bodies[args.warmup + args.runs :])
            await _breakdown(env, key, next(extra))  # warm this process's imports and pools
            figures["breakdown_s"] = await _breakdown(env, key, next(extra))
            figures["asgi_in_process_s"] = (await _asgi_once(env, key, next(extra), False))["s"]
            profiled = await _asgi_once(env, key, next(extra), True)
            figures["cprofile_report"] = profiled["cprofile"]
        figures["machine"] = machine()
        return figures


if __name__ == "__main__":
    main()
