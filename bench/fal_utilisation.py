"""Utilisation of a fal account (issue 9): fal queues work, so the account has a rate and
no concurrency limit, and the work waits in fal's queue rather than in Darkroom's.

    .venv/bin/python -m bench.fal_utilisation rate       # 20/s, fal runs 30 at once, 1 s each
    .venv/bin/python -m bench.fal_utilisation runners    # 50/s, fal runs 10 at once, 1 s each
    .venv/bin/python -m bench.fal_utilisation all --setups polls callbacks

The fal simulator (simulators.fal, its own process) plays fal: its `concurrency` is how
many of this account's requests fal runs at once, `run_s` how long each takes. The
ceiling is min(rate_per_s, runners / mean run time), with the run times the simulator
really measured; the achieved rate is the requests fal completed per second over the
steady window (the span of completions minus --trim seconds at each end), and the
runners' busy share is the time-average of requests running at fal over that window,
divided by the runners. Set-ups: "polls" (no callback URL) and "callbacks" (`darkroom
serve` runs, fal's signed webhooks come back to it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench._dispatch_env import (
    SIM_TOKEN,
    SIM_TOKEN_ENV,
    CpuAccount,
    DispatchStack,
    async_bench_env,
    job_figures,
)
from bench._harness import free_port, log
from bench._machine import wait_for_quiet
from bench.dispatch import Scenario, disturbed, r, wait_all_final
from bench.utilisation import case_main
from simulators import SimConfig
from simulators.runner import ROOT, wait_until_answering

FAL_MODEL = "flux-fal"
SETUPS = ("polls", "callbacks")


@dataclass(frozen=True)
class Case:
    name: str
    rate_per_s: float
    runners: int
    run_s: float
    jobs: int


CASES = {
    "rate": Case("rate", rate_per_s=20, runners=30, run_s=1.0, jobs=600),
    "runners": Case("runners", rate_per_s=50, runners=10, run_s=1.0, jobs=400),
}


def fal_config(sim_url: str, rate_per_s: float) -> str:
    config = {
        "providers": {
            "fal": {
                "kind": "fal",
                "base_url": sim_url,
                "token_env": SIM_TOKEN_ENV,
                "webhook_jwks_url": f"{sim_url}/.well-known/jwks.json",
                "limits": {"rate_per_s": rate_per_s},
                "timeout_s": 30,
            }
        },
        "models": {FAL_MODEL: {"provider": "fal", "ref": "fal-ai/flux/dev"}},
    }
    return json.dumps(config, indent=2)  # JSON is YAML


@dataclass
class FalStack(DispatchStack):
    """DispatchStack with the fal simulator and one fal account instead of Replicate's."""

    case: Case = CASES["rate"]
    sim_settings: dict[str, Any] = field(default_factory=dict)

    def start(self, *, api: bool) -> None:
        port = free_port()
        self.sim_url = f"http://127.0.0.1:{port}"
        settings = {"api_keys": [SIM_TOKEN], "concurrency": self.case.runners}
        settings |= {"run_s": self.case.run_s, "webhook_retries": 3} | self.sim_settings
        command = [sys.executable, "-m", "simulators.fal", "--port", str(port)]
        command += ["--config", json.dumps(settings)]
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
        self.sim_process = process
        wait_until_answering(self.sim_url, 20, alive=lambda: process.poll() is None)
        log(f"fal simulator at {self.sim_url}: {settings}")
        self.config_path.write_text(fal_config(self.sim_url, self.case.rate_per_s))
        self.env.settings.config = self.config_path
        os.environ[SIM_TOKEN_ENV] = SIM_TOKEN
        if api:
            self.start_api()

    def start_api(self) -> str:
        try:
            return super().start_api()
        except RuntimeError:
            api_log = self.env.workdir / "api.log"
            if api_log.exists():
                log("api.log: " + api_log.read_text(errors="replace")[-3000:])
            raise


def fal_figures(requests: list[dict[str, Any]], case: Case, trim: float) -> dict[str, Any]:
    """Achieved rate, ceiling, runners' busy share and fal's queue, from the simulator's
    own times of every request (queued, started, completed)."""
    spans = [
        (t["queued"], t["started"], t["completed"])
        for t in (item["times"] for item in requests)
        if "started" in t and "completed" in t
    ]
    completed = sorted(c for _, _, c in spans)
    start, end = completed[0] + trim, completed[-1] - trim
    if end - start < 1:
        start, end = completed[0], completed[-1]
    length = end - start
    run = statistics.fmean(c - s for _, s, c in spans)
    ceiling = min(case.rate_per_s, case.runners / run)
    achieved = sum(1 for c in completed if start <= c < end) / length
    busy = sum(max(0.0, min(c, end) - max(s, start)) for _, s, c in spans) / length
    queued = sorted(q for q, _, _ in spans)
    return {
        "steady_window_s": r(length),
        "run_mean_s": r(run),
        "ceiling_per_s": r(ceiling),
        "achieved_per_s": r(achieved),
        "ratio_to_ceiling": r(achieved / ceiling),
        "runners_busy_mean": r(busy),
        "runners_busy_share": r(busy / case.runners),
        "submitted_per_s": r(len(queued) / max(1e-9, queued[-1] - queued[0])),
        "fal_queue_wait_mean_s": r(statistics.fmean(s - q for q, s, _ in spans)),
        "fal_queue_depth_max": deepest_queue(spans),
    }


def deepest_queue(spans: list[tuple[float, float, float]]) -> int:
    events = sorted([(q, 1) for q, _, _ in spans] + [(s, -1) for _, s, _ in spans])
    depth = deepest = 0
    for _, step in events:
        depth += step
        deepest = max(deepest, depth)
    return deepest


async def run_case(args: argparse.Namespace, case: Case, setup: str) -> dict[str, Any]:
    quiet = {} if args.no_wait_for_quiet else wait_for_quiet(args.quiet_wait)
    api = setup == "callbacks"
    jobs = args.jobs or case.jobs
    async with async_bench_env(worker_concurrency=args.concurrency) as env:
        stack = FalStack(env, SimConfig(), {}, case=case)
        scenario = Scenario(env, stack)
        try:
            await scenario.open(api=api)
            batch_ids, _ = await scenario.insert(FAL_MODEL, jobs)
            t0 = time.time()
            cpu = CpuAccount()
            cpu.start()
            stack.start_workers(args.workers, concurrency=args.concurrency, callbacks=api)
            t_final = await wait_all_final(
                scenario, batch_ids, jobs, timeout_s=args.timeout, account="fal"
            )
            load = cpu.stop()
            async with httpx.AsyncClient(base_url=stack.sim_url, timeout=60) as client:
                requests = (await client.get("/_sim/state")).json()
                stats = (await client.get("/_sim/stats")).json()
            figures = await job_figures(scenario.pg, batch_ids)
            stops = stack.stop_workers()
            problems = stack.log_summary()
        finally:
            await scenario.close()
    fal = fal_figures(requests, case, args.trim)
    result = {
        "scenario": f"fal-utilisation-{case.name}-{setup}",
        "callbacks": setup,
        "jobs": jobs,
        "worker_processes": args.workers,
        "worker_concurrency": args.concurrency,
        "account": {"rate_per_s": case.rate_per_s, "max_concurrent": None},
        "fal": {"runners": case.runners, "run_s": case.run_s},
        **fal,
        "target": "ratio_to_ceiling >= 0.97",
        "targets_met": {"ratio": (fal["ratio_to_ceiling"] or 0) >= 0.97},
        "jobs_per_s_from_worker_spawn": r(jobs / (t_final - t0)),
        "correct": {
            "jobs_by_status": figures["by_status"],
            "fal_requests": stats.get("submitted"),
            "status_polls": stats.get("status_polls"),
            "webhooks_sent": stats.get("webhooks_sent", 0),
        },
        "worker_stops": stops,
        "worker_logs": problems,
        "load": {**quiet, **load, "disturbed": disturbed(load)},
        "code": scenario.code,
    }
    log(
        f"fal {case.name}/{setup}: {fal['achieved_per_s']}/s of {fal['ceiling_per_s']} "
        f"({fal['ratio_to_ceiling']}), runners busy {fal['runners_busy_share']}, "
        f"deepest fal queue {fal['fal_queue_depth_max']}, load {load}"
    )
    return result


def main() -> None:
    case_main(__doc__ or "", CASES, SETUPS, run_case, jobs_help="default: the case's figure")


if __name__ == "__main__":
    main()
