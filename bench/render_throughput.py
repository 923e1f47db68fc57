"""Jobs per second for a 1,000-job batch at 512x512 PNG through the local renderer,
with one worker process (`python -m service.cli worker`), at several concurrencies.

For each DARKROOM_WORKER_CONCURRENCY: a fresh batch is stored and enqueued exactly as
POST /v1/batches does (service.batches.service.submit_batch, commit, enqueue_jobs)
with no worker running; then one worker process starts and the clock runs until the
batch has a final status. Every job must have succeeded and written its file. Then the
worker gets SIGTERM and must exit on its own.

Two figures per run: end_to_end (worker process start -> batch complete, so it includes
the worker's start-up) and steady (first job started -> last job finished, from the
jobs' own timestamps).

    .venv/bin/python -m bench.render_throughput [--jobs 1000] [--concurrency 4 8 16]
        [--poll-delay S]   # DARKROOM_WORKER_POLL_DELAY_S for the worker; default: the setting
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import time
import uuid
from typing import Any

import asyncpg

from bench._harness import BenchEnv, bench_env, log
from bench._machine import BusyMeter, machine, wait_for_quiet
from bench._payload import batch_body
from service.auth.service import find_key
from service.batches import service
from service.batches.schemas import BatchCreate
from service.db import session_scope
from service.jobs.tasks import enqueue_jobs
from service.state import build_state, close_state

FINAL = ("succeeded", "failed", "partially_failed", "cancelled")


async def submit_and_enqueue(
    env: BenchEnv, key: str, body: dict[str, Any], *, expect_backlog: int | None = None
) -> uuid.UUID:
    """Store the batch and enqueue its jobs as POST /v1/batches does, with no worker
    running; `expect_backlog`: the jobs the local account's queue must then hold."""
    state = await build_state(env.settings)
    try:
        async with session_scope(state.sessionmaker) as session:
            api_key = await find_key(session, key, pepper=env.settings.secret_key)
            assert api_key is not None
            submitted = await service.submit_batch(
                session,
                api_key=api_key,
                body=BatchCreate.model_validate(body),
                idempotency_key=None,
                registry=state.registry,
                settings=state.settings,
            )
        batch = submitted.batch
        await enqueue_jobs(state, batch.id, batch.priority, submitted.jobs)
        if expect_backlog is not None:
            backlog = await state.dispatch.queue("local").backlog()
            assert backlog == expect_backlog, backlog
        return batch.id
    finally:
        await close_state(state)


async def wait_until_final(
    env: BenchEnv,
    pg: asyncpg.Connection,
    worker: subprocess.Popen[bytes],
    batch_id: uuid.UUID,
    began: float,
) -> str:
    """The batch's final status, polled every 50 ms; fails if the worker exits first or
    the batch takes more than 600 s from `began`."""
    status = "queued"
    while status not in FINAL:
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited with {worker.returncode}; see {env.workdir}")
        if time.perf_counter() - began > 600:
            raise RuntimeError("batch did not finish in 600 s")
        await asyncio.sleep(0.05)
        status = await pg.fetchval("SELECT status FROM batches WHERE id = $1", batch_id)
    return str(status)


async def _run_once(
    env: BenchEnv, key: str, jobs: int, concurrency: int, seed: int, poll_delay: float
) -> dict[str, Any]:
    body = batch_body(jobs, size=512, fmt="png", seed=seed)
    batch_id = await submit_and_enqueue(env, key, body, expect_backlog=jobs)
    pg = await asyncpg.connect(env.pg_dsn)
    meter = BusyMeter()
    try:
        meter.start()
        began = time.perf_counter()
        extra = {
            "DARKROOM_WORKER_CONCURRENCY": str(concurrency),
            "DARKROOM_WORKER_POLL_DELAY_S": str(poll_delay),
        }
        worker = env.spawn("worker", name=f"worker-c{concurrency}-p{poll_delay}", extra_env=extra)
        status = await wait_until_final(env, pg, worker, batch_id, began)
        elapsed = time.perf_counter() - began
        busy = meter.stop()
        stopped = env.stop(worker)
        row = await pg.fetchrow(
            """SELECT count(*) FILTER (WHERE status = 'succeeded') AS ok,
                      count(*) AS total,
                      extract(epoch FROM max(finished_at) - min(started_at)) AS steady_s,
                      sum(attempts) AS attempts
               FROM jobs WHERE batch_id = $1""",
            batch_id,
        )
    finally:
        await pg.close()
    files = sum(1 for p in (env.settings.storage_dir / str(batch_id)).iterdir() if p.is_file())
    if status != "succeeded" or row["ok"] != jobs or files != jobs:
        raise RuntimeError(f"batch {status}: {row['ok']}/{jobs} succeeded, {files} files")
    if stopped["exit_code"] != 0 or stopped.get("killed_after_timeout"):
        raise RuntimeError(f"worker did not stop cleanly on SIGTERM: {stopped}")
    steady = float(row["steady_s"])
    result = {
        "concurrency": concurrency,
        "poll_delay_s": poll_delay,
        "end_to_end_s": round(elapsed, 3),
        "jobs_per_s_end_to_end": round(jobs / elapsed, 1),
        "steady_s": round(steady, 3),
        "jobs_per_s_steady": round(jobs / steady, 1),
        "attempts": int(row["attempts"]),
        "files_written": files,
        "cpu_busy_all_cores": busy,
        "worker_stop": stopped,
    }
    log(f"concurrency {concurrency}: {result}")
    return result


async def _measure(env: BenchEnv, args: argparse.Namespace) -> list[dict[str, Any]]:
    key = await env.create_api_key()
    poll_delay = args.poll_delay or env.settings.worker_poll_delay_s
    return [
        await _run_once(env, key, args.jobs, concurrency, seed, poll_delay)
        for seed, concurrency in enumerate(args.concurrency)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--no-wait-for-quiet", action="store_true")
    parser.add_argument(
        "--poll-delay",
        type=float,
        help="DARKROOM_WORKER_POLL_DELAY_S for the worker (default: the setting's default)",
    )
    args = parser.parse_args()
    quiet = {} if args.no_wait_for_quiet else wait_for_quiet()
    with bench_env() as env:
        runs = asyncio.run(_measure(env, args))
    print(
        json.dumps(
            {
                "benchmark": "render_throughput",
                "jobs": args.jobs,
                "size": "512x512",
                "format": "png",
                "model": "local/procedural",
                "worker_processes": 1,
                "runs": runs,
                "best_jobs_per_s_end_to_end": max(r["jobs_per_s_end_to_end"] for r in runs),
                "load": quiet,
                "machine": machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
