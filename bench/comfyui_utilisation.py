"""Utilisation of a ComfyUI account (one GPU, `max_concurrent: 1`) against its ceiling
(issue #9).

    .venv/bin/python -m bench.comfyui_utilisation                  # 120 jobs, 1 s runs
    .venv/bin/python -m bench.comfyui_utilisation --run-s 0.5 --jobs 200 --workers 2

One simulated GPU (simulators/comfyui.py in its own process: one prompt at a time,
`--run-s` each) behind a `comfyui` account limited to one prompt in flight, as the README
tells operators to configure it. The ceiling is one run per run time. The GPU's busy
share is the sum of the runs (ComfyUI's own `execution_start` to `execution_success`
timestamps, read from its history) over the steady window (the span of runs minus
--trim seconds at each end). The gap between one run's end and the next one's start is
what Darkroom adds per job: noticing the end (a poll), downloading the image, storing
and recording it, releasing the slot, granting it to the next job, and its submit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bench._dispatch_env import ROOT, CpuAccount, DispatchStack, async_bench_env, job_figures
from bench._harness import free_port, log
from bench._machine import wait_for_quiet
from bench.dispatch import Scenario, disturbed, emit, r, wait_all_final
from simulators import SimConfig
from simulators.runner import wait_until_answering

MODEL = "comfy-sim"
ACCOUNT = "comfy"
INJECT = {
    "prompt": "6.text",
    "negative_prompt": "7.text",
    "seed": "3.seed",
    "width": "5.width",
    "height": "5.height",
}


@dataclass
class ComfyStack(DispatchStack):
    """DispatchStack with the ComfyUI simulator and one comfyui account instead."""

    run_s: float = 1.0

    def start(self, *, api: bool) -> None:
        port = free_port()
        self.sim_url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "simulators.comfyui", "--port", str(port)]
        command += ["--run-s", str(self.run_s)]
        self.sim_process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
        process = self.sim_process
        wait_until_answering(
            self.sim_url, 20, alive=lambda: process.poll() is None, probe="/prompt"
        )
        log(f"ComfyUI simulator at {self.sim_url}, {self.run_s} s per prompt")
        workflows = self.env.workdir / "workflows"
        workflows.mkdir(exist_ok=True)
        shutil.copy(ROOT / "examples" / "comfyui" / "sdxl.json", workflows / "sdxl.json")
        config = {
            "providers": {
                ACCOUNT: {
                    "kind": "comfyui",
                    "base_url": self.sim_url,
                    "limits": self.limits.get(ACCOUNT, {}),
                    "timeout_s": 30,
                }
            },
            "models": {
                MODEL: {"provider": ACCOUNT, "ref": "workflows/sdxl.json", "inject": INJECT}
            },
        }
        self.config_path.write_text(json.dumps(config, indent=2))
        self.env.settings.config = self.config_path
        if api:
            self.start_api()


def runs_from_history(history: dict[str, Any]) -> list[tuple[float, float, str]]:
    """(start, end, status) of every run, in seconds, from ComfyUI's status messages."""
    runs: list[tuple[float, float, str]] = []
    for entry in history.values():
        stamps = {
            event: data.get("timestamp")
            for event, data in entry["status"]["messages"]
            if isinstance(data, dict)
        }
        start = stamps.get("execution_start")
        end = stamps.get("execution_success") or stamps.get("execution_error")
        if start is not None and end is not None:
            runs.append((start / 1000, end / 1000, entry["status"]["status_str"]))
    return sorted(runs)


def gpu_figures(runs: list[tuple[float, float, str]], trim: float) -> dict[str, Any]:
    start, end = runs[0][0] + trim, runs[-1][1] - trim
    if end - start < 1:
        start, end = runs[0][0], runs[-1][1]
    length = end - start
    durations = [b - a for a, b, _ in runs]
    run_mean = statistics.fmean(durations)
    busy = sum(max(0.0, min(b, end) - max(a, start)) for a, b, _ in runs)
    finished = sum(1 for _, b, _ in runs if start <= b < end)
    gaps = sorted(runs[i + 1][0] - runs[i][1] for i in range(len(runs) - 1))
    overlaps = sum(1 for gap in gaps if gap < -0.001)
    return {
        "runs": len(runs),
        "steady_window_s": r(length),
        "run_mean_s": r(run_mean),
        "ceiling_per_s": r(1 / run_mean),
        "achieved_per_s": r(finished / length),
        "ratio_to_ceiling": r(finished / length * run_mean),
        "gpu_busy_share": r(busy / length),
        "gap_mean_s": r(statistics.fmean(gaps)) if gaps else None,
        "gap_p50_s": r(statistics.median(gaps)) if gaps else None,
        "gap_p95_s": r(gaps[int(0.95 * (len(gaps) - 1))]) if gaps else None,
        "runs_overlapping": overlaps,
    }


async def run_case(args: argparse.Namespace) -> dict[str, Any]:
    quiet = {} if args.no_wait_for_quiet else wait_for_quiet(args.quiet_wait)
    async with async_bench_env(worker_concurrency=args.concurrency) as env:
        limits = {ACCOUNT: {"max_concurrent": args.max_concurrent}}
        stack = ComfyStack(env, SimConfig(), limits, run_s=args.run_s)
        scenario = Scenario(env, stack)
        try:
            await scenario.open(api=False)
            batch_ids, _ = await scenario.insert(MODEL, args.jobs)
            t0 = time.time()
            cpu = CpuAccount()
            cpu.start()
            stack.start_workers(args.workers, concurrency=args.concurrency, callbacks=False)
            t_final = await wait_all_final(
                scenario, batch_ids, args.jobs, timeout_s=args.timeout, account=ACCOUNT
            )
            load = cpu.stop()
            figures = await job_figures(scenario.pg, batch_ids)
            async with httpx.AsyncClient(base_url=stack.sim_url, timeout=60) as client:
                history = (await client.get("/history")).json()
                sim_state = (await client.get("/_sim/state")).json()
            stops = stack.stop_workers()
            problems = stack.log_summary()
        finally:
            await scenario.close()
    gpu = gpu_figures(runs_from_history(history), args.trim)
    result = {
        "scenario": f"utilisation-comfyui-concurrency-{args.max_concurrent}",
        "jobs": args.jobs,
        "run_s": args.run_s,
        "max_concurrent": args.max_concurrent,
        "worker_processes": args.workers,
        "worker_concurrency": args.concurrency,
        **gpu,
        "target": "gpu_busy_share as high as polls allow (no target in the issue)",
        "most_queued_at_comfyui": sim_state["most_queued"],
        "jobs_per_s_from_worker_spawn": r(args.jobs / (t_final - t0)),
        "correct": {"jobs_by_status": figures["by_status"], "prompts": len(history)},
        "worker_stops": stops,
        "worker_logs": problems,
        "load": {**quiet, **load, "disturbed": disturbed(load)},
        "code": scenario.code,
    }
    log(
        f"comfyui: {gpu['achieved_per_s']}/s of {gpu['ceiling_per_s']} "
        f"({gpu['ratio_to_ceiling']}), GPU busy {gpu['gpu_busy_share']}, "
        f"gap p50 {gpu['gap_p50_s']} s, most queued {sim_state['most_queued']}"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=120)
    parser.add_argument("--run-s", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-concurrent", type=int, default=1, help="the account's limit")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--trim", type=float, default=3, help="seconds cut at each end")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--no-wait-for-quiet", action="store_true")
    parser.add_argument("--quiet-wait", type=float, default=120)
    emit(asyncio.run(run_case(parser.parse_args())))


if __name__ == "__main__":
    main()
