"""What every benchmark needs: its own database, Redis db and queue names, an API key,
and Darkroom processes started as subprocesses with the matching DARKROOM_* environment.

Nothing here touches the databases, Redis dbs or queues that tests or `darkroom up` use:
the database is darkroom_bench_<random> (dropped at the end), the Redis db is claimed
with the same SET NX handshake tests/conftest.py uses (counting down from 15, while
tests count up from 1), and queue names carry the run id.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis as sync_redis

from service.auth.service import create_key
from service.config import Settings
from service.db import create_engine, create_sessionmaker, session_scope
from service.devenv import create_database_if_missing, drop_database
from service.devenv.probes import asyncpg_url
from service.devenv.redis_dbs import claim_redis_db, release_redis_db, with_db
from service.migrate import upgrade_to_head

POSTGRES_SERVER = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
REDIS_SERVER = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries only the JSON figures."""
    sys.stderr.write(f"bench: {message}\n")
    sys.stderr.flush()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    if port in (8000, 5432, 6379):
        return free_port()
    return port


@dataclass
class BenchEnv:
    run_id: str
    settings: Settings
    redis_db: int
    workdir: Path
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        s = self.settings
        return {
            **os.environ,
            "DARKROOM_DATABASE_URL": s.database_url,
            "DARKROOM_REDIS_URL": s.redis_url,
            "DARKROOM_QUEUE_NAME": s.queue_name,
            "DARKROOM_WEBHOOK_QUEUE_NAME": s.webhook_queue_name,
            "DARKROOM_STORAGE_DIR": str(s.storage_dir),
            "DARKROOM_DATA_DIR": str(s.data_dir),
            "DARKROOM_PUBLIC_URL": s.public_url,
            "DARKROOM_LOCAL_DEFAULTS": "false",
            "DARKROOM_SECRET_KEY": s.secret_key,
            "DARKROOM_WORKER_CONCURRENCY": str(s.worker_concurrency),
            "DARKROOM_WORKER_POLL_DELAY_S": str(s.worker_poll_delay_s),
        }

    @property
    def pg_dsn(self) -> str:
        """The database URL as asyncpg.connect takes it."""
        return self.settings.database_url.replace("postgresql+asyncpg://", "postgresql://")

    def redis(self) -> sync_redis.Redis:
        return sync_redis.Redis.from_url(self.settings.redis_url)

    def spawn(
        self,
        *args: str,
        name: str,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """`python -m service.cli <args>`; its stderr goes to <workdir>/<name>.log."""
        logfile = (self.workdir / f"{name}.log").open("ab")
        child = subprocess.Popen(
            [sys.executable, "-m", "service.cli", *args],
            env={**self.env, **(extra_env or {})},
            cwd=self.workdir,  # no stray .env from the checkout is read
            stdout=logfile,
            stderr=subprocess.STDOUT,
        )
        self.children.append(child)
        return child

    def stop(self, child: subprocess.Popen[bytes], timeout: float = 30.0) -> dict[str, object]:
        """SIGTERM, then wait; reports how the process ended and how long it took."""
        if child.poll() is not None:
            return {"exit_code": child.returncode, "stop_s": 0.0, "already_exited": True}
        began = time.perf_counter()
        child.send_signal(signal.SIGTERM)
        try:
            code = child.wait(timeout=timeout)
            killed = False
        except subprocess.TimeoutExpired:
            child.kill()
            code = child.wait()
            killed = True
        return {
            "exit_code": code,
            "stop_s": round(time.perf_counter() - began, 3),
            "killed_after_timeout": killed,
        }

    def start_api(self) -> str:
        port = free_port()
        child = self.spawn("serve", "--port", str(port), name="api")
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if child.poll() is not None:
                raise RuntimeError(
                    f"API exited with {child.returncode}; see {self.workdir}/api.log"
                )
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    return base
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("API did not become ready in 30 s")

    async def create_api_key(self, name: str = "bench") -> str:
        engine = create_engine(self.settings.database_url, pool_size=1)
        try:
            async with session_scope(create_sessionmaker(engine)) as session:
                created = await create_key(session, name, pepper=self.settings.secret_key)
            return created.key
        finally:
            await engine.dispose()


@contextmanager
def bench_env(*, worker_concurrency: int = 8) -> Iterator[BenchEnv]:
    """A fresh database + Redis db + queue names; everything is removed on exit."""
    run_id = uuid.uuid4().hex[:10]
    database_url = asyncpg_url(POSTGRES_SERVER, database=f"darkroom_bench_{run_id}")
    database_url_str = database_url.render_as_string(hide_password=False)
    workdir = Path(tempfile.mkdtemp(prefix=f"darkroom-bench-{run_id}-"))
    redis_db = claim_redis_db(REDIS_SERVER, f"bench-{run_id}")
    env: BenchEnv | None = None
    try:
        log(f"database darkroom_bench_{run_id}, redis db {redis_db}, workdir {workdir}")
        create_database_if_missing(database_url_str)
        upgrade_to_head(database_url_str)
        settings = Settings(
            _env_file=None,
            database_url=database_url_str,
            redis_url=with_db(REDIS_SERVER, redis_db),
            queue_name=f"bench:{run_id}:jobs",
            webhook_queue_name=f"bench:{run_id}:webhooks",
            storage_dir=workdir / "outputs",
            data_dir=workdir / "data",
            public_url="http://127.0.0.1:1",
            worker_concurrency=worker_concurrency,
            secret_key=secrets.token_hex(32),
        )
        env = BenchEnv(run_id, settings, redis_db, workdir)
        client = env.redis()
        client.flushdb()
        client.close()
        yield env
    finally:
        if env is not None:
            for child in env.children:
                env.stop(child)
            client = env.redis()
            client.flushdb()
            client.close()
        drop_database(database_url_str)
        release_redis_db(REDIS_SERVER, redis_db, f"bench-{run_id}")
        shutil.rmtree(workdir, ignore_errors=True)
        log("cleaned up database, redis db and workdir")
