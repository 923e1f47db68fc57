"""`darkroom worker` and `darkroom serve` as real processes, each logging to its own file,
that a test can kill -9, and that are always stopped at the end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import ROOT

DARKROOM = str(Path(sys.executable).parent / "darkroom")
READY_TIMEOUT_S = 60.0
# run_workers gives running requests 30 s to finish on SIGTERM.
STOP_TIMEOUT_S = 45.0


class Process:
    def __init__(self, name: str, command: list[str], env: dict[str, str], log_path: Path):
        self.name = name
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                command, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def kill(self) -> None:
        """kill -9: no handler runs, nothing is cleaned up."""
        if self.alive:
            os.kill(self.pid, signal.SIGKILL)
        self.popen.wait()

    def stop(self) -> None:
        if self.alive:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill()


class Processes:
    """Every process a test started; `stop_all` ends those still running."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.started: list[Process] = []
        self.workers: list[Process] = []

    def start_worker(self) -> Process:
        name = f"worker-{len(self.workers) + 1}"
        worker = Process(name, [DARKROOM, "worker"], self.env, self.log_dir / f"{name}.log")
        self.started.append(worker)
        self.workers.append(worker)
        return worker

    def start_workers(self, count: int) -> list[Process]:
        workers = [self.start_worker() for _ in range(count)]
        for worker in workers:
            wait_worker_started(worker)
        return workers

    def live_workers(self) -> list[Process]:
        return [w for w in self.workers if w.alive]

    def start_api(self, port: int) -> Process:
        command = [DARKROOM, "serve", "--port", str(port)]
        api = Process("api", command, self.env, self.log_dir / "api.log")
        self.started.append(api)
        wait_ready(api, f"http://127.0.0.1:{port}")
        return api

    def stop_all(self) -> None:
        running = [p for p in self.started if p.alive]
        for process in running:
            process.popen.send_signal(signal.SIGTERM)
        for process in running:
            process.stop()


def wait_worker_started(worker: Process) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while "worker_started" not in worker.log():
        if not worker.alive or time.monotonic() > deadline:
            raise AssertionError(f"{worker.name} did not start:\n{worker.log_tail()}")
        time.sleep(0.1)


def wait_ready(api: Process, url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if not api.alive or time.monotonic() > deadline:
            raise AssertionError(f"the API never became ready:\n{api.log_tail()}")
        time.sleep(0.1)
