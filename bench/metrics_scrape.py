"""How long a Prometheus scrape of GET /metrics takes with 50 configured accounts.

Realistic state behind it:
- 50 provider accounts (the built-in renderer's kind, so nothing is contacted), 4 models
  each (200 models), every account rate- and concurrency-limited;
- Postgres: --jobs jobs (default 200,000) over 400 batches in every state, with 1.2
  attempts each on average (the scrape runs one GROUP BY over each table);
- Redis: every account with a backlog in both priorities (20 batches' flows each, a
  few hundred jobs waiting out a backoff), slots held, and a limiter cut by 429s;
- the multiprocess folder holding what 4 worker processes recorded for every account
  (provider latencies by operation and outcome, 429s, limiter waits, deliveries).

The API runs as `python -m service.cli serve` (uvicorn, multiprocess mode under its
data dir). Scrapes are made one after another over real HTTP; p50/p99 are of the whole
request as Prometheus sees it.

    .venv/bin/python -m bench.metrics_scrape [--scrapes 300] [--jobs 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench._harness import BenchEnv, bench_env, free_port, log
from bench._machine import machine, wait_for_quiet
from service.dispatch.queue import AccountKeys
from service.metrics.multiproc import ENV as MULTIPROC_ENV
from service.models import Priority

ACCOUNTS = 50
MODELS_PER_ACCOUNT = 4
BATCHES = 400
WORKER_PROCESSES = 4
FLOWS_PER_ACCOUNT = 20
FLOW_LENGTH = 100
DELAYED_PER_ACCOUNT = 200
STATES = ("succeeded", "succeeded", "succeeded", "failed", "cancelled", "queued", "running")


def account(n: int) -> str:
    return f"acct-{n:02d}"


def model(n: int, m: int) -> str:
    return f"model-{n:02d}-{m}"


def config_text() -> str:
    providers = {
        account(n): {
            "kind": "local",
            "limits": {"rate_per_s": 10 + n, "burst": 5, "max_concurrent": 20},
        }
        for n in range(ACCOUNTS)
    }
    models = {
        model(n, m): {"provider": account(n), "ref": "procedural", "price": {"per_image": 0.002}}
        for n in range(ACCOUNTS)
        for m in range(MODELS_PER_ACCOUNT)
    }
    return json.dumps({"providers": providers, "models": models})


async def fill_postgres(env: BenchEnv, jobs: int) -> None:
    await env.create_api_key()
    pg = await asyncpg.connect(env.pg_dsn)
    models = [model(n, m) for n in range(ACCOUNTS) for m in range(MODELS_PER_ACCOUNT)]
    try:
        key_id = await pg.fetchval("SELECT id FROM api_keys LIMIT 1")
        per_batch = jobs // BATCHES
        await pg.execute(
            """
            INSERT INTO batches (id, api_key_id, status, metadata, job_count, priority,
                                 created_at)
            SELECT gen_random_uuid(), $1, 'running', '{}'::jsonb, $2,
                   CASE WHEN b % 10 = 0 THEN 'realtime' ELSE 'bulk' END, now()
            FROM generate_series(1, $3) AS b
            """,
            key_id,
            per_batch,
            BATCHES,
        )
        await pg.execute(
            """
            INSERT INTO jobs (id, batch_id, index, status, prompt, model, params, metadata,
                              attempts, tries, cost_usd, created_at, updated_at)
            SELECT gen_random_uuid(), b.id, i, ($2::text[])[1 + (i % array_length($2, 1))],
                   'a prompt', ($3::text[])[1 + ((i + b.n) % array_length($3, 1))],
                   '{}'::jsonb, '{}'::jsonb, 1, 1, 0.002, now(), now()
            FROM (SELECT id, row_number() OVER () AS n FROM batches) AS b,
                 generate_series(0, $1 - 1) AS i
            """,
            per_batch,
            list(STATES),
            models,
        )
        # 1.2 attempts per job: every job one, every fifth a second (a 429 or a retry).
        await pg.execute(
            """
            INSERT INTO job_attempts (id, job_id, number, provider, model, cost_usd,
                                      started_at, finished_at, outcome)
            SELECT gen_random_uuid(), j.id, n, 'acct', j.model,
                   CASE WHEN n = 1 THEN 0.002 ELSE 0 END, now(), now(), 'succeeded'
            FROM jobs AS j, generate_series(1, 2) AS n
            WHERE n = 1 OR j.index % 5 = 0
            """
        )
        await pg.execute("ANALYZE")
        counts = await pg.fetchrow(
            "SELECT (SELECT count(*) FROM jobs) AS jobs, "
            "(SELECT count(*) FROM job_attempts) AS attempts"
        )
        log(f"postgres: {counts['jobs']} jobs, {counts['attempts']} attempts")
    finally:
        await pg.close()


def fill_redis(env: BenchEnv) -> None:
    redis = env.redis()
    now = int(time.time() * 1000)
    pipe = redis.pipeline(transaction=False)
    for n in range(ACCOUNTS):
        keys = AccountKeys(account(n))
        for f in range(FLOWS_PER_ACCOUNT):
            batch = f"batch-{f}"
            ring = keys.ring(Priority.realtime if f % 5 == 0 else Priority.bulk)
            pipe.rpush(ring, batch)
            pipe.rpush(keys.flow(batch), *[f"job-{n}-{f}-{j}" for j in range(FLOW_LENGTH)])
        pipe.zadd(
            keys.delayed,
            {f"bulk|batch-x|delayed-{n}-{d}": now + 60_000 for d in range(DELAYED_PER_ACCOUNT)},
        )
        pipe.zadd(keys.slots, {f"held-{n}-{s}": now + 60_000 for s in range(1 + n % 20)})
        pipe.hset(keys.limiter, mapping={"rate": 7.5, "blocked_until": now + 500, "grants": 10})
    pipe.execute()
    redis.close()


# What one worker process records in a day: a synchronous account generates, an
# asynchronous one submits and polls; both meet 429s and the odd retryable error.
WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from service.metrics import multiproc
    multiproc.prepare(Path(sys.argv[1]))
    from service.metrics import recorded
    from service.providers.base import ProviderRateLimited, ProviderRetryableError
    sync = [None, ProviderRateLimited("slow"), ProviderRetryableError("x", "y")]
    remote = [("submit", None), ("submit", ProviderRateLimited("slow")), ("poll", None),
              ("poll", ProviderRetryableError("x", "y"))]
    for n in range(int(sys.argv[2])):
        account = f"acct-{n:02d}"
        calls = [("generate", e) for e in sync] if n % 2 == 0 else remote
        for operation, error in calls:
            try:
                with recorded.provider_request(account, operation):
                    if error is not None:
                        raise error
            except Exception:
                pass
        with recorded.rate_token_wait(account):
            pass
    for sink in ("webhook", "writeback"):
        for delivered in (True, False):
            recorded.delivery(sink, delivered, False, 0.2)
    for route in ("/v1/batches", "/v1/batches/{batch_id}", "/v1/jobs/{job_id}", "/metrics"):
        for status in (200, 404):
            recorded.http_request(route, "GET", status, 0.01)
    """
)


def fill_multiproc_dir(env: BenchEnv) -> None:
    """What worker processes would have recorded, in the folder `serve` will read."""
    child_env = {k: v for k, v in env.env.items() if k != MULTIPROC_ENV}
    for _ in range(WORKER_PROCESSES):
        subprocess.run(
            [sys.executable, "-c", WRITER, str(env.settings.data_dir), str(ACCOUNTS)],
            env=child_env,
            check=True,
            timeout=120,
        )


def scrape_times(base: str, scrapes: int) -> tuple[list[float], dict[str, Any]]:
    times: list[float] = []
    with httpx.Client(base_url=base, timeout=30) as client:
        for _ in range(5):  # warm up: connections, the first queries' plans
            client.get("/metrics").raise_for_status()
        body = ""
        for _ in range(scrapes):
            began = time.perf_counter()
            response = client.get("/metrics")
            times.append(time.perf_counter() - began)
            response.raise_for_status()
            body = response.text
    lines = [line for line in body.splitlines() if line and not line.startswith("#")]
    shape = {
        "series": len(lines),
        "bytes": len(body.encode()),
        "darkroom_series": sum(1 for line in lines if line.startswith("darkroom_")),
    }
    return times, shape


def start_api(env: BenchEnv, timeout_s: float = 300.0) -> str:
    """The harness's start_api, with room for a loaded machine's slow imports."""
    port = free_port()
    child = env.spawn("serve", "--port", str(port), name="api")
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.poll() is not None:
            log((env.workdir / "api.log").read_text(errors="replace")[-3000:])
            raise RuntimeError(f"the API exited with {child.returncode}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the API was not ready in {timeout_s:.0f} s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def prepare(env: BenchEnv, jobs: int) -> None:
    config = env.workdir / "darkroom.yaml"
    config.write_text(config_text())
    os.environ["DARKROOM_CONFIG"] = str(config)  # read by the API the harness starts
    await fill_postgres(env, jobs)
    fill_redis(env)
    fill_multiproc_dir(env)


async def breakdown(env: BenchEnv, rounds: int = 20) -> dict[str, float]:
    """Where a scrape's time goes, measured in this process: the two sources (read
    concurrently by a scrape) and the rendering of the multiprocess folder."""
    from service.metrics import snapshot
    from service.metrics.exposition import render
    from service.state import build_state, close_state

    settings = env.settings.model_copy(update={"config": Path(os.environ["DARKROOM_CONFIG"])})
    state = await build_state(settings)
    timings: dict[str, list[float]] = {"postgres": [], "redis": [], "render": []}
    try:
        current = await snapshot.read(state)
        folder = str(env.settings.data_dir / "metrics")
        for _ in range(rounds):
            for name, work in (
                ("postgres", snapshot._read_postgres(state)),
                ("redis", snapshot._read_redis(state)),
            ):
                began = time.perf_counter()
                await work
                timings[name].append(time.perf_counter() - began)
            began = time.perf_counter()
            render(current, folder)
            timings["render"].append(time.perf_counter() - began)
    finally:
        await close_state(state)
    return {f"{name}_p50_ms": round(statistics.median(t) * 1000, 2) for name, t in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scrapes", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=200_000)
    args = parser.parse_args()
    with bench_env() as env:
        asyncio.run(prepare(env, args.jobs))
        base = start_api(env)
        log(f"API up at {base}; scraping {args.scrapes} times")
        quiet = wait_for_quiet(max_wait_s=60)
        times, shape = scrape_times(base, args.scrapes)
        parts = asyncio.run(breakdown(env))
    print(
        json.dumps(
            {
                "bench": "metrics_scrape",
                "accounts": ACCOUNTS,
                "models": ACCOUNTS * MODELS_PER_ACCOUNT,
                "jobs": args.jobs,
                "worker_files": WORKER_PROCESSES,
                "scrapes": args.scrapes,
                "p50_ms": round(statistics.median(times) * 1000, 2),
                "p99_ms": round(percentile(times, 0.99) * 1000, 2),
                "max_ms": round(max(times) * 1000, 2),
                "mean_ms": round(statistics.fmean(times) * 1000, 2),
                **shape,
                "in_process_breakdown": parts,
                "machine": machine(),
                "load": quiet,
            }
        )
    )


if __name__ == "__main__":
    main()
