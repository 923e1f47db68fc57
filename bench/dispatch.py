"""The dispatch engine against the provider simulator (issue #3): utilisation when the
provider's rate or its concurrency is the limit, Darkroom's own overhead next to arq's,
adaptivity to a provider whose capacity drops to a quarter (plain 429s), the client the
tutorials teach as a baseline, and the priority / fairness figures.

    .venv/bin/python -m bench.dispatch utilisation-rate         # + the tutorial baseline
    .venv/bin/python -m bench.dispatch utilisation-concurrency  # callbacks, then polling only
    .venv/bin/python -m bench.dispatch overhead                 # + arq no-op in the same run
    .venv/bin/python -m bench.dispatch adaptivity
    .venv/bin/python -m bench.dispatch fairness
    .venv/bin/python -m bench.dispatch all

Each scenario gets its own database, Redis db and queue names (bench/_harness.py), runs
the simulator in its own process (`python -m simulators`) and Darkroom as real
processes: `darkroom worker` x N with DARKROOM_CONFIG pointing at a file whose limits
are the simulator's (the premise of the issue: Darkroom is told the provider's real
limits), and `darkroom serve` for Replicate's completion callbacks. Jobs are stored and
enqueued as POST /v1/batches does, before the workers start.

Rates are read from the simulator: `creates_per_second` (accepted creations by whole
second since the simulator's stats were reset, just before the workers start). The
steady window is the span of seconds with any accepted creation, minus `--trim`
seconds (default 5) at each end. Every scenario prints one JSON object (one line) on
stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from bench._dispatch_env import (
    OPENAI_MODEL,
    REPLICATE_MODEL,
    SIM_TOKEN,
    CpuAccount,
    DispatchStack,
    active_span,
    admission_timing,
    async_bench_env,
    final_count,
    insert_jobs,
    job_body,
    job_figures,
    limiter_sample,
    padded,
    pg_wait_events,
    profile_summary,
    start_py_spy,
    steady_window,
    trace_analysis,
    window_rate,
    window_sum,
)
from bench._harness import BenchEnv, log
from bench._machine import machine, wait_for_quiet
from bench._tutorial_client import run_tutorial_client
from service.state import State, build_state, close_state
from simulators import SimConfig, start_simulator_process

ROOT = Path(__file__).resolve().parents[1]
FIXED_1S = {"kind": "fixed", "s": 1.0}
SIZE = 256


def rate_bound_sim() -> SimConfig:
    return SimConfig(rate_per_s=20, burst=1, max_concurrent=30, latency=FIXED_1S, seed=1)


RATE_BOUND_LIMITS = {"rate_per_s": 20, "burst": 1, "max_concurrent": 30}


def r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)


def disturbed(cpu: dict[str, float]) -> bool:
    """Someone else (a test suite) used more than a third of a core during the run."""
    return cpu["cores_everything_else"] > 0.33


class Scenario:
    """One bench env + stack + the bench's own State and Postgres connection."""

    def __init__(self, env: BenchEnv, stack: DispatchStack) -> None:
        self.env = env
        self.stack = stack
        self.state: State | None = None
        self.pg: Any = None
        self.key = ""
        self.code: dict[str, str] = {}

    async def open(self, *, api: bool) -> None:
        self.code = code_version()
        self.stack.start(api=api)
        self.key = await self.env.create_api_key()
        self.state = await build_state(self.env.settings)
        self.pg = await asyncpg.connect(self.env.pg_dsn)

    async def close(self) -> None:
        try:
            self.stack.close()
        finally:
            if self.pg is not None:
                await self.pg.close()
            if self.state is not None:
                await close_state(self.state)

    async def insert(self, model: str, count: int, **kwargs: Any) -> tuple[list[uuid.UUID], float]:
        assert self.state is not None
        began = time.perf_counter()
        ids = await insert_jobs(
            self.state, kwargs.pop("key", self.key), model=model, count=count, size=SIZE, **kwargs
        )
        return ids, time.perf_counter() - began


async def wait_all_final(
    scenario: Scenario,
    batch_ids: list[uuid.UUID],
    total: int,
    *,
    timeout_s: float,
    poll_s: float = 0.5,
    account: str = "replicate",
    samples: list[dict[str, float]] | None = None,
    t0: float = 0.0,
) -> float:
    """Until every job is final; returns when that was seen (time.time())."""
    assert scenario.state is not None
    deadline = time.monotonic() + timeout_s
    last_log = 0.0
    while True:
        scenario.stack.check_alive()
        done = await final_count(scenario.pg, batch_ids)
        now = time.time()
        if samples is not None:
            sample = await limiter_sample(scenario.state, account)
            samples.append({"t": round(now - t0, 2), **sample})
        if done >= total:
            return now
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done}/{total} jobs final after {timeout_s:.0f} s")
        if time.monotonic() - last_log > 10:
            log(f"{done}/{total} jobs final")
            last_log = time.monotonic()
        await asyncio.sleep(poll_s)


def sim_rates(stats: dict[str, Any], trim: int, limit: float) -> dict[str, Any]:
    creates = stats["creates_per_second"]
    throttled = padded(stats["rate_limited_per_second"], len(creates))
    start, end = steady_window(creates, trim)
    span = active_span(creates) or (0, 0)
    achieved = window_rate(creates, start, end)
    return {
        "steady_window_s": [start, end],
        "steady_window_note": (
            f"simulator seconds [{start}, {end}) after its stats reset: the seconds with "
            f"accepted creations [{span[0]}, {span[1]}] minus {trim} s at each end"
        ),
        "achieved_creates_per_s": r(achieved),
        "ratio_to_limit": r(achieved / limit),
        "creates_per_s_whole_span": r(window_rate(creates, span[0], span[1] + 1)),
        "min_second_in_window": min(creates[start:end], default=0),
        "max_second_in_window": max(creates[start:end], default=0),
        "rate_limited_in_window": window_sum(throttled, start, end),
        "creates_per_second": creates,
        "rate_limited_per_second": stats["rate_limited_per_second"],
    }


def limiter_summary(samples: list[dict[str, float]]) -> dict[str, Any]:
    if not samples:
        return {}
    rates = [s["rate"] for s in samples if not math.isnan(s["rate"])]
    last = samples[-1]
    return {
        "cuts": int(last["cuts"]),
        "grants": int(last["grants"]),
        "rate_limited_reported": int(last["rate_limited"]),
        "forgiven_whatif": int(last["forgiven"]),
        "confirm_pushed_whatif": int(last["confirm_pushed"]),
        "effective_rate_min": r(min(rates)) if rates else None,
        "effective_rate_last": r(rates[-1]) if rates else None,
        "in_flight_max_sampled": int(max(s["in_flight"] for s in samples)),
    }


# --- utilisation ----------------------------------------------------------------------


async def darkroom_utilisation(
    args: argparse.Namespace,
    *,
    name: str,
    sim_config: SimConfig,
    limits: dict[str, Any],
    jobs: int,
    limit_rate: float,
    max_concurrent: int,
    callbacks: bool,
) -> dict[str, Any]:
    quiet = {} if args.no_wait_for_quiet else wait_for_quiet(args.quiet_wait)
    async with async_bench_env(worker_concurrency=args.concurrency) as env:
        stack = DispatchStack(
            env,
            sim_config,
            {"replicate": limits},
            record_admissions=args.record_admissions,
            trace_workers=args.trace_workers or bool(args.whatif),
            whatif=args.whatif,
        )
        scenario = Scenario(env, stack)
        admissions: list[tuple[float, str, str | None]] = []
        try:
            await scenario.open(api=callbacks)
            batch_ids, insert_s = await scenario.insert(REPLICATE_MODEL, jobs)
            log(f"{name}: {jobs} jobs stored and enqueued in {insert_s:.2f} s")
            scenario.stack.sim.reset()
            t0 = time.time()
            cpu = CpuAccount()
            cpu.start()
            scenario.stack.start_workers(
                args.workers, concurrency=args.concurrency, callbacks=callbacks
            )
            samples: list[dict[str, float]] = []
            t_final = await wait_all_final(
                scenario, batch_ids, jobs, timeout_s=args.timeout, samples=samples, t0=t0
            )
            load = cpu.stop()
            stats = scenario.stack.sim.stats()
            if args.record_admissions:
                admissions = scenario.stack.admissions()
            figures = await job_figures(scenario.pg, batch_ids)
            stops = scenario.stack.stop_workers()
            problems = scenario.stack.log_summary()
            traced = trace_analysis(scenario.stack.traces()) if stack.trace_workers else None
        finally:
            await scenario.close()
    rates = sim_rates(stats, args.trim, limit_rate)
    timing = (
        admission_timing(
            admissions, "replicate", 1 / limits["rate_per_s"], tuple(rates["steady_window_s"])
        )
        if admissions
        else None
    )
    first, last = figures["first_started"], figures["last_finished"]
    peak = stats["concurrency_peak"]["replicate"]
    ok = figures["by_status"].get("succeeded", 0) == jobs
    result = {
        "scenario": name + (f" [what-if: {args.whatif}]" if args.whatif else ""),
        "jobs": jobs,
        "worker_processes": args.workers,
        "worker_concurrency": args.concurrency,
        "completion": "provider callbacks (API)" if callbacks else "polling only",
        "simulator": sim_config.model_dump(
            include={"rate_per_s", "burst", "max_concurrent", "latency", "rate_limit_hint"}
        ),
        "darkroom_limits": limits,
        "limit_per_s": limit_rate,
        **{k: v for k, v in rates.items() if not k.endswith("per_second")},
        "target_ratio": 0.97,
        "rate_limited_total": stats["rate_limited"],
        "rate_limited_by_cause": stats["rate_limited_by_cause"],
        "concurrency_peak": peak,
        "concurrency_limit": max_concurrent,
        "end_to_end_s": r(last - first if first and last else None),
        "jobs_per_s_end_to_end": r(jobs / (last - first) if first and last else None),
        "end_to_end_note": "first job's started_at -> last job's finished_at",
        "jobs_per_s_from_worker_spawn": r(jobs / (t_final - t0)),
        "insert_s": r(insert_s),
        "targets_met": {
            "rate": (rates["ratio_to_limit"] or 0) >= 0.97,
            "zero_429": stats["rate_limited"] == 0,
            "peak_concurrency": peak <= max_concurrent,
        },
        "correct": {
            "all_succeeded": ok,
            "jobs_by_status": figures["by_status"],
            "attempt_outcomes": figures["attempt_outcomes"],
            "duplicate_submissions": stats["duplicate_submissions"],
            "creations_accepted": stats["creations_accepted"],
            "webhooks_sent": stats["webhooks_sent"],
            "webhooks_failed": stats["webhooks_failed"],
        },
        "limiter": limiter_summary(samples),
        "admission_timing": timing,
        "worker_trace": traced,
        "worker_stops": stops,
        "worker_logs": problems,
        "per_second": {
            "creates": rates["creates_per_second"],
            "rate_limited": rates["rate_limited_per_second"],
            "completions": stats["completions_per_second"],
        },
        "load": {**quiet, **load, "disturbed": disturbed(load)},
        "code": scenario.code,
    }
    log(
        f"{name}: {rates['achieved_creates_per_s']}/s ({rates['ratio_to_limit']}), "
        f"429s {stats['rate_limited']}, peak {peak}, ok {ok}, load {load}"
    )
    return result


def tutorial_baseline(args: argparse.Namespace, jobs: int) -> dict[str, Any]:
    """The same 2,000-job rate-bound scenario, driven by the tutorial client."""
    quiet = {} if args.no_wait_for_quiet else wait_for_quiet(args.quiet_wait)
    sim_config = rate_bound_sim()
    url, process = start_simulator_process(sim_config)
    threads, sleep_s = 4, 4 / 20
    body = job_body(jobs, model=REPLICATE_MODEL, size=SIZE, priority="bulk", tag="tutorial")
    inputs = [
        {
            "prompt": job["prompt"],
            "width": SIZE,
            "height": SIZE,
            "aspect_ratio": "1:1",
            "seed": job["seed"],
            "output_format": "png",
            "num_outputs": 1,
        }
        for job in body["jobs"]
    ]
    try:
        from simulators import SyncSimulatorHandle

        sim = SyncSimulatorHandle(url)
        sim.reset()
        cpu = CpuAccount()
        cpu.start()
        log(f"tutorial client: {jobs} jobs, {threads} threads, sleep {sleep_s} s")
        began = time.time()
        result = run_tutorial_client(
            url,
            SIM_TOKEN,
            "black-forest-labs/flux-schnell",
            inputs,
            threads=threads,
            sleep_s=sleep_s,
        )
        elapsed = time.time() - began
        load = cpu.stop()
        stats = sim.stats()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    rates = sim_rates(stats, args.trim, 20)
    span = (result.last_done - result.first_submit) if result.first_submit else None
    return {
        "scenario": "baseline-tutorial-client",
        "jobs": jobs,
        "client": f"{threads} threads x (create -> sleep {sleep_s} s -> poll, sleep {sleep_s} s "
        "between polls, until done -> download); on 429 sleep Retry-After and create again; "
        "requests.Session per thread",
        "simulator": sim_config.model_dump(
            include={"rate_per_s", "burst", "max_concurrent", "latency", "rate_limit_hint"}
        ),
        "limit_per_s": 20,
        **{k: v for k, v in rates.items() if not k.endswith("per_second")},
        "rate_limited_total": stats["rate_limited"],
        "rate_limited_client_seen": result.rate_limited,
        "concurrency_peak": stats["concurrency_peak"]["replicate"],
        "duplicate_submissions": stats["duplicate_submissions"],
        "succeeded": result.succeeded,
        "failed": result.failed,
        "errors": result.errors[:5],
        "end_to_end_s": r(span),
        "jobs_per_s_end_to_end": r(jobs / span if span else None),
        "wall_s": r(elapsed),
        "per_second": {
            "creates": stats["creates_per_second"],
            "rate_limited": stats["rate_limited_per_second"],
        },
        "load": {**quiet, **load, "disturbed": disturbed(load)},
    }


async def utilisation_rate(args: argparse.Namespace) -> list[dict[str, Any]]:
    darkroom = await darkroom_utilisation(
        args,
        name="utilisation-rate",
        sim_config=rate_bound_sim(),
        limits=RATE_BOUND_LIMITS,
        jobs=args.jobs or 2_000,
        limit_rate=20,
        max_concurrent=30,
        callbacks=True,
    )
    emit(darkroom)
    if args.no_baseline:
        return [darkroom]
    baseline = await asyncio.to_thread(tutorial_baseline, args, args.baseline_jobs)
    emit(baseline)
    return [darkroom, baseline]


async def utilisation_concurrency(args: argparse.Namespace) -> list[dict[str, Any]]:
    sim = SimConfig(rate_per_s=50, burst=1, max_concurrent=10, latency=FIXED_1S, seed=2)
    limits = {"rate_per_s": 50, "burst": 1, "max_concurrent": 10}
    results = []
    for callbacks in (True, False):
        result = await darkroom_utilisation(
            args,
            name="utilisation-concurrency" + ("" if callbacks else "-polling"),
            sim_config=sim,
            limits=limits,
            jobs=args.jobs or 1_000,
            limit_rate=10,  # Little's law: 10 in flight / 1 s each
            max_concurrent=10,
            callbacks=callbacks,
        )
        emit(result)
        results.append(result)
    return results


# --- overhead -------------------------------------------------------------------------


async def arq_noop(env: BenchEnv, jobs: int, concurrency: int, poll_delay: float) -> dict[str, Any]:
    queue = f"bench:{env.run_id}:noop"
    redis_url = env.settings.redis_url
    command = [sys.executable, "-m", "bench._arq_noop", "--redis", redis_url, "--queue", queue]
    subprocess.run([*command, "--enqueue", str(jobs)], check=True, cwd=ROOT)
    log(
        f"arq no-op: {jobs} jobs enqueued; one arq Worker process, max_jobs {concurrency}, "
        f"poll_delay {poll_delay}"
    )
    began = time.time()
    done = subprocess.run(
        [*command, "--max-jobs", str(concurrency), "--poll-delay", str(poll_delay)],
        check=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    ended = time.time()
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if out["jobs_run"] != jobs:
        raise RuntimeError(f"arq ran {out['jobs_run']} of {jobs} no-op jobs")
    steady = out["last_end"] - out["first_start"]
    return {
        "jobs": jobs,
        "max_jobs": concurrency,
        "poll_delay_s": poll_delay,
        "steady_s": r(steady),
        "jobs_per_s_steady": r(jobs / steady),
        "process_s": r(ended - began),
        "jobs_per_s_process": r(jobs / (ended - began)),
    }


def per_process_cpu(scenario: Scenario) -> dict[str, float]:
    """CPU seconds used so far by the worker(s) and the simulator."""
    hz = os.sysconf("SC_CLK_TCK")

    def seconds(pid: int) -> float:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return round((int(fields[11]) + int(fields[12])) / hz, 2)

    out = {f"worker-{n}": seconds(w.pid) for n, w in enumerate(scenario.stack.workers)}
    if scenario.stack.sim_process is not None:
        out["simulator"] = seconds(scenario.stack.sim_process.pid)
    return out


async def profile_worker(scenario: Scenario, seconds: float, gil: bool) -> dict[str, Any]:
    """py-spy on the (first) worker for `seconds` once it is running jobs, and what the
    database's backends wait on meanwhile."""
    await asyncio.sleep(4)  # start-up
    worker = scenario.stack.workers[0]
    output = scenario.env.workdir / "worker.pyspy.txt"
    spy = start_py_spy(worker.pid, seconds, output, gil=gil)
    stop = asyncio.Event()
    database = scenario.env.pg_dsn.rsplit("/", 1)[1]
    waits = asyncio.create_task(pg_wait_events(scenario.env.pg_dsn, database, stop))
    await asyncio.to_thread(spy.wait)
    stop.set()
    counts = await waits
    total = sum(counts.values())
    return {
        "py_spy_seconds": seconds,
        "py_spy_gil_only": gil,
        "worker": profile_summary(output) if output.exists() else None,
        "pg_backends_sampled": {k: round(v / max(1, total), 3) for k, v in counts.most_common(12)},
    }


async def first_final(scenario: Scenario, batch_ids: list[uuid.UUID]) -> tuple[float, int]:
    """The worker's CPU seconds and the jobs final when the first job is final."""
    pg = await asyncpg.connect(scenario.env.pg_dsn)  # its own: scenario.pg is in use
    try:
        while (done := await final_count(pg, batch_ids)) == 0:
            await asyncio.sleep(0.02)
        return per_process_cpu(scenario)["worker-0"], done
    finally:
        await pg.close()


async def overhead(args: argparse.Namespace) -> list[dict[str, Any]]:
    jobs = args.jobs or 5_000
    sim_config = SimConfig(seed=3)  # no latency, no limits
    quiet = {} if args.no_wait_for_quiet else wait_for_quiet(args.quiet_wait)
    async with async_bench_env(worker_concurrency=args.concurrency) as env:
        poll_delay = env.settings.worker_poll_delay_s
        stack = DispatchStack(
            env, sim_config, {}, trace_workers=args.trace_workers, segments=args.trace_workers
        )
        scenario = Scenario(env, stack)
        try:
            await scenario.open(api=False)
            batch_ids, insert_s = await scenario.insert(OPENAI_MODEL, jobs)
            log(f"overhead: {jobs} jobs stored and enqueued in {insert_s:.2f} s")
            scenario.stack.sim.reset()
            cpu = CpuAccount()
            cpu.start()
            t0 = time.time()
            scenario.stack.start_workers(1, concurrency=args.concurrency, callbacks=False)
            profiling = asyncio.create_task(
                profile_worker(scenario, args.profile, args.profile_gil)
                if args.profile
                else asyncio.sleep(0)
            )
            running = asyncio.create_task(first_final(scenario, batch_ids))
            t_final = await wait_all_final(
                scenario, batch_ids, jobs, timeout_s=args.timeout, poll_s=0.05, account="openai"
            )
            load = cpu.stop()
            profile = await profiling
            processes = per_process_cpu(scenario)
            cpu_first, done_first = await running
            stats = scenario.stack.sim.stats()
            figures = await job_figures(scenario.pg, batch_ids)
            stops = scenario.stack.stop_workers()
            problems = scenario.stack.log_summary()
            traced = trace_analysis(stack.traces()) if stack.trace_workers else None
            cpu_arq = CpuAccount()
            cpu_arq.start()
            arq = await arq_noop(env, jobs, args.concurrency, poll_delay)
            load_arq = cpu_arq.stop()
        finally:
            await scenario.close()
    first, last = figures["first_started"], figures["last_finished"]
    steady = last - first
    dark_steady = jobs / steady
    dark_process = jobs / (t_final - t0)
    ratio = dark_steady / arq["jobs_per_s_steady"]
    result = {
        "scenario": "overhead",
        "jobs": jobs,
        "provider": f"openai protocol ({OPENAI_MODEL} -> simulator, zero latency, no limits), "
        f"{SIZE}x{SIZE} png",
        "worker_processes": 1,
        "worker_concurrency": args.concurrency,
        "worker_poll_delay_s": poll_delay,
        "darkroom": {
            "steady_s": r(steady),
            "jobs_per_s_steady": r(dark_steady),
            "steady_note": "first job's started_at -> last job's finished_at",
            "process_s": r(t_final - t0),
            "jobs_per_s_process": r(dark_process),
            "process_note": "worker spawn -> every job final (includes ~2 s start-up)",
        },
        "arq_noop": arq,
        "worker_cpu_ms_per_job": r(
            (processes["worker-0"] - cpu_first) * 1000 / max(1, jobs - done_first), 2
        ),
        "worker_cpu_ms_per_job_with_start_up": r(processes["worker-0"] * 1000 / jobs, 2),
        "worker_cpu_note": "the worker process's user+system CPU from its first final job "
        "to its last, / the jobs finished meanwhile (start-up, which compiles every module "
        "when PYTHONDONTWRITEBYTECODE is set, left out)",
        "ratio_steady": r(ratio),
        "ratio_process": r(dark_process / arq["jobs_per_s_process"]),
        "target_ratio": 0.4,
        "target_met": ratio >= 0.4,
        "correct": {
            "all_succeeded": figures["by_status"].get("succeeded", 0) == jobs,
            "jobs_by_status": figures["by_status"],
            "duplicate_submissions": stats["duplicate_submissions"],
            "creations_accepted": stats["creations_accepted"],
        },
        "insert_s": r(insert_s),
        "profile": profile,
        "worker_trace": traced,
        "cpu_seconds_by_process": processes,
        "worker_stops": stops,
        "worker_logs": problems,
        "load": {**quiet, **load, "disturbed": disturbed(load), "during_arq": load_arq},
        "code": scenario.code,
    }
    log(
        f"overhead: darkroom {dark_steady:.1f}/s, arq {arq['jobs_per_s_steady']}/s, "
        f"ratio {ratio:.3f}, worker CPU {result['worker_cpu_ms_per_job']} ms/job"
    )
    emit(result)
    return [result]


# --- adaptivity -----------------------------------------------------------------------


def first_at_or_after(times: range, test: Callable[[int], bool]) -> int | None:
    return next((t for t in times if test(t)), None)


async def adaptivity(args: argparse.Namespace) -> list[dict[str, Any]]:
    high, low = 20.0, 5.0
    drop_at, back_at, end_at = 30, 30 + args.low_s, 30 + args.low_s + args.after_s
    jobs = args.jobs or int(high * (drop_at + args.after_s) + low * args.low_s + 1_000)
    sim_config = SimConfig(
        rate_per_s=high,
        burst=1,
        max_concurrent=30,
        latency=FIXED_1S,
        rate_limit_hint="none",
        seed=4,
    )
    quiet = {} if args.no_wait_for_quiet else wait_for_quiet(args.quiet_wait)
    async with async_bench_env(worker_concurrency=args.concurrency) as env:
        stack = DispatchStack(
            env,
            sim_config,
            {"replicate": RATE_BOUND_LIMITS},
            trace_workers=bool(args.whatif),
            whatif=args.whatif,
        )
        scenario = Scenario(env, stack)
        samples: list[dict[str, float]] = []
        try:
            await scenario.open(api=True)
            assert scenario.state is not None
            batch_ids, insert_s = await scenario.insert(REPLICATE_MODEL, jobs)
            log(
                f"adaptivity: {jobs} jobs stored; capacity {high}/s until {drop_at} s, "
                f"{low}/s until {back_at} s, {high}/s until {end_at} s"
            )
            sim = scenario.stack.sim
            sim.reset()
            t0 = time.time()
            cpu = CpuAccount()
            cpu.start()
            scenario.stack.start_workers(args.workers, concurrency=args.concurrency, callbacks=True)
            phase = 0
            while (now := time.time() - t0) < end_at:
                scenario.stack.check_alive()
                if phase == 0 and now >= drop_at:
                    sim.configure(rate_per_s=low)
                    log(f"t={now:.2f}: capacity -> {low}/s")
                    phase = 1
                elif phase == 1 and now >= back_at:
                    sim.configure(rate_per_s=high)
                    log(f"t={now:.2f}: capacity -> {high}/s")
                    phase = 2
                samples.append(
                    {"t": round(now, 2), **await limiter_sample(scenario.state, "replicate")}
                )
                if int(now) % 10 == 0:
                    log(
                        f"t={now:.0f}: limiter rate {samples[-1]['rate']:.2f}, "
                        f"cuts {samples[-1]['cuts']:.0f}"
                    )
                await asyncio.sleep(1.0 - (time.time() - t0) % 1.0)
            load = cpu.stop()
            stats = sim.stats()
            stops = scenario.stack.stop_workers()
            figures = await job_figures(scenario.pg, batch_ids)
            problems = scenario.stack.log_summary()
        finally:
            await scenario.close()
    creates = padded(stats["creates_per_second"], end_at)[:end_at]
    throttled = padded(stats["rate_limited_per_second"], end_at)[:end_at]

    def fraction(start: int, end: int) -> float:
        bad = window_sum(throttled, start, end)
        return bad / max(1, bad + window_sum(creates, start, end))

    def mean_rate(start: int, end: int) -> float:
        rates = [s["rate"] for s in samples if start <= s["t"] < end and not math.isnan(s["rate"])]
        return statistics.fmean(rates) if rates else float("nan")

    windows = [
        {
            "window_s": [w, w + 10],
            "capacity_per_s": high if w < drop_at or w >= back_at else low,
            "accepted_per_s": r(window_rate(creates, w, w + 10), 2),
            "rate_limited": window_sum(throttled, w, w + 10),
            "fraction_429": r(fraction(w, w + 10), 4),
            "darkroom_effective_rate": r(mean_rate(w, w + 10), 2),
        }
        for w in range(0, end_at, 10)
    ]
    # 429s: from when on does the fraction stay under 1% until capacity returns?
    settle = first_at_or_after(range(drop_at, back_at), lambda t: fraction(t, back_at) < 0.01)
    first_window = first_at_or_after(
        range(drop_at, back_at - 9), lambda t: fraction(t, t + 10) < 0.01
    )
    # Rate: when does a 10-s window first average >= 18/s after capacity returns?
    recovered = first_at_or_after(
        range(back_at, end_at - 9), lambda t: window_rate(creates, t, t + 10) >= 18
    )
    stays = (
        min(window_rate(creates, t, t + 10) for t in range(recovered, end_at - 9))
        if recovered is not None
        else None
    )
    finished = sum(v for k, v in figures["by_status"].items() if k in ("succeeded", "failed"))
    result = {
        "scenario": "adaptivity" + (f" [what-if: {args.whatif}]" if args.whatif else ""),
        "jobs_stored": jobs,
        "simulator": sim_config.model_dump(
            include={"rate_per_s", "burst", "max_concurrent", "latency", "rate_limit_hint"}
        ),
        "darkroom_limits": RATE_BOUND_LIMITS,
        "timeline_s": {"capacity_20_until": drop_at, "capacity_5_until": back_at, "end": end_at},
        "windows_10s": windows,
        "fraction_429_low_phase_after_30s": r(fraction(drop_at + 30, back_at), 4),
        "time_to_429_under_1pct_s": None if settle is None else settle - drop_at,
        "time_to_429_under_1pct_note": "seconds after the drop from which the 429 fraction of "
        "creation requests, counted until capacity returns, stays under 1%",
        "time_to_first_10s_window_under_1pct_s": (
            None if first_window is None else first_window - drop_at
        ),
        "time_to_18_per_s_s": None if recovered is None else recovered + 10 - back_at,
        "time_to_18_per_s_note": "seconds after capacity returns until the end of the first "
        "10-s window (sliding by 1 s) that averaged >= 18 accepted creates/s",
        "min_10s_rate_after_recovery": r(stays, 2),
        "targets": {"429_under_1pct_within_s": 30, "back_to_18_within_s": 120},
        "targets_met": {
            "429s": settle is not None and settle - drop_at <= 30,
            "recovery": recovered is not None and recovered + 10 - back_at <= 120,
        },
        "rate_limited_total": stats["rate_limited"],
        "concurrency_peak": stats["concurrency_peak"]["replicate"],
        "correct": {
            "no_failed_jobs": figures["by_status"].get("failed", 0) == 0,
            "jobs_finished": finished,
            "jobs_by_status": figures["by_status"],
            "attempt_outcomes": figures["attempt_outcomes"],
            "duplicate_submissions": stats["duplicate_submissions"],
        },
        "limiter": limiter_summary(samples),
        "limiter_rate_per_second": [r(s["rate"], 2) for s in samples],
        "per_second": {"creates": creates, "rate_limited": throttled},
        "insert_s": r(insert_s),
        "worker_stops": stops,
        "worker_logs": problems,
        "load": {**quiet, **load, "disturbed": disturbed(load)},
        "code": scenario.code,
    }
    emit(result)
    return [result]


# --- fairness -------------------------------------------------------------------------


async def _job_times(pg: Any, batch_id: uuid.UUID) -> list[tuple[float | None, float | None, str]]:
    rows = await pg.fetch(
        "SELECT started_at, finished_at, status FROM jobs WHERE batch_id = $1 ORDER BY index",
        batch_id,
    )
    return [
        (
            row["started_at"].timestamp() if row["started_at"] else None,
            row["finished_at"].timestamp() if row["finished_at"] else None,
            row["status"],
        )
        for row in rows
    ]


async def _wait_started(scenario: Scenario, batch_ids: list[uuid.UUID], count: int) -> None:
    while True:
        scenario.stack.check_alive()
        started = await scenario.pg.fetchval(
            "SELECT count(*) FROM jobs WHERE batch_id = ANY($1) AND started_at IS NOT NULL",
            batch_ids,
        )
        if started >= count:
            return
        await asyncio.sleep(0.5)


async def _fairness_env(
    args: argparse.Namespace,
    bulk_jobs: int,
    body: Callable[[Scenario, list[uuid.UUID]], Awaitable[dict[str, Any]]],
) -> dict[str, Any]:
    quiet = {} if args.no_wait_for_quiet else wait_for_quiet(args.quiet_wait)
    sim_config = rate_bound_sim()
    async with async_bench_env(worker_concurrency=args.concurrency) as env:
        scenario = Scenario(env, DispatchStack(env, sim_config, {"replicate": RATE_BOUND_LIMITS}))
        try:
            await scenario.open(api=True)
            bulk, insert_s = await scenario.insert(REPLICATE_MODEL, bulk_jobs, tag="bulk")
            log(
                f"fairness: {bulk_jobs} bulk jobs in {len(bulk)} batches stored and enqueued "
                f"in {insert_s:.2f} s"
            )
            scenario.stack.sim.reset()
            cpu = CpuAccount()
            cpu.start()
            scenario.stack.start_workers(args.workers, concurrency=args.concurrency, callbacks=True)
            await _wait_started(scenario, bulk, 200)  # ~10 s at 20/s: saturated, steady
            result = await body(scenario, bulk)
            load = cpu.stop()
            stats = scenario.stack.sim.stats()
            stops = scenario.stack.stop_workers()
            figures = await job_figures(scenario.pg, [*bulk, *result.pop("_batches")])
            problems = scenario.stack.log_summary()
        finally:
            await scenario.close()
    span = active_span(stats["creates_per_second"]) or (0, 0)
    return {
        **result,
        "bulk_jobs": bulk_jobs,
        "bulk_batches": len(bulk),
        "insert_bulk_s": r(insert_s),
        "simulator": sim_config.model_dump(
            include={"rate_per_s", "burst", "max_concurrent", "latency", "rate_limit_hint"}
        ),
        "darkroom_limits": RATE_BOUND_LIMITS,
        "provider_rate_while_measured": r(
            window_rate(stats["creates_per_second"], span[0] + 5, span[1])
        ),
        "rate_limited_total": stats["rate_limited"],
        "correct": {
            "no_failed_jobs": figures["by_status"].get("failed", 0) == 0,
            "jobs_by_status": figures["by_status"],
            "duplicate_submissions": stats["duplicate_submissions"],
        },
        "worker_stops": stops,
        "worker_logs": problems,
        "load": {**quiet, **load, "disturbed": disturbed(load)},
        "code": scenario.code,
    }


async def fairness(args: argparse.Namespace) -> list[dict[str, Any]]:
    async def realtime(scenario: Scenario, bulk: list[uuid.UUID]) -> dict[str, Any]:
        samples, batches = [], []
        for number in range(args.realtime_samples):
            began = time.time()
            [batch], _ = await scenario.insert(
                REPLICATE_MODEL, 1, priority="realtime", tag=f"rt{number}"
            )
            enqueued = time.time()
            batches.append(batch)
            while True:
                [(started, finished, status)] = await _job_times(scenario.pg, batch)
                if finished is not None or time.time() - began > 60:
                    break
                await asyncio.sleep(0.02)
            samples.append(
                {
                    "submit_to_started_s": r(started - began if started else None),
                    "enqueued_to_started_s": r(started - enqueued if started else None),
                    "submit_to_finished_s": r(finished - began if finished else None),
                    "status": status,
                }
            )
            log(f"realtime job {number}: {samples[-1]}")
            await asyncio.sleep(2.0)
        waits = [s["submit_to_started_s"] for s in samples if s["submit_to_started_s"] is not None]
        queued = await scenario.pg.fetchval(
            "SELECT count(*) FROM jobs WHERE batch_id = ANY($1) AND status = 'queued'", bulk
        )
        return {
            "scenario": "fairness-realtime",
            "what": "1-job realtime batch submitted (submit_batch + commit + enqueue) while "
            "5,000 bulk jobs are queued and the provider is saturated at 20/s; clock from "
            "before submit_batch to the job's started_at",
            "samples": samples,
            "submit_to_started_s_max": r(max(waits)) if waits else None,
            "submit_to_started_s_median": r(statistics.median(waits)) if waits else None,
            "target_s": 2.0,
            "target_met": bool(waits) and max(waits) <= 2.0 and len(waits) == len(samples),
            "bulk_still_queued_at_end": queued,
            "_batches": batches,
        }

    async def small_after_big(scenario: Scenario, bulk: list[uuid.UUID]) -> dict[str, Any]:
        other_key = await scenario.env.create_api_key("tenant-b")
        began = time.time()
        [batch], _ = await scenario.insert(
            REPLICATE_MODEL, 10, key=other_key, priority="bulk", tag="small"
        )
        enqueued = time.time()
        while True:
            scenario.stack.check_alive()
            times = await _job_times(scenario.pg, batch)
            if all(t[1] is not None for t in times) or time.time() - began > 120:
                break
            await asyncio.sleep(0.05)
        starts = sorted(t[0] - began for t in times if t[0] is not None)
        ends = sorted(t[1] - began for t in times if t[1] is not None)
        last_start = began + starts[-1] if starts else time.time()
        bulk_started = await scenario.pg.fetchval(
            """SELECT count(*) FROM jobs WHERE batch_id = ANY($1)
               AND started_at >= to_timestamp($2) AND started_at <= to_timestamp($3)""",
            bulk,
            enqueued,
            last_start,
        )
        done = len(ends) == 10
        return {
            "scenario": "fairness-small-after-big",
            "what": "10-job bulk batch of another API key submitted after 50,000 queued "
            "bulk jobs (5 batches of 10,000, the API's maximum) with the provider saturated "
            "at 20/s; batches share the account round-robin",
            "submit_to_all_finished_s": r(ends[-1]) if done else None,
            "submit_to_first_started_s": r(starts[0]) if starts else None,
            "submit_to_last_started_s": r(starts[-1]) if starts else None,
            "started_offsets_s": [r(s, 2) for s in starts],
            "finished_offsets_s": [r(s, 2) for s in ends],
            "bulk_jobs_started_meanwhile": bulk_started,
            "target": "seconds (not minutes)",
            "_batches": [batch],
        }

    results = []
    wanted = args.which
    if wanted in ("both", "realtime"):
        result = await _fairness_env(args, 5_000, realtime)
        emit(result)
        results.append(result)
    if wanted in ("both", "small"):
        result = await _fairness_env(args, args.big_jobs, small_after_big)
        emit(result)
        results.append(result)
    return results


# --- main -----------------------------------------------------------------------------

PRETTY = False


def code_version() -> dict[str, str]:
    """The commit, and a hash of any uncommitted change to service/ (the tree may be
    mid-edit: figures belong to the code they were measured on)."""

    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    diff = git("diff", "HEAD", "--", "service")
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "service_diff_sha1": hashlib.sha1(diff.encode()).hexdigest()[:10] if diff else "clean",
    }


def emit(result: dict[str, Any]) -> None:
    result.setdefault("code", code_version())
    result["machine"] = machine()
    result["date"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    sys.stdout.write(json.dumps(result, indent=2 if PRETTY else None) + "\n")
    sys.stdout.flush()


SCENARIOS: dict[str, Callable[[argparse.Namespace], Awaitable[list[dict[str, Any]]]]] = {
    "utilisation-rate": utilisation_rate,
    "utilisation-concurrency": utilisation_concurrency,
    "overhead": overhead,
    "adaptivity": adaptivity,
    "fairness": fairness,
}


async def run_all(args: argparse.Namespace) -> None:
    for name in SCENARIOS:
        await SCENARIOS[name](args)


def main() -> None:
    global PRETTY
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=[*SCENARIOS, "all"])
    parser.add_argument("--jobs", type=int, default=0, help="default: the issue's figure")
    parser.add_argument("--workers", type=int, default=4, help="worker processes (not overhead)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=16,
        help="DARKROOM_WORKER_CONCURRENCY (also arq's max_jobs in overhead)",
    )
    parser.add_argument("--trim", type=int, default=5, help="seconds cut at each end")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--baseline-jobs", type=int, default=2_000)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--low-s", type=int, default=90, help="adaptivity: seconds at 5/s")
    parser.add_argument(
        "--after-s",
        type=int,
        default=150,
        help="adaptivity: seconds observed after capacity returns",
    )
    parser.add_argument("--big-jobs", type=int, default=50_000)
    parser.add_argument("--realtime-samples", type=int, default=5)
    parser.add_argument("--which", choices=["both", "realtime", "small"], default="both")
    parser.add_argument("--no-wait-for-quiet", action="store_true")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=120,
        help="wait up to this long for an idle machine before each scenario",
    )
    parser.add_argument("--pretty", action="store_true")
    parser.add_argument(
        "--record-admissions",
        action="store_true",
        help="diagnosis: run bench._sim_recorder and report request timing",
    )
    parser.add_argument(
        "--trace-workers",
        action="store_true",
        help="diagnosis: run bench._traced_worker (timing probes) as the workers",
    )
    parser.add_argument(
        "--whatif",
        default="",
        help="diagnosis: traced workers with a bench-only change to the limiter "
        "(headroom3, gentle, hintcap, confirm; see bench/_traced_worker.py)",
    )
    parser.add_argument(
        "--profile", type=float, default=0, help="overhead: py-spy the worker for this many s"
    )
    parser.add_argument("--profile-gil", action="store_true", help="py-spy --gil")
    args = parser.parse_args()
    PRETTY = args.pretty
    if args.scenario == "all":
        asyncio.run(run_all(args))
    else:
        asyncio.run(SCENARIOS[args.scenario](args))


if __name__ == "__main__":
    main()
