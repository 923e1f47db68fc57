"""Paid twice, or failed for nothing (issue #7, sections 4 and 4b), measured from outside.

    .venv/bin/python -m bench.duplicates resets     # 10% of creates reset, 2% hung, after
                                                    # the prediction was made: 500 jobs
    .venv/bin/python -m bench.duplicates failures   # 20% of predictions end `failed`,
                                                    # max_attempts 3: 300 jobs
    .venv/bin/python -m bench.duplicates all

`resets`: a create whose connection is reset, or that hangs past the client's timeout,
after the simulator made the prediction, leaves a generation running (and billed) whose
id never came back. `duplicates` is the simulator's count of accepted creates whose
model and input it had accepted before: a second charge for the same job.

`failures`: predictions that end `failed` with transient errors (out of memory, a worker
crash, no reason); `--permanent` makes that share of them say the input can never work
(NSFW, invalid input), which must fail at once. Here every retry is a new create of the
same input, wanted and paid for once per failed generation: the simulator counts those in
`duplicates` too, so in this scenario `duplicates` is the number of retries.

Each scenario runs the simulator and `darkroom worker` processes as bench/dispatch.py
does (bench/_dispatch_env.py), and prints one JSON object (one line) on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

from bench._dispatch_env import REPLICATE_MODEL, DispatchStack, async_bench_env, darkroom_config
from bench._harness import log
from bench._machine import machine
from bench.dispatch import Scenario, code_version, wait_all_final
from simulators import SimConfig

LATENCY = {"kind": "uniform", "low": 0.5, "high": 1.5}
# A Replicate-like account: Darkroom is told the provider's limits.
LIMITS = {"rate_per_s": 20, "burst": 5, "max_concurrent": 40}


def conditional(wanted: dict[str, float]) -> dict[str, float]:
    """The simulator draws fault kinds in turn (reset before hang), each only when the
    ones before were not drawn: the probabilities that give each kind its share."""
    drawn_before, probabilities = 0.0, {}
    for kind, share in wanted.items():
        probabilities[kind] = share / (1 - drawn_before)
        drawn_before += share
    return probabilities


async def run(
    args: argparse.Namespace, name: str, sim: dict[str, Any], jobs: int
) -> dict[str, Any]:
    config = SimConfig.model_validate({"latency": LATENCY, "seed": args.seed, **sim})
    async with async_bench_env(worker_concurrency=args.concurrency) as env:
        stack = DispatchStack(env, config, {"replicate": LIMITS})
        scenario = Scenario(env, stack)
        try:
            await scenario.open(api=False)
            # The account's timeout is what ends a hang; the default 30 s only slows the run.
            text = json.loads(darkroom_config(stack.sim_url, replicate=LIMITS))
            text["providers"]["replicate"]["timeout_s"] = args.timeout_s
            text["models"][REPLICATE_MODEL]["max_attempts"] = args.max_attempts
            stack.config_path.write_text(json.dumps(text, indent=2))
            batch_ids, _ = await scenario.insert(REPLICATE_MODEL, jobs, tag=name)
            stack.sim.reset()
            began = time.time()
            stack.start_workers(args.workers, concurrency=args.concurrency, callbacks=False)
            ended = await wait_all_final(scenario, batch_ids, jobs, timeout_s=args.deadline)
            stats = stack.sim.stats()
            figures = await _attempts(scenario, batch_ids)
            stack.stop_workers()
            problems = stack.log_summary()
        finally:
            await scenario.close()
    creates = stats["creations_accepted"]
    duplicates = stats["duplicate_submissions"]
    return {
        "scenario": name,
        "jobs": jobs,
        "creates": creates,
        "duplicates": duplicates,
        "ratio": round(duplicates / jobs, 4),
        "create_requests": stats["creation_requests"],
        # Pages of GET /v1/predictions fetched by the lookups (one lookup may page).
        "list_requests": stats["requests_by_route"].get("GET /v1/predictions", 0),
        "faults": {kind: n for kind, n in stats["faults"].items() if n},
        **figures,
        "all_final_after_s": round(ended - began, 1),
        "config": {
            "simulator": config.model_dump(exclude_defaults=True),
            "limits": LIMITS,
            "workers": args.workers,
            "concurrency": args.concurrency,
            "timeout_s": args.timeout_s,
            "max_attempts": args.max_attempts,
        },
        "worker_log_problems": problems,
        "machine": machine(),
        "code": scenario.code or code_version(),
    }


async def _attempts(scenario: Scenario, batch_ids: list[Any]) -> dict[str, Any]:
    rows = await scenario.pg.fetch(
        "SELECT j.status, j.attempts, j.error_code, "
        "  (SELECT count(*) FROM job_attempts a WHERE a.job_id = j.id) AS tries, "
        "  (SELECT count(*) FROM job_attempts a WHERE a.job_id = j.id AND a.note IS NOT NULL)"
        "    AS resumed "
        "FROM jobs j WHERE j.batch_id = ANY($1::uuid[])",
        batch_ids,
    )
    outcomes = await scenario.pg.fetch(
        "SELECT a.outcome, a.error_code, count(*) AS n FROM job_attempts a "
        "JOIN jobs j ON j.id = a.job_id WHERE j.batch_id = ANY($1::uuid[]) "
        "GROUP BY 1, 2 ORDER BY 3 DESC",
        batch_ids,
    )
    statuses = Counter(row["status"] for row in rows)
    return {
        "statuses": dict(statuses),
        "succeeded_share": round(statuses["succeeded"] / max(len(rows), 1), 4),
        "failed_by_code": dict(Counter(r["error_code"] for r in rows if r["status"] == "failed")),
        "jobs_by_attempts": dict(sorted(Counter(row["attempts"] for row in rows).items())),
        "attempt_rows": sum(row["tries"] for row in rows),
        "attempts_resumed": sum(row["resumed"] for row in rows),
        "attempt_outcomes": [[r["outcome"], r["error_code"], r["n"]] for r in outcomes],
    }


async def resets(args: argparse.Namespace) -> dict[str, Any]:
    faults = conditional({"reset": 0.10, "hang": 0.02})
    return await run(args, "resets", {**faults, "hang_s": 120}, args.jobs or 500)


async def failures(args: argparse.Namespace) -> dict[str, Any]:
    sim = {"prediction_failed": 0.2, "failed_permanent": args.permanent}
    return await run(args, "failures", sim, args.jobs or 300)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenario", choices=["resets", "failures", "all"])
    parser.add_argument("--jobs", type=int, default=0, help="default: 500 resets, 300 failures")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--timeout-s", type=float, default=5.0, help="the account's timeout")
    parser.add_argument("--max-attempts", type=int, default=3)
    parser.add_argument("--permanent", type=float, default=0.0, help="failures: share permanent")
    parser.add_argument("--seed", type=int, default=20261129)
    parser.add_argument("--deadline", type=float, default=600.0)
    args = parser.parse_args()
    chosen = [resets, failures] if args.scenario == "all" else [globals()[args.scenario]]
    for scenario in chosen:
        result = asyncio.run(scenario(args))
        log(f"{result['scenario']}: {result['duplicates']} duplicates in {result['jobs']} jobs")
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
