"""Ways to run the simulator on a real port: in a background thread with its own event
loop (tests, light benchmarks), or in its own process (benchmarks that must not share a
CPU-bound interpreter with the code they measure).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from pydantic import BaseModel

from simulators.app import create_app
from simulators.config import SimConfig
from simulators.control import ControlClient

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
M = TypeVar("M", bound=BaseModel)


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def server_options() -> dict[str, Any]:
    """uvicorn settings for speed: no access log, no per-request headers we do not need."""
    return {
        "http": "httptools",
        "lifespan": "on",
        "interface": "asgi3",
        "log_level": "warning",
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
        "backlog": 4096,
        "timeout_keep_alive": 30,
        "timeout_graceful_shutdown": 1,
    }


class SimulatorHandle(ControlClient):
    """Controls a running provider simulator over its `/_sim` routes."""

    async def configure(self, **changes: Any) -> SimConfig:
        """Patch the configuration (only the fields given); returns the whole new one."""
        return SimConfig.model_validate(await self.call("PATCH", "/_sim/config", changes))

    async def config(self) -> SimConfig:
        return SimConfig.model_validate(await self.call("GET", "/_sim/config"))

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("GET", "/_sim/stats")
        return result

    async def reset(self) -> None:
        await self.call("POST", "/_sim/reset")


class SyncSimulatorHandle:
    """The same controls, for synchronous code (benchmark drivers)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        response = httpx.request(method, self.url + path, json=body, timeout=10, verify=False)
        response.raise_for_status()
        return response.json()

    def configure(self, **changes: Any) -> SimConfig:
        return SimConfig.model_validate(self._call("PATCH", "/_sim/config", changes))

    def config(self) -> SimConfig:
        return SimConfig.model_validate(self._call("GET", "/_sim/config"))

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_sim/stats")
        return result

    def reset(self) -> None:
        self._call("POST", "/_sim/reset")


class SimulatorThread:
    """uvicorn serving the simulator on its own event loop in a daemon thread."""

    def __init__(self, config: SimConfig | None = None, port: int = 0, app: Any = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, port))
        self.url = f"http://{HOST}:{self.sock.getsockname()[1]}"
        # log_config=None: leave the host process's logging alone.
        options = server_options() | {"log_config": None}
        app = app if app is not None else create_app(config)
        self.server = uvicorn.Server(uvicorn.Config(app, **options))
        self.thread = threading.Thread(target=self._run, name="provider-simulator", daemon=True)

    def _run(self) -> None:
        loop = new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.server.serve(sockets=[self.sock]))
        finally:
            loop.close()

    def start(self, timeout: float = 10.0) -> str:
        self.thread.start()
        wait_until_answering(self.url, timeout, alive=self.thread.is_alive)
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout)
        self.sock.close()


def wait_until_answering(
    url: str, timeout: float, alive: Any = lambda: True, probe: str = "/_sim/config"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"provider simulator at {url} exited while starting")
        try:
            if httpx.get(f"{url}{probe}", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"provider simulator at {url} did not answer within {timeout}s")


@asynccontextmanager
async def serve_in_thread(app: Any, *, port: int = 0) -> AsyncIterator[str]:
    """`app` on 127.0.0.1 (a free port when 0), served from a background thread, so the
    caller's event loop stays free; yields its base URL, and stops it on exit."""
    server = SimulatorThread(port=port, app=app)
    url = await asyncio.to_thread(server.start)
    try:
        yield url
    finally:
        await asyncio.to_thread(server.stop)


@contextmanager
def serving_in_thread(app: Any, *, port: int = 0) -> Iterator[str]:
    """The synchronous twin of `serve_in_thread` (module-scoped test fixtures)."""
    server = SimulatorThread(port=port, app=app)
    try:
        yield server.start()
    finally:
        server.stop()


@asynccontextmanager
async def run_simulator(
    config: SimConfig | None = None, *, port: int = 0
) -> AsyncIterator[SimulatorHandle]:
    """The provider simulator in a background thread (see `serve_in_thread`); stopped
    (webhook client included) on exit."""
    async with serve_in_thread(create_app(config), port=port) as url:
        yield SimulatorHandle(url)


@contextmanager
def running_simulator(
    config: SimConfig | None = None, *, port: int = 0
) -> Iterator[SyncSimulatorHandle]:
    """The synchronous twin of `run_simulator`."""
    with serving_in_thread(create_app(config), port=port) as url:
        yield SyncSimulatorHandle(url)


def start_simulator_process(
    config: SimConfig | None = None, port: int = 0, *, timeout: float = 20.0
) -> tuple[str, subprocess.Popen[bytes]]:
    """`python -m simulators` in its own process; the caller terminates it."""
    if port == 0:
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            port = probe.getsockname()[1]
    url = f"http://{HOST}:{port}"
    command = [sys.executable, "-m", "simulators", "--host", HOST, "--port", str(port)]
    command += ["--config", (config or SimConfig()).model_dump_json()]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        wait_until_answering(url, timeout, alive=lambda: process.poll() is None)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return url, process


def serve_main(
    prog: str, doc: str | None, port: int, config_type: type[M], build: Callable[[M], Any]
) -> None:
    """`python -m <prog> --port N [--config '{json}']`: a simulator in the foreground,
    built from a JSON object of `config_type`'s fields."""
    parser = argparse.ArgumentParser(prog=prog, description=doc)
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument(
        "--config", default="{}", help=f"{config_type.__name__} fields as a JSON object"
    )
    args = parser.parse_args()
    app = build(config_type.model_validate_json(args.config))
    uvicorn.run(app, host=args.host, port=args.port, **server_options())
