"""What the dispatch benchmark (bench/dispatch.py) needs around BenchEnv: the provider
simulator in its own process, a DARKROOM_CONFIG pointing at it with the scenario's
limits, the API (for provider callbacks) and `darkroom worker` processes; jobs inserted
the fast way; and the figures read back from Postgres, Redis, the simulator and /proc.

Everything started here is stopped by `DispatchStack.close()` (called in a finally).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx

from bench._harness import BenchEnv, bench_env, free_port, log
from bench._payload import prompt
from service.auth.service import find_key
from service.batches import service as batches
from service.batches.schemas import BatchCreate
from service.db import session_scope
from service.jobs.tasks import enqueue_jobs
from service.models import Priority
from service.ratelimit import limiter_key, slots_key
from service.state import State
from simulators import SimConfig, SyncSimulatorHandle, start_simulator_process
from simulators.runner import wait_until_answering

ROOT = Path(__file__).resolve().parents[1]
SIM_TOKEN_ENV = "DARKROOM_BENCH_SIM_TOKEN"
SIM_TOKEN = "sim-token"
REPLICATE_MODEL = "flux-sim"
OPENAI_MODEL = "gpt-sim"
# Not one of the simulator's fixed-size GPT image models, so any size is accepted.
OPENAI_REF = "sim-image-1"
MAX_BATCH = 10_000
FINAL = ("succeeded", "failed", "cancelled")


def darkroom_config(
    sim_url: str,
    *,
    replicate: dict[str, Any] | None = None,
    openai: dict[str, Any] | None = None,
) -> str:
    """One Replicate and one OpenAI account at the simulator, with the given limits."""
    config = {
        "providers": {
            "replicate": {
                "kind": "replicate",
                "base_url": sim_url,
                "token_env": SIM_TOKEN_ENV,
                "limits": replicate or {},
                "timeout_s": 30,
            },
            "openai": {
                "kind": "openai",
                "base_url": sim_url + "/v1",
                "token_env": SIM_TOKEN_ENV,
                "limits": openai or {},
                "timeout_s": 30,
            },
        },
        "models": {
            REPLICATE_MODEL: {"provider": "replicate", "ref": "black-forest-labs/flux-schnell"},
            OPENAI_MODEL: {"provider": "openai", "ref": OPENAI_REF},
        },
    }
    return json.dumps(config, indent=2)  # JSON is YAML


def job_body(
    count: int, *, model: str, size: int, priority: str, tag: str, fmt: str = "png"
) -> dict[str, Any]:
    """A batch whose every job has a distinct input (the simulator counts a repeated
    input as a duplicate submission)."""
    rng = random.Random(tag)
    return {
        "name": f"bench {tag}",
        "priority": priority,
        "defaults": {"model": model, "width": size, "height": size, "format": fmt},
        "jobs": [
            {"prompt": f"{prompt(rng)} [{tag}/{index}]", "seed": index} for index in range(count)
        ],
    }


async def insert_jobs(
    state: State,
    api_key: str,
    *,
    model: str,
    count: int,
    priority: str = "bulk",
    size: int = 256,
    tag: str = "",
) -> list[uuid.UUID]:
    """Store and enqueue `count` jobs as POST /v1/batches does (submit_batch, commit,
    enqueue_jobs), in batches of at most 10,000 (the API's limit)."""
    batch_ids: list[uuid.UUID] = []
    tag = tag or uuid.uuid4().hex[:8]
    for number, start in enumerate(range(0, count, MAX_BATCH)):
        n = min(MAX_BATCH, count - start)
        body = BatchCreate.model_validate(
            job_body(n, model=model, size=size, priority=priority, tag=f"{tag}-{number}")
        )
        async with session_scope(state.sessionmaker) as session:
            key = await find_key(session, api_key, pepper=state.settings.secret_key)
            assert key is not None
            submitted = await batches.submit_batch(
                session,
                api_key=key,
                body=body,
                idempotency_key=None,
                registry=state.registry,
                settings=state.settings,
            )
        await enqueue_jobs(state, submitted.batch.id, Priority(priority), submitted.jobs)
        batch_ids.append(submitted.batch.id)
    return batch_ids


@asynccontextmanager
async def async_bench_env(**kwargs: Any) -> AsyncIterator[BenchEnv]:
    """bench_env from inside an event loop: its set-up (Alembic runs its own asyncio.run)
    and clean-up run in a thread."""
    manager = bench_env(**kwargs)
    env = await asyncio.to_thread(manager.__enter__)
    try:
        yield env
    except BaseException as exc:
        if not await asyncio.to_thread(manager.__exit__, type(exc), exc, exc.__traceback__):
            raise
    else:
        await asyncio.to_thread(manager.__exit__, None, None, None)


def start_recording_simulator(config: SimConfig) -> tuple[str, subprocess.Popen[bytes]]:
    """bench._sim_recorder in its own process, as start_simulator_process does."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "bench._sim_recorder", "--port", str(port)]
    command += ["--config", config.model_dump_json()]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        wait_until_answering(url, 20, alive=lambda: process.poll() is None)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return url, process


def admission_timing(
    admissions: Sequence[tuple[float, str, str | None]],
    provider: str,
    interval_s: float,
    window: tuple[int, int],
) -> dict[str, Any]:
    """How evenly requests met the simulator's limiter in the steady window: gaps
    between accepted creations, and how early each rate 429 came (before the moment
    the limiter would have taken it, i.e. the last accepted one + the interval)."""
    rows = [(t, cause) for t, p, cause in admissions if p == provider]
    accepted = [t for t, cause in rows if cause is None and window[0] <= t < window[1]]
    gaps = sorted((b - a) * 1000 for a, b in itertools.pairwise(accepted))
    early: list[float] = []
    last_ok: float | None = None
    for t, cause in rows:
        if cause is None:
            last_ok = t
        elif cause == "rate" and last_ok is not None:
            early.append(round((last_ok + interval_s - t) * 1000, 2))

    def pct(q: float) -> float | None:
        return round(gaps[min(len(gaps) - 1, int(q * len(gaps)))], 2) if gaps else None

    return {
        "interval_ms": round(interval_s * 1000, 2),
        "accepted_gaps_ms": {
            q: pct(p)
            for q, p in (("p1", 0.01), ("p5", 0.05), ("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
        },
        "accepted_gaps_under_interval_plus_1ms": sum(1 for g in gaps if g < interval_s * 1000 + 1),
        "accepted_in_window": len(accepted),
        "rate_429_ms_too_early": early[:50],
        "rate_429_times_s": [round(t, 2) for t, cause in rows if cause == "rate"][:50],
    }


def trace_analysis(traces: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """From bench._traced_worker: how long after its rate token each submission reached
    httpx's transport, how late the workers' event loops ran, and for every 429 how the
    sends around it were timed."""
    sends = [
        {"job": job, **values}
        for trace in traces
        for job, values in trace["sends"].items()
        if "token" in values and "transport" in values
    ]
    sends.sort(key=lambda s: s["token"])
    delays = sorted((s["transport"] - s["token"]) * 1000 for s in sends)
    lags = sorted(lag for trace in traces for lag in trace["loop_lag_ms"])

    def pct(values: list[float], q: float) -> float | None:
        return round(values[min(len(values) - 1, int(q * len(values)))], 2) if values else None

    def dist(values: list[float]) -> dict[str, float | None]:
        return {
            name: pct(values, q)
            for name, q in (
                ("p50", 0.5),
                ("p90", 0.9),
                ("p99", 0.99),
                ("p999", 0.999),
                ("max", 1.0),
            )
        }

    around_429 = []
    for index, send in enumerate(sends):
        if send.get("status") != 429 or index == 0:
            continue
        before = sends[index - 1]
        around_429.append(
            {
                "token_gap_ms": round((send["token"] - before["token"]) * 1000, 2),
                "send_gap_ms": round((send["transport"] - before["transport"]) * 1000, 2),
                "previous_token_to_send_ms": round(
                    (before["transport"] - before["token"]) * 1000, 2
                ),
                "this_token_to_send_ms": round((send["transport"] - send["token"]) * 1000, 2),
            }
        )
    segments: dict[str, list[float]] = {}
    for trace in traces:
        for name, values in trace.get("segments", {}).items():
            segments.setdefault(name, []).extend(values)
    steps = {
        name: {"n": len(v), "mean_ms": round(sum(v) / len(v), 2), **dist(sorted(v))}
        for name, v in sorted(segments.items())
        if v
    }
    return {
        "job_steps": steps,
        "submissions_traced": len(sends),
        "token_to_transport_ms": dist(delays),
        "over_1ms": sum(1 for d in delays if d > 1),
        "over_5ms": sum(1 for d in delays if d > 5),
        "over_20ms": sum(1 for d in delays if d > 20),
        "event_loop_lag_ms": dist(lags),
        "around_each_429": around_429[:30],
    }


# --- processes ------------------------------------------------------------------------


@dataclass
class DispatchStack:
    """The simulator, the API and the workers of one scenario."""

    env: BenchEnv
    sim_config: SimConfig
    limits: dict[str, dict[str, Any]]
    sim_url: str = ""
    sim_process: subprocess.Popen[bytes] | None = None
    api_url: str | None = None
    api: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    worker_stops: list[dict[str, object]] = field(default_factory=list)
    # Run bench._sim_recorder instead: the same simulator, logging every admission.
    record_admissions: bool = False
    # Run bench._traced_worker instead of `darkroom worker`: timing probes, no changes.
    trace_workers: bool = False
    # With trace_workers: DARKROOM_BENCH_WHATIF for bench._traced_worker (see there).
    whatif: str = ""
    # With trace_workers: time the steps of every job (DARKROOM_BENCH_SEGMENTS).
    segments: bool = False

    @property
    def config_path(self) -> Path:
        return self.env.workdir / "darkroom.yaml"

    @property
    def sim(self) -> SyncSimulatorHandle:
        return SyncSimulatorHandle(self.sim_url)

    def start(self, *, api: bool) -> None:
        """Simulator, config file (also installed in the bench's own settings) and, for
        provider callbacks, the API."""
        if self.record_admissions:
            self.sim_url, self.sim_process = start_recording_simulator(self.sim_config)
        else:
            self.sim_url, self.sim_process = start_simulator_process(self.sim_config)
        log(f"simulator at {self.sim_url}: {self.sim_config.model_dump(exclude_defaults=True)}")
        self.config_path.write_text(darkroom_config(self.sim_url, **self.limits))
        self.env.settings.config = self.config_path
        # This process stores jobs too, and a model whose token is not set is refused.
        os.environ[SIM_TOKEN_ENV] = SIM_TOKEN
        if api:
            self.start_api()

    def admissions(self) -> list[tuple[float, str, str | None]]:
        response = httpx.get(f"{self.sim_url}/_bench/admissions", timeout=30)
        response.raise_for_status()
        return [tuple(row) for row in response.json()]  # type: ignore[misc]

    def base_env(self) -> dict[str, str]:
        return {
            "DARKROOM_CONFIG": str(self.config_path),
            SIM_TOKEN_ENV: SIM_TOKEN,
        }

    def start_api(self) -> str:
        """`darkroom serve` on a free port (BenchEnv.start_api with the config env)."""
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        extra = self.base_env() | {"DARKROOM_PUBLIC_URL": base}
        child = self.env.spawn("serve", "--port", str(port), name="api", extra_env=extra)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if child.poll() is not None:
                raise RuntimeError(f"API exited with {child.returncode}; see {self.env.workdir}")
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    self.api, self.api_url = child, base
                    log(f"API at {base}")
                    return base
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("API did not become ready in 30 s")

    def start_workers(self, count: int, *, concurrency: int, callbacks: bool) -> None:
        extra = self.base_env() | {"DARKROOM_WORKER_CONCURRENCY": str(concurrency)}
        if callbacks:
            if self.api_url is None:
                raise RuntimeError("callbacks need the API")
            extra |= {"DARKROOM_CALLBACK_URL": self.api_url}
        for _ in range(count):
            name = f"worker-{len(self.workers)}"
            if self.trace_workers:
                child = self._spawn_traced(name, extra)
            else:
                child = self.env.spawn("worker", name=name, extra_env=extra)
            self.workers.append(child)
            log(f"started {name} (pid {child.pid}, concurrency {concurrency})")

    def _spawn_traced(self, name: str, extra: dict[str, str]) -> subprocess.Popen[bytes]:
        trace = self.env.workdir / f"{name}.trace.json"
        env = self.env.env | extra | {"DARKROOM_TRACE_FILE": str(trace), "PYTHONPATH": str(ROOT)}
        env["DARKROOM_BENCH_WHATIF"] = self.whatif
        env["DARKROOM_BENCH_SEGMENTS"] = "1" if self.segments else ""
        logfile = (self.env.workdir / f"{name}.log").open("ab")
        child = subprocess.Popen(
            [sys.executable, "-m", "bench._traced_worker"],
            env=env,
            cwd=self.env.workdir,
            stdout=logfile,
            stderr=subprocess.STDOUT,
        )
        self.env.children.append(child)
        return child

    def traces(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted(self.env.workdir.glob("*.trace.json"))]

    def check_alive(self) -> None:
        for child in [*self.workers, *([self.api] if self.api else [])]:
            if child.poll() is not None:
                raise RuntimeError(
                    f"pid {child.pid} exited with {child.returncode}; see {self.env.workdir}"
                )
        if self.sim_process is not None and self.sim_process.poll() is not None:
            raise RuntimeError(f"simulator exited with {self.sim_process.returncode}")

    def stop_workers(self, timeout: float = 40.0) -> list[dict[str, object]]:
        """SIGTERM to every worker at once (one signal each: a second one, arriving after
        the worker's handler is gone, would kill it), then wait for each."""
        began = time.perf_counter()
        for child in self.workers:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        stops: list[dict[str, object]] = []
        for child in self.workers:
            try:
                code = child.wait(timeout=max(0.1, timeout - (time.perf_counter() - began)))
                killed = False
            except subprocess.TimeoutExpired:
                child.kill()
                code, killed = child.wait(), True
            stops.append({"exit_code": code, "killed_after_timeout": killed})
        stops.append({"all_stopped_s": round(time.perf_counter() - began, 3)})
        self.worker_stops += stops
        self.workers = []
        return stops

    def close(self) -> None:
        try:
            self.stop_workers()
            if self.api is not None:
                self.env.stop(self.api)
                self.api = None
        finally:
            if self.sim_process is not None and self.sim_process.poll() is None:
                self.sim_process.terminate()
                try:
                    self.sim_process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.sim_process.kill()
                    self.sim_process.wait()
            self.sim_process = None

    def log_summary(self, examples: int = 3) -> dict[str, Any]:
        """Warnings and errors in the workers' and API's logs, counted by event, with the
        first few error lines (tracebacks included)."""
        counts: Counter[str] = Counter()
        errors: list[str] = []
        for path in sorted(self.env.workdir.glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()
            for number, line in enumerate(lines):
                match = _LOG_EVENT.search(line)
                if match is not None:
                    code = _LOG_CODE.search(line)
                    suffix = f" code={code.group(1)}" if code else ""
                    counts[f"{match.group(1)} {match.group(2)}{suffix}"] += 1
                    if match.group(1) != "warning" and len(errors) < examples:
                        errors.append(f"{path.name}: {line[:300]}")
                elif line.startswith("Traceback") or " ERROR " in line:
                    counts["traceback/ERROR line"] += 1
                    if len(errors) < examples:
                        # The traceback's last lines say what and where.
                        tail = [t for t in lines[number + 1 : number + 60] if t.strip()]
                        end = next(
                            (i for i, t in enumerate(tail) if not t.startswith((" ", "\t"))),
                            len(tail) - 1,
                        )
                        last = tail[max(0, end - 4) : end + 1]
                        context = " | ".join(t.strip()[:200] for t in last)
                        errors.append(f"{path.name}: {line[:100]} ... {context}")
        return {"events": dict(counts.most_common()), "error_examples": errors}


_LOG_EVENT = re.compile(r"\[(warning|error|critical)\s*\]\s+(\S+)")
_LOG_CODE = re.compile(r"\bcode=(\S+)")


# --- figures from Postgres ------------------------------------------------------------


def epoch(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


async def final_count(pg: asyncpg.Connection, batch_ids: Sequence[uuid.UUID]) -> int:
    return int(
        await pg.fetchval(
            "SELECT count(*) FROM jobs WHERE batch_id = ANY($1) AND status = ANY($2)",
            list(batch_ids),
            list(FINAL),
        )
    )


async def job_figures(pg: asyncpg.Connection, batch_ids: Sequence[uuid.UUID]) -> dict[str, Any]:
    ids = list(batch_ids)
    rows = await pg.fetch(
        "SELECT status, count(*) AS n FROM jobs WHERE batch_id = ANY($1) GROUP BY status", ids
    )
    span = await pg.fetchrow(
        """SELECT min(started_at) AS first_started, max(finished_at) AS last_finished,
                  sum(attempts) AS attempts, sum(tries) AS tries
           FROM jobs WHERE batch_id = ANY($1)""",
        ids,
    )
    outcomes = await pg.fetch(
        """SELECT a.outcome, count(*) AS n FROM job_attempts a JOIN jobs j ON j.id = a.job_id
           WHERE j.batch_id = ANY($1) GROUP BY a.outcome""",
        ids,
    )
    errors = await pg.fetch(
        """SELECT error_code, count(*) AS n FROM jobs
           WHERE batch_id = ANY($1) AND status = 'failed' GROUP BY error_code""",
        ids,
    )
    return {
        "by_status": {r["status"]: int(r["n"]) for r in rows},
        "first_started": epoch(span["first_started"]),
        "last_finished": epoch(span["last_finished"]),
        "attempts": int(span["attempts"] or 0),
        "tries": int(span["tries"] or 0),
        "attempt_outcomes": {str(r["outcome"]): int(r["n"]) for r in outcomes},
        "failed_by_code": {str(r["error_code"]): int(r["n"]) for r in errors},
    }


# --- figures from the simulator -------------------------------------------------------


def active_span(per_second: Sequence[int]) -> tuple[int, int] | None:
    """[first, last] whole seconds with anything counted."""
    busy = [i for i, n in enumerate(per_second) if n > 0]
    return (busy[0], busy[-1]) if busy else None


def steady_window(per_second: Sequence[int], trim_s: int) -> tuple[int, int]:
    """[start, end) of the active span with `trim_s` whole seconds cut at each end."""
    span = active_span(per_second)
    if span is None:
        return 0, 0
    start, end = span[0] + trim_s, span[1] + 1 - trim_s
    if end - start < 5:  # too short to trim: use the whole span
        start, end = span[0], span[1] + 1
    return start, end


def window_sum(per_second: Sequence[int], start: int, end: int) -> int:
    return sum(per_second[max(0, start) : max(0, end)])


def window_rate(per_second: Sequence[int], start: int, end: int) -> float:
    return window_sum(per_second, start, end) / max(1, end - start)


def padded(values: Sequence[int], length: int) -> list[int]:
    return list(values) + [0] * max(0, length - len(values))


# --- limiter samples from Redis -------------------------------------------------------


async def limiter_sample(state: State, account: str) -> dict[str, float]:
    raw: dict[bytes, bytes] = await state.redis.hgetall(limiter_key(account))  # type: ignore[misc]
    values = {k.decode(): v.decode() for k, v in raw.items()}
    now_ms = time.time() * 1000
    in_flight = await state.redis.zcount(slots_key(account), now_ms, "+inf")
    return {
        "rate": float(values["rate"]) if "rate" in values else float("nan"),
        "w_max": float(values["w_max"]) if "w_max" in values else float("nan"),
        "cuts": float(values.get("cuts", 0)),
        "grants": float(values.get("grants", 0)),
        "rate_limited": float(values.get("rate_limited", 0)),
        "forgiven": float(values.get("forgiven", 0)),  # only with the "forgive" what-if
        "confirm_pushed": float(values.get("confirm_pushed", 0)),  # the "confirm" what-if
        "in_flight": float(in_flight),
    }


# --- profiles -------------------------------------------------------------------------


def start_py_spy(
    pid: int, seconds: float, output: Path, *, gil: bool = False
) -> subprocess.Popen[bytes]:
    """py-spy (installed in the venv) sampling a process into a collapsed-stack file;
    with `gil`, only samples of the thread holding the GIL (Python doing work)."""
    command = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid)]
    command += ["--duration", str(int(seconds)), "--format", "raw", "--function"]
    command += ["--nonblocking", "--output", str(output), *(["--gil"] if gil else [])]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile_summary(path: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive sample shares by function, from a collapsed-stack file, and
    the shares by where a stack starts: the event loop, an executor thread, or a
    greenlet (SQLAlchemy runs the ORM's synchronous code in greenlets, whose stacks
    py-spy sees without the event-loop frames above them)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    roots: Counter[str] = Counter()
    greenlets: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f.strip() for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
        root = frames[0]
        if "runpy" in root:
            roots["event loop (main thread)"] += count
        elif "threading" in root or "_bootstrap" in root:
            roots["executor threads"] += count
        else:
            roots["greenlets (SQLAlchemy sync code)"] += count
            greenlets[" > ".join(f.split(" (")[0] for f in frames[:2])] += count

    def shares(counter: Counter[str], n: int = top) -> list[tuple[str, float]]:
        return [(name[:140], round(c / max(1, total), 3)) for name, c in counter.most_common(n)]

    return {
        "samples": total,
        "by_root": shares(roots),
        "greenlet_roots": shares(greenlets, 12),
        "self": shares(own),
        "inclusive": shares(inclusive),
    }


async def pg_wait_events(dsn: str, database: str, stop: asyncio.Event) -> Counter[str]:
    """What the benchmark database's backends are doing, sampled every 20 ms."""
    counts: Counter[str] = Counter()
    connection = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            rows = await connection.fetch(
                """SELECT state, wait_event_type, wait_event FROM pg_stat_activity
                   WHERE datname = $1 AND pid <> pg_backend_pid()""",
                database,
            )
            for row in rows:
                if row["state"] == "idle":
                    counts["idle"] += 1
                else:
                    counts[f"{row['state']}:{row['wait_event_type']}:{row['wait_event']}"] += 1
            await asyncio.sleep(0.02)
    finally:
        await connection.close()
    return counts


# --- CPU: ours, Postgres/Redis, everyone else -----------------------------------------


def _proc_table() -> dict[int, tuple[str, int, int]]:
    """pid -> (comm, ppid, utime+stime ticks) of every process."""
    table: dict[int, tuple[str, int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                text = stat.read()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        table[int(entry)] = (comm, int(fields[1]), int(fields[11]) + int(fields[12]))
    return table


def _descendants(table: dict[int, tuple[str, int, int]], root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = set(), [root]
    while stack:
        pid = stack.pop()
        found.add(pid)
        stack += children.get(pid, [])
    return found


def _reaped_children_ticks() -> int:
    times = os.times()
    return round((times.children_user + times.children_system) * os.sysconf("SC_CLK_TCK"))


def _total_ticks() -> tuple[int, int]:
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class CpuAccount:
    """Cores used between start() and stop(), split into this benchmark's process tree,
    Postgres + Redis (all of their processes, whoever they serve) and everything else
    (another test suite on the machine shows up there)."""

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._busy0, _ = _total_ticks()
        self._reaped0 = _reaped_children_ticks()
        self._ours: dict[int, int] = {}
        self._servers: dict[int, int] = {}
        self._sample(first=True)

    def _sample(self, *, first: bool = False) -> tuple[int, int]:
        table = _proc_table()
        ours = _descendants(table, os.getpid())
        ours_ticks = servers_ticks = 0
        for pid, (comm, _, ticks) in table.items():
            if pid in ours:
                base = self._ours.setdefault(pid, ticks if first else 0)
                ours_ticks += ticks - base
            elif comm.startswith(("postgres", "redis-server")):
                base = self._servers.setdefault(pid, ticks if first else 0)
                servers_ticks += ticks - base
        if not first:
            # Children that exited (and were waited for) meanwhile: their whole CPU time
            # is in os.times(), minus what they had used before start().
            gone = sum(base for pid, base in self._ours.items() if pid not in table)
            ours_ticks += _reaped_children_ticks() - self._reaped0 - gone
        return ours_ticks, servers_ticks

    def stop(self) -> dict[str, float]:
        ours, servers = self._sample()
        busy1, _ = _total_ticks()
        elapsed = max(1e-6, time.monotonic() - self._t0)
        hz = os.sysconf("SC_CLK_TCK")
        total = (busy1 - self._busy0) / hz / elapsed
        ours_c, servers_c = ours / hz / elapsed, servers / hz / elapsed
        return {
            "cores_busy_total": round(total, 2),
            "cores_bench_processes": round(ours_c, 2),
            "cores_postgres_redis": round(servers_c, 2),
            "cores_everything_else": round(max(0.0, total - ours_c - servers_c), 2),
            "loadavg_1m_at_end": float(open("/proc/loadavg").read().split()[0]),
        }
