"""One test's Darkroom: the provider simulator in its own process, `darkroom worker`s and
`darkroom serve` as subprocesses, all on the fault tests' own Postgres and Redis; plus
what the test reads back (jobs in Postgres, arq keys in Redis, webhooks received)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
from arq.constants import in_progress_key_prefix
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from service.dev_key import create_key_now
from service.devenv.probes import free_port
from service.jobs.polls import poll_job_id
from simulators import SimConfig, SimulatorHandle, start_simulator_process
from tests.conftest import ROOT
from tests.faults.processes import Process, Processes
from tests.faults.servers import PostgresServer, RedisServer
from tests.jobs.sim_accounts import SIM_TOKEN_ENV, sim_config
from tests.webhooks.receiver import Receiver

SECRET_KEY = "fault-tests-secret-key-0123456789abcdef"
MODEL = "flux-sim"
# Hangs end when the account's request times out; a generation runs for at most this.
ACCOUNT_TIMEOUT_S = 2.0
MODEL_DEADLINE_S = 30.0
POLL_S = 0.5


@dataclass
class Servers:
    postgres: PostgresServer
    redis: RedisServer
    database_url: str


class Database:
    """Reads what the workers wrote, on fresh connections (a Postgres restart leaves no
    stale pooled connection behind)."""

    def __init__(self, url: str) -> None:
        self.engine: AsyncEngine = create_async_engine(url, poolclass=NullPool)

    async def rows(self, sql: str, **params: Any) -> list[Any]:
        async with self.engine.connect() as connection:
            return list(await connection.execute(text(sql), params))

    async def job_counts(self) -> Counter[str]:
        rows = await self.rows("SELECT status, count(*) FROM jobs GROUP BY status")
        return Counter({status: n for status, n in rows})

    async def running_unsubmitted(self) -> int:
        """Jobs claimed by a worker whose provider request has no stored answer yet: the
        only ones a dead worker can leave to be submitted a second time."""
        rows = await self.rows(
            "SELECT count(*) FROM jobs WHERE status = 'running' AND remote_id IS NULL"
        )
        return int(rows[0][0])

    async def dispose(self) -> None:
        await self.engine.dispose()


@dataclass
class StatusLog:
    """Every HTTP status the API answered (or the transport error instead of one)."""

    codes: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)

    def record(self, what: str, response: httpx.Response | None, error: str = "") -> None:
        key = str(response.status_code) if response is not None else error
        self.codes[key] += 1
        if response is not None and response.status_code >= 500 and response.status_code != 503:
            self.server_errors.append(f"{what} -> {response.status_code} {response.text[:300]}")


class Stack:
    def __init__(self, servers: Servers, tmp: Path) -> None:
        self.servers = servers
        self.tmp = tmp
        self.config_path = tmp / "darkroom.yaml"
        self.env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            # The service code of this checkout, whatever the venv's editable install says.
            "PYTHONPATH": str(ROOT),
            "HOME": str(tmp),
            "DARKROOM_ENV": "development",
            "DARKROOM_DATABASE_URL": servers.database_url,
            "DARKROOM_REDIS_URL": servers.redis.url,
            "DARKROOM_LOCAL_DEFAULTS": "false",
            "DARKROOM_CONFIG": str(self.config_path),
            "DARKROOM_STORAGE_DIR": str(tmp / "outputs"),
            "DARKROOM_DATA_DIR": str(tmp / "data"),
            "DARKROOM_SECRET_KEY": SECRET_KEY,
            "DARKROOM_RECONCILE_INTERVAL_S": "2",
            "DARKROOM_RECONCILE_STALE_AFTER_S": "3",
            "DARKROOM_WEBHOOK_BACKOFF_BASE_S": "0.5",
            SIM_TOKEN_ENV: "sim-token",
        }
        self.processes = Processes(self.env, tmp)
        self.db = Database(servers.database_url)
        self.redis = aioredis.Redis.from_url(servers.redis.url)
        self.simulator: SimulatorHandle | None = None
        self._simulator_process: subprocess.Popen[bytes] | None = None
        self.api_url = ""
        self.api: httpx.AsyncClient | None = None
        self.api_process: Process | None = None

    # -- processes ----------------------------------------------------------------------

    def start_simulator(self, config: SimConfig) -> SimulatorHandle:
        url, self._simulator_process = start_simulator_process(config)
        self.config_path.write_text(
            sim_config(url, timeout_s=ACCOUNT_TIMEOUT_S, deadline_s=MODEL_DEADLINE_S)
        )
        self.simulator = SimulatorHandle(url)
        return self.simulator

    async def start_workers(self, count: int) -> list[Process]:
        return await asyncio.to_thread(self.processes.start_workers, count)

    async def start_api(self) -> httpx.AsyncClient:
        port = free_port()
        self.api_url = f"http://127.0.0.1:{port}"
        self.api_process = await asyncio.to_thread(self.processes.start_api, port)
        created = await create_key_now(self.servers.database_url, "faults", pepper=SECRET_KEY)
        self.api = httpx.AsyncClient(
            base_url=self.api_url,
            headers={"authorization": f"Bearer {created['key']}"},
            timeout=httpx.Timeout(30.0),
        )
        return self.api

    async def close(self) -> None:
        if self.api is not None:
            await self.api.aclose()
        await asyncio.to_thread(self.processes.stop_all)
        if self._simulator_process is not None:
            self._simulator_process.terminate()
            try:
                self._simulator_process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._simulator_process.kill()
                self._simulator_process.wait()
        await self.redis.aclose()
        await self.db.dispose()

    def assert_workers_alive(self) -> None:
        dead = [w for w in self.processes.workers if not w.alive]
        if dead:
            logs = "\n\n".join(
                f"{w.name} exited {w.popen.returncode}:\n{w.log_tail()}" for w in dead
            )
            raise AssertionError(f"{len(dead)} darkroom worker(s) died:\n{logs}")

    # -- the API ------------------------------------------------------------------------

    async def submit(
        self, jobs: int, *, tag: str, callback_url: str | None = None, log: StatusLog | None = None
    ) -> str | None:
        """POST a batch of `jobs` unique prompts; its id, or None when it was refused."""
        assert self.api is not None
        body: dict[str, Any] = {
            "defaults": {"model": MODEL, "width": 64, "height": 64},
            "jobs": [{"prompt": f"{tag} {n}"} for n in range(jobs)],
        }
        if callback_url is not None:
            body["callback_url"] = callback_url
        try:
            response = await self.api.post("/v1/batches", json=body)
        except httpx.HTTPError as exc:
            if log is None:
                raise
            log.record("POST /v1/batches", None, type(exc).__name__)
            return None
        if log is not None:
            log.record("POST /v1/batches", response)
        if response.status_code == 202:
            return str(response.json()["id"])
        if log is None:
            raise AssertionError(f"batch refused: {response.status_code} {response.text}")
        return None

    async def get_batch(self, batch_id: str, log: StatusLog) -> None:
        assert self.api is not None
        try:
            response = await self.api.get(f"/v1/batches/{batch_id}")
        except httpx.HTTPError as exc:
            log.record("GET /v1/batches/{id}", None, type(exc).__name__)
            return
        log.record(f"GET /v1/batches/{batch_id}", response)

    # -- waiting and explaining ---------------------------------------------------------

    async def locked_polls(self, job_ids: list[str]) -> dict[str, float]:
        """Polls arq will not run again before their in-progress key expires (seconds
        left): what a worker killed in the middle of a poll leaves behind."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.pttl(in_progress_key_prefix + poll_job_id(job_id))
            ttls = await pipe.execute()
        return {job_id: ms / 1000 for job_id, ms in zip(job_ids, ttls, strict=True) if ms > 0}

    async def polls_in_progress(self) -> int:
        """Polls some worker (alive or not) is running now, by their arq lock."""
        pattern = in_progress_key_prefix + poll_job_id("*")
        return len([key async for key in self.redis.scan_iter(match=pattern, count=1000)])

    async def explain(self) -> str:
        counts = await self.db.job_counts()
        stuck = await self.db.rows(
            "SELECT id::text, status, remote_id IS NOT NULL, attempts, updated_at "
            "FROM jobs WHERE status IN ('queued', 'running') ORDER BY updated_at LIMIT 10"
        )
        lines = [f"jobs by status: {dict(counts)}"]
        locked = await self.locked_polls([row[0] for row in stuck])
        for job_id, status, submitted, attempts, updated in stuck:
            lock = (
                f", poll locked by arq for {locked[job_id]:.0f} s more" if job_id in locked else ""
            )
            lines.append(
                f"  {job_id} {status} submitted={submitted} attempts={attempts} "
                f"updated={updated:%H:%M:%S}{lock}"
            )
        lines.append(f"workers alive: {[w.name for w in self.processes.live_workers()]}")
        return "\n".join(lines)

    async def wait_until_no_active_jobs(
        self, *, timeout_s: float, also: Callable[[], Awaitable[bool]] | None = None
    ) -> float:
        """Until no job is queued or running (and `also` holds); returns the seconds it
        took. Fails at once when every worker died, or when what is left waits on an arq
        lock that outlives the deadline."""
        began = time.monotonic()
        deadline = began + timeout_s
        locked_since: dict[str, float] = {}
        while True:
            counts = await self.db.job_counts()
            active = counts["queued"] + counts["running"]
            if active == 0 and (also is None or await also()):
                return time.monotonic() - began
            if not self.processes.live_workers():
                self.assert_workers_alive()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"work still unfinished after {timeout_s:.0f} s:\n" + await self.explain()
                )
            if 0 < active <= 300:
                await self._fail_if_locked_past(left, locked_since)
            await asyncio.sleep(POLL_S)

    async def _fail_if_locked_past(self, left_s: float, locked_since: dict[str, float]) -> None:
        """Every job left is running at the provider and its poll has been held by an arq
        in-progress key for longer than any live poll takes (a live poll is one request
        and a download, under 15 s), a key that outlives the deadline."""
        rows = await self.db.rows(
            "SELECT id::text, status, remote_id IS NOT NULL FROM jobs "
            "WHERE status IN ('queued', 'running')"
        )
        locked = await self.locked_polls([row[0] for row in rows])
        now = time.monotonic()
        for job_id in list(locked_since):
            if job_id not in locked:
                del locked_since[job_id]
        for job_id in locked:
            locked_since.setdefault(job_id, now)
        held = [
            job_id
            for job_id, status, submitted in rows
            if status == "running" and submitted and now - locked_since.get(job_id, now) > 15
        ]
        if rows and len(held) == len(rows) and min(locked[j] for j in held) > left_s:
            ttls = [locked[j] for j in held]
            raise AssertionError(
                f"{len(rows)} job(s) stuck running: each one's poll is held by the arq "
                f"in-progress key of a worker that was killed, for {min(ttls):.0f}-"
                f"{max(ttls):.0f} s more, past this test's deadline:\n" + await self.explain()
            )


def webhook_ids_by_event(receiver: Receiver) -> dict[tuple[str, str], set[str]]:
    """(event type, job or batch id) -> the webhook-ids it arrived under. A request cut
    short by a worker killed while sending it has no whole body and is left out (the
    event is sent again)."""
    seen: dict[tuple[str, str], set[str]] = defaultdict(set)
    for request in receiver.received:
        try:
            payload = json.loads(request.body)
        except ValueError:
            continue
        seen[(payload["type"], payload["data"]["id"])].add(request.headers["webhook-id"])
    return seen


def cut_short(receiver: Receiver) -> int:
    """Requests whose sender died before the body was whole."""
    count = 0
    for request in receiver.received:
        try:
            json.loads(request.body)
        except ValueError:
            count += 1
    return count
