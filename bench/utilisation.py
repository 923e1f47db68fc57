"""Utilisation whether or not callbacks come (issue #7): #3's two utilisation scenarios
and a wide latency distribution, each with the provider's completion callbacks arriving,
requested but never sent, and not requested.

    .venv/bin/python -m bench.utilisation rate          # 20/s, concurrency 30, 1 s, 600 jobs
    .venv/bin/python -m bench.utilisation concurrency   # concurrency 10, 1 s, 400 jobs
    .venv/bin/python -m bench.utilisation lognormal     # concurrency 10, median 2 s, p95 10 s
    .venv/bin/python -m bench.utilisation all           # --setups arriving lost off (default)

Set-ups:
- arriving: `darkroom serve` runs, the workers have DARKROOM_CALLBACK_URL pointing at it,
  the simulator sends its webhooks;
- lost: the same, but the simulator drops every webhook (SimConfig.webhooks = false), as
  when the callback URL is not reachable from the provider;
- off: no DARKROOM_CALLBACK_URL, no API: polls only.

The ceiling is measured in the same run: min(rate limit, max_concurrent / mean latency),
with the latency each prediction really took at the provider (its created_at to its
completed_at, read back from the simulator after the run). The achieved rate is the
predictions created per second over the steady window (the span of creations minus
--trim seconds at each end), and the slots' busy share is the time-average of the
predictions running at the provider over that window, divided by max_concurrent.
Everything else (the stack, the harness) is bench.dispatch's.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from bench._dispatch_env import (
    REPLICATE_MODEL,
    SIM_TOKEN,
    CpuAccount,
    DispatchStack,
    async_bench_env,
    epoch,
    job_figures,
)
from bench._harness import log
from bench._machine import wait_for_quiet
from bench.dispatch import FIXED_1S, Scenario, disturbed, emit, r, sim_rates, wait_all_final
from simulators import SimConfig

SETUPS = ("arriving", "lost", "off")
# Lognormal with median 2 s and p95 10 s: sigma = ln(5) / z(0.95).
LOGNORMAL = {"kind": "lognormal", "median": 2.0, "sigma": math.log(5) / 1.6449}


@dataclass(frozen=True)
class Case:
    name: str
    sim: dict[str, Any]
    jobs: int
    target: str  # "ratio": achieved >= 97 % of the ceiling; "busy": slots >= 90 % busy

    @property
    def limits(self) -> dict[str, Any]:
        return {k: self.sim[k] for k in ("rate_per_s", "burst", "max_concurrent")}


CASES = {
    "rate": Case(
        "rate",
        {"rate_per_s": 20, "burst": 1, "max_concurrent": 30, "latency": FIXED_1S, "seed": 1},
        600,
        "ratio",
    ),
    "concurrency": Case(
        "concurrency",
        {"rate_per_s": 50, "burst": 1, "max_concurrent": 10, "latency": FIXED_1S, "seed": 2},
        400,
        "ratio",
    ),
    "lognormal": Case(
        "lognormal",
        {"rate_per_s": 50, "burst": 1, "max_concurrent": 10, "latency": LOGNORMAL, "seed": 3},
        400,
        "busy",
    ),
}


async def predictions(
    sim_url: str, pg: Any, batch_ids: list[uuid.UUID]
) -> list[tuple[float, float, float, float]]:
    """(claimed, created, completed, recorded) of every prediction the run made: the
    middle two from the simulator, the others from the job's row."""
    rows = await pg.fetch(
        """SELECT a.remote_id, j.started_at, j.finished_at
           FROM job_attempts a JOIN jobs j ON j.id = a.job_id
           WHERE j.batch_id = ANY($1) AND a.remote_id IS NOT NULL""",
        batch_ids,
    )
    headers = {"authorization": f"Bearer {SIM_TOKEN}"}
    limit = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=sim_url, headers=headers, timeout=30) as client:

        async def one(row: Any) -> tuple[float, float, float, float] | None:
            async with limit:
                body = (await client.get(f"/v1/predictions/{row['remote_id']}")).json()
            created, completed = body.get("created_at"), body.get("completed_at")
            if not created or not completed:
                return None
            claimed, recorded = epoch(row["started_at"]), epoch(row["finished_at"])
            return claimed or math.nan, _ts(created), _ts(completed), recorded or math.nan

        found = await asyncio.gather(*(one(row) for row in rows))
    return [span for span in found if span is not None]


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def provider_figures(
    rows: list[tuple[float, float, float, float]], case: Case, trim: float
) -> dict[str, Any]:
    """Achieved rate, ceiling and busy share over the steady window, from the spans."""
    spans = [(c, d) for _, c, d, _ in rows]
    created = sorted(c for c, _ in spans)
    start, end = created[0] + trim, created[-1] - trim
    if end - start < 1:
        start, end = created[0], created[-1]
    length = end - start
    latency = statistics.fmean(d - c for c, d in spans)
    max_conc = case.sim["max_concurrent"]
    ceiling = min(float(case.sim["rate_per_s"]), max_conc / latency)
    achieved = sum(1 for c in created if start <= c < end) / length
    busy = sum(max(0.0, min(d, end) - max(c, start)) for c, d in spans) / length
    return {
        "steady_window_s": r(length),
        "latency_mean_s": r(latency),
        "latency_p50_s": r(statistics.median(d - c for c, d in spans)),
        "ceiling_per_s": r(ceiling),
        "achieved_per_s": r(achieved),
        "ratio_to_ceiling": r(achieved / ceiling),
        "slots_busy_mean": r(busy),
        "slots_busy_share": r(busy / max_conc),
        # Where a slot's time goes besides the generation (latest attempt of each job):
        "claim_to_create_mean_s": r(statistics.fmean(c - a for a, c, _, _ in rows)),
        "complete_to_recorded_mean_s": r(statistics.fmean(f - d for _, _, d, f in rows)),
    }


async def run_case(args: argparse.Namespace, case: Case, setup: str) -> dict[str, Any]:
    quiet = {} if args.no_wait_for_quiet else wait_for_quiet(args.quiet_wait)
    sim_config = SimConfig(**case.sim, webhooks=setup != "lost")
    api = setup != "off"
    jobs = args.jobs or case.jobs
    async with async_bench_env(worker_concurrency=args.concurrency) as env:
        stack = DispatchStack(env, sim_config, {"replicate": case.limits})
        scenario = Scenario(env, stack)
        try:
            await scenario.open(api=api)
            assert scenario.state is not None
            batch_ids, _ = await scenario.insert(REPLICATE_MODEL, jobs)
            stack.sim.reset()
            t0 = time.time()
            cpu = CpuAccount()
            cpu.start()
            stack.start_workers(args.workers, concurrency=args.concurrency, callbacks=api)
            t_final = await wait_all_final(scenario, batch_ids, jobs, timeout_s=args.timeout)
            load = cpu.stop()
            stats = stack.sim.stats()
            figures = await job_figures(scenario.pg, batch_ids)
            spans = await predictions(stack.sim_url, scenario.pg, batch_ids)
            callbacks = await scenario.state.dispatch.callbacks.status("replicate")
            account = await scenario.state.dispatch.latencies.account_profile("replicate")
            stops = stack.stop_workers()
            problems = stack.log_summary()
        finally:
            await scenario.close()
    provider = provider_figures(spans, case, args.trim)
    peak = stats["concurrency_peak"]["replicate"]
    limit_rate = min(
        case.sim["rate_per_s"], case.sim["max_concurrent"] / provider["latency_mean_s"]
    )
    met = (
        (provider["ratio_to_ceiling"] or 0) >= 0.97
        if case.target == "ratio"
        else (provider["slots_busy_share"] or 0) >= 0.90
    )
    result = {
        "scenario": f"utilisation-{case.name}-{setup}",
        "callbacks": setup,
        "jobs": jobs,
        "worker_processes": args.workers,
        "worker_concurrency": args.concurrency,
        "simulator": sim_config.model_dump(
            include={"rate_per_s", "burst", "max_concurrent", "latency", "webhooks"}
        ),
        **provider,
        "target": "ratio_to_ceiling >= 0.97"
        if case.target == "ratio"
        else "slots_busy_share >= 0.90",
        "rate_limited_total": stats["rate_limited"],
        "rate_limited_by_cause": stats["rate_limited_by_cause"],
        "concurrency_peak": peak,
        "concurrency_limit": case.sim["max_concurrent"],
        "targets_met": {
            case.target: met,
            "zero_429": stats["rate_limited"] == 0,
            "peak_concurrency": peak <= case.sim["max_concurrent"],
        },
        "simulator_window": {
            k: v
            for k, v in sim_rates(stats, int(args.trim), limit_rate).items()
            if not k.endswith("per_second")
        },
        "jobs_per_s_from_worker_spawn": r(jobs / (t_final - t0)),
        "correct": {
            "jobs_by_status": figures["by_status"],
            "duplicate_submissions": stats["duplicate_submissions"],
            "webhooks_sent": stats["webhooks_sent"],
            "polls": stats["requests_by_route"].get("GET /v1/predictions/{prediction_id}", 0),
        },
        "darkroom": {
            "latency_p50_s": r(account.p50) if account else None,
            "latency_p90_s": r(account.p90) if account else None,
            "callbacks_arriving": callbacks.arriving,
            "callbacks_missing": callbacks.missing,
            "completed_by_polls": callbacks.completed_by_polls,
        },
        "worker_stops": stops,
        "worker_logs": problems,
        "load": {**quiet, **load, "disturbed": disturbed(load)},
        "code": scenario.code,
    }
    log(
        f"{case.name}/{setup}: {provider['achieved_per_s']}/s of {provider['ceiling_per_s']} "
        f"({provider['ratio_to_ceiling']}), busy {provider['slots_busy_share']}, "
        f"429s {stats['rate_limited']}, peak {peak}, load {load}"
    )
    return result


def case_main(
    doc: str,
    cases: Mapping[str, Any],
    setups: Sequence[str],
    run_case: Callable[[argparse.Namespace, Any, str], Awaitable[dict[str, Any]]],
    *,
    jobs_help: str,
) -> None:
    """The command line of the utilisation benchmarks: a case (or all), its setups, the
    load; one JSON line per case and setup."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("case", choices=[*cases, "all"])
    parser.add_argument("--setups", nargs="+", choices=setups, default=list(setups))
    parser.add_argument("--jobs", type=int, default=0, help=jobs_help)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--trim", type=float, default=3, help="seconds cut at each end")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--no-wait-for-quiet", action="store_true")
    parser.add_argument("--quiet-wait", type=float, default=120)
    args = parser.parse_args()

    async def run() -> None:
        names = list(cases) if args.case == "all" else [args.case]
        for name in names:
            for setup in args.setups:
                emit(await run_case(args, cases[name], setup))

    asyncio.run(run())


def main() -> None:
    case_main(__doc__ or "", CASES, SETUPS, run_case, jobs_help="default: the issue's figure")


if __name__ == "__main__":
    main()
