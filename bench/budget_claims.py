"""What atomic budgets cost dispatch: the same batch run with no budget, then under a key's
daily budget and an account's monthly budget (every claim then locks and updates their
ledger rows in Postgres), alternating, on one worker process.

Small images (64x64 PNG on a local-renderer model priced $0.001 per image) keep rendering
cheap, so claims and outcomes (where the budget work is) are most of the time: this is the
worst case for the ledgers. The budgets are large enough never to refuse a job. Figure:
jobs/s of budgeted runs over jobs/s of unbudgeted runs in the same process (the ceiling).

    .venv/bin/python -m bench.budget_claims [--jobs 2000] [--rounds 2] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench._harness import BenchEnv, bench_env, log
from bench._machine import BusyMeter, machine, wait_for_quiet
from bench._payload import batch_body
from bench.render_throughput import submit_and_enqueue, wait_until_final
from service.auth.service import find_key
from service.db import session_scope
from service.models import KeyBudget
from service.state import build_state, close_state

MODEL = "tiny"
CONFIG = """
providers:
  local: {kind: local, limits: {max_concurrent: 64}}
models:
  tiny: {provider: local, ref: procedural, price: {per_image: 0.001}}
budgets:
  accounts: {local: {monthly_usd: 900000}}
"""


async def _run(
    env: BenchEnv, keys: dict[bool, str], jobs: int, seed: int, budgeted: bool, concurrency: int
) -> dict[str, Any]:
    body = batch_body(jobs, size=64, fmt="png", seed=seed)
    body["defaults"]["model"] = MODEL
    batch_id = await submit_and_enqueue(env, keys[budgeted], body)
    pg = await asyncpg.connect(env.pg_dsn)
    meter = BusyMeter()
    try:
        meter.start()
        began = time.perf_counter()
        # The account budget applies only to budgeted runs: unbudgeted ones use a config
        # without it (the same model and price).
        config = env.workdir / ("budgeted.yaml" if budgeted else "plain.yaml")
        extra = {"DARKROOM_WORKER_CONCURRENCY": str(concurrency), "DARKROOM_CONFIG": str(config)}
        worker = env.spawn("worker", name=f"worker-{seed}", extra_env=extra)
        status = await wait_until_final(env, pg, worker, batch_id, began)
        busy = meter.stop()
        env.stop(worker)
        row = await pg.fetchrow(
            """SELECT count(*) FILTER (WHERE status = 'succeeded') AS ok,
                      extract(epoch FROM max(finished_at) - min(started_at)) AS steady_s,
                      sum(cost_usd) AS cost
               FROM jobs WHERE batch_id = $1""",
            batch_id,
        )
        ledgers = await pg.fetch("SELECT scope, reserved_usd FROM budget_ledgers ORDER BY scope")
    finally:
        await pg.close()
    if status != "succeeded" or row["ok"] != jobs:
        raise RuntimeError(f"batch {status}: {row['ok']}/{jobs} succeeded")
    steady = float(row["steady_s"])
    result = {
        "budgeted": budgeted,
        "jobs_per_s_steady": round(jobs / steady, 1),
        "steady_s": round(steady, 3),
        "cost_usd": str(row["cost"]),
        "ledgers": {
            r["scope"].split(":")[0] + ":" + r["scope"].split(":")[-1]: str(r["reserved_usd"])
            for r in ledgers
        },
        "cpu_busy_all_cores": busy,
    }
    log(f"{'budgeted' if budgeted else 'plain'}: {result}")
    return result


async def _measure(env: BenchEnv, args: argparse.Namespace) -> list[dict[str, Any]]:
    (env.workdir / "budgeted.yaml").write_text(CONFIG)
    (env.workdir / "plain.yaml").write_text(CONFIG.split("budgets:")[0])
    keys = {False: await env.create_api_key("plain"), True: await env.create_api_key("budgeted")}
    state = await build_state(env.settings)
    try:
        async with session_scope(state.sessionmaker) as session:
            found = await find_key(session, keys[True], pepper=env.settings.secret_key)
            assert found is not None
            session.add(KeyBudget(api_key_id=found.id, daily_usd=900000, monthly_usd=900000))
    finally:
        await close_state(state)
    env.settings.config = Path(env.workdir / "budgeted.yaml")
    runs = []
    for n in range(args.rounds):
        for budgeted in (False, True):
            runs.append(
                await _run(env, keys, args.jobs, 2 * n + budgeted, budgeted, args.concurrency)
            )
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-wait-for-quiet", action="store_true")
    args = parser.parse_args()
    quiet = {} if args.no_wait_for_quiet else wait_for_quiet()
    with bench_env() as env:
        runs = asyncio.run(_measure(env, args))
    plain = statistics.median(r["jobs_per_s_steady"] for r in runs if not r["budgeted"])
    budgeted = statistics.median(r["jobs_per_s_steady"] for r in runs if r["budgeted"])
    print(
        json.dumps(
            {
                "benchmark": "budget_claims",
                "jobs": args.jobs,
                "size": "64x64",
                "worker_processes": 1,
                "worker_concurrency": args.concurrency,
                "runs": runs,
                "plain_jobs_per_s": plain,
                "budgeted_jobs_per_s": budgeted,
                "ratio_budgeted_to_plain": round(budgeted / plain, 3),
                "load": quiet,
                "machine": machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
