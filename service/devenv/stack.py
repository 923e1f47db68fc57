"""The processes `darkroom up` runs: one API and a pool of workers, watched until a stop.

The API is announced only once /readyz answers, so that the command the banner suggests works
the moment it is printed; the dev key's URL is recorded at that moment and forgotten at the end.
"""

from __future__ import annotations

import errno
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from service.dev_key import forget_api_url, record_api_url
from service.devenv.console import say
from service.devenv.signals import StopSignals

READY_TIMEOUT_S = 300.0  # the API imports and connects in seconds; a loaded laptop needs more
READY_POLL_S = 0.2
WATCH_S = 1.0
# Past the children's own grace (DARKROOM_SHUTDOWN_GRACE_S: a worker lets its requests
# finish, the API its HTTP requests), the time to record what finished and exit.
STOP_MARGIN_S = 15.0
COMMAND = [sys.executable, "-m", "service.cli"]


class StackError(Exception):
    """`up` cannot go on; the message says why, in one line."""


def check_port_free(host: str, port: int) -> None:
    """Bind as uvicorn will, before anything is started or printed."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            why = "already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise StackError(
                f"cannot serve on {host}:{port}: {why} (choose another port with --port N)"
            ) from exc


def run_stack(
    *,
    host: str,
    port: int,
    workers: int,
    env: dict[str, str],
    data_dir: Path,
    signals: StopSignals,
    announce: Callable[[str], None],
    grace_s: float = 30.0,
) -> int:
    """Run until a stop signal (Stop propagates) or the API ends; returns the exit status."""
    url = f"http://{host}:{port}"
    children: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        with signals.deferred():
            child = subprocess.Popen([*COMMAND, *args], env=env)
            children.append(child)
        return child

    try:
        api = start("serve", "--host", host, "--port", str(port))
        pool = [start("worker") for _ in range(workers)]
        _wait_until_ready(api, url)
        record_api_url(data_dir, url)
        announce(url)
        while api.poll() is None:
            time.sleep(WATCH_S)
            for slot, worker in enumerate(pool):
                # A clean exit is a worker told to stop (Ctrl-C reaches it first): not a crash.
                if worker.poll() not in (None, 0):
                    say(f"worker exited with {worker.returncode}; restarting it", err=True)
                    pool[slot] = start("worker")
        say(f"darkroom: the API exited with status {api.returncode}; stopping", err=True)
        return 1
    finally:
        signals.hold()
        forget_api_url(data_dir, url)
        _stop(children, grace_s + STOP_MARGIN_S)


def _wait_until_ready(api: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = "no answer"
    while time.monotonic() < deadline:
        if api.poll() is not None:
            raise StackError(
                f"the API exited with status {api.returncode} before answering (its error is above)"
            )
        try:
            response = httpx.get(f"{url}/readyz", timeout=2)
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        else:
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code} {response.text.strip()[:200]}"
        time.sleep(READY_POLL_S)
    raise StackError(f"the API at {url} was not ready after {READY_TIMEOUT_S:.0f} s ({last})")


def _stop(children: list[subprocess.Popen[bytes]], timeout_s: float) -> None:
    for child in children:
        if child.poll() is None:
            child.terminate()
    for child in children:
        try:
            child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
