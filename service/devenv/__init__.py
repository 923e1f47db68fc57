"""Find or start the Postgres and Redis that development and the tests run against.

For each of the two, in order: the explicit URL if it answers; else, when allowed, the usual
local server (127.0.0.1:5432 / 6379); else an embedded server kept under data_dir, on a free
port that is never the usual one, so it cannot shadow or be shadowed by a system install.
"""

from __future__ import annotations

import atexit
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

from sqlalchemy.engine import make_url

from service.devenv.console import say
from service.devenv.databases import create_database_if_missing, drop_database
from service.devenv.lifecycle import EmbeddedServer, Log
from service.devenv.postgres_server import start_embedded_postgres
from service.devenv.probes import asyncpg_url, postgres_answers, redis_answers
from service.devenv.redis_server import start_embedded_redis

__all__ = [
    "RunningServices",
    "create_database_if_missing",
    "drop_database",
    "ensure_services",
]

LOCAL_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"


def log_to_stderr(message: str) -> None:
    say(f"devenv: {message}", err=True)


@dataclass
class RunningServices:
    database_url: str
    redis_url: str
    embedded: list[str] = field(default_factory=list)
    _servers: list[EmbeddedServer] = field(default_factory=list, repr=False)
    _log: Log = field(default=log_to_stderr, repr=False)

    def __post_init__(self) -> None:
        if self._servers:
            atexit.register(self.stop)
            _exit_cleanly_on_termination_signals()

    def stop(self) -> None:
        """Stop the embedded servers we use, unless another process still uses them."""
        servers, self._servers = self._servers, []
        atexit.unregister(self.stop)
        for server in reversed(servers):
            server.release(self._log)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _raise_system_exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _exit_cleanly_on_termination_signals() -> None:
    """By default SIGTERM/SIGHUP kill Python without running atexit: the servers would leak.

    Only default handlers are replaced, so uvicorn's or arq's own handling is left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _raise_system_exit)


def _describe(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _choose(
    what: str,
    candidates: list[tuple[str, str]],
    answers: Callable[[str], bool],
    log: Log,
) -> str | None:
    for source, url in candidates:
        if answers(url):
            log(f"{what}: using {source} {_describe(url)}")
            return url
        log(f"{what}: {source} {_describe(url)} does not answer")
    return None


def _candidates(explicit: str | None, local: str, probe_local: bool) -> list[tuple[str, str]]:
    found = [] if explicit is None else [("the configured URL", explicit)]
    if probe_local and local != explicit:
        found.append(("the local default", local))
    return found


def ensure_services(
    *,
    database_url: str | None,
    redis_url: str | None,
    probe_local_defaults: bool,
    data_dir: Path,
    database_name: str,
    log: Callable[[str], None] = log_to_stderr,
) -> RunningServices:
    """Return URLs that answer, starting embedded servers where nothing else does.

    The returned database_url points at database_name on the chosen server (created if
    missing); call stop() (or use the result as a context manager) when done.
    """
    servers: list[EmbeddedServer] = []
    try:
        server_url = _choose(
            "Postgres",
            _candidates(database_url, LOCAL_POSTGRES_URL, probe_local_defaults),
            postgres_answers,
            log,
        )
        if server_url is None:
            servers.append(start_embedded_postgres(data_dir, log))
            server_url = f"postgresql+asyncpg://postgres@127.0.0.1:{servers[-1].port}/postgres"
        chosen_redis = _choose(
            "Redis",
            _candidates(redis_url, LOCAL_REDIS_URL, probe_local_defaults),
            redis_answers,
            log,
        )
        if chosen_redis is None:
            servers.append(start_embedded_redis(data_dir, log))
            chosen_redis = f"redis://127.0.0.1:{servers[-1].port}/0"
        url = asyncpg_url(server_url, database=database_name).render_as_string(hide_password=False)
        create_database_if_missing(url)
    except BaseException:
        for server in reversed(servers):
            server.release(log)
        raise
    return RunningServices(
        database_url=url,
        redis_url=chosen_redis,
        embedded=[server.name for server in servers],
        _servers=servers,
        _log=log,
    )
