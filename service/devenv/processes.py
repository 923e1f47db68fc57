"""Signals and liveness checks for server processes we started, possibly in an earlier run."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

_POLL_S = 0.1


def _reap_if_our_child(pid: int) -> None:
    """A child that exited stays a zombie (and looks alive) until its parent waits for it."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    _reap_if_our_child(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_name(pid: int) -> str | None:
    """The executable name of a live process, or None; guards against a recycled pid."""
    if not pid_alive(pid):
        return None
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        pass
    result = subprocess.run(
        ["ps", "-o", "comm=", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    name = result.stdout.strip()
    return Path(name).name if name else None


def is_server_process(pid: int, expected_name: str) -> bool:
    return process_name(pid) == expected_name


def wait_for_exit(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(_POLL_S)
    return not pid_alive(pid)


def stop_process(pid: int, first_signal: signal.Signals, *, timeout_s: float = 30.0) -> None:
    """Ask politely with first_signal, then SIGKILL if the process is still there."""
    try:
        os.kill(pid, first_signal)
    except ProcessLookupError:
        return
    if wait_for_exit(pid, timeout_s):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    wait_for_exit(pid, 5.0)


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until_answers(
    process: subprocess.Popen[bytes],
    answers: Callable[[], bool],
    *,
    what: str,
    log_path: Path,
    timeout_s: float,
) -> None:
    """Block until the new server answers; on failure, kill it and say why with its log.

    Interrupted (a stop signal raises in here), it kills the server too: nobody has recorded
    it yet, so nobody else would."""
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{what} exited with status {process.returncode} before answering; "
                    f"end of {log_path}:\n{log_tail(log_path)}"
                )
            if answers():
                return
            time.sleep(_POLL_S)
    except BaseException:
        _kill(process)
        raise
    _kill(process)
    raise RuntimeError(
        f"{what} did not answer within {timeout_s:.0f} s; end of {log_path}:\n{log_tail(log_path)}"
    )


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()
