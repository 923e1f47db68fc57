"""One embedded server per data directory, shared by every process that uses that directory.

A small JSON record next to the server's files (pid, port, users) lets a second `darkroom up`,
a test run or a worker reuse a server that is already running, lets the last user stop it, and
lets the next run adopt a server orphaned by a killed process instead of leaking it.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from service.devenv.processes import is_server_process, pid_alive, stop_process

Log = Callable[[str], None]


@dataclass
class ServerRecord:
    pid: int
    port: int
    users: list[int]  # one entry per holder: a process holding it twice is listed twice


@dataclass(frozen=True)
class ServerFiles:
    data_dir: Path
    name: str

    @property
    def record_path(self) -> Path:
        return self.data_dir / f"{self.name}.json"

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise start, adopt and stop between processes sharing this data directory."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with (self.data_dir / f"{self.name}.lock").open("a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def read(self) -> ServerRecord | None:
        try:
            raw = json.loads(self.record_path.read_text())
            return ServerRecord(
                pid=int(raw["pid"]), port=int(raw["port"]), users=[int(u) for u in raw["users"]]
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, record: ServerRecord) -> None:
        staging = self.record_path.with_suffix(".json.tmp")
        staging.write_text(json.dumps(asdict(record)))
        staging.replace(self.record_path)

    def clear(self) -> None:
        self.record_path.unlink(missing_ok=True)


@dataclass
class EmbeddedServer:
    name: str
    process_name: str
    stop_signal: signal.Signals
    files: ServerFiles
    pid: int
    port: int

    def release(self, log: Log) -> None:
        """Stop the server unless another live process still uses it."""
        with self.files.locked():
            record = self.files.read()
            if record is not None and record.pid == self.pid:
                others = list(record.users)
                if os.getpid() in others:
                    others.remove(os.getpid())
                others = [user for user in others if pid_alive(user)]
                if others:
                    self.files.write(ServerRecord(record.pid, record.port, others))
                    log(f"leaving embedded {self.name} running: still used by pid {others}")
                    return
            if is_server_process(self.pid, self.process_name):
                log(f"stopping embedded {self.name} (pid {self.pid})")
                stop_process(self.pid, self.stop_signal)
            if record is None or record.pid == self.pid:
                self.files.clear()


def attach_or_start(
    *,
    files: ServerFiles,
    process_name: str,
    stop_signal: signal.Signals,
    answers: Callable[[int], bool],
    start: Callable[[], tuple[int, int]],
    log: Log,
) -> EmbeddedServer:
    """Reuse the server recorded in files if it answers, else start one with start()."""

    def server(pid: int, port: int) -> EmbeddedServer:
        return EmbeddedServer(files.name, process_name, stop_signal, files, pid, port)

    with files.locked():
        record = files.read()
        if record is not None and is_server_process(record.pid, process_name):
            if answers(record.port):
                users = [user for user in record.users if pid_alive(user)]
                files.write(ServerRecord(record.pid, record.port, [*users, os.getpid()]))
                how = f"shared with pid {sorted(set(users))}" if users else "adopted"
                log(f"reusing embedded {files.name} on port {record.port} ({how})")
                return server(record.pid, record.port)
            log(f"embedded {files.name} (pid {record.pid}) does not answer: stopping it")
            stop_process(record.pid, stop_signal)
        files.clear()
        pid, port = start()
        files.write(ServerRecord(pid, port, [os.getpid()]))
        return server(pid, port)
