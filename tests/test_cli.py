"""The `darkroom` command as a user runs it: real processes, real ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, ServiceUrls

DARKROOM = [sys.executable, "-m", "service.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def worker_children(parent: int) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-P", str(parent), "-f", "service.cli worker"], capture_output=True, text=True
    )
    return [int(pid) for pid in found.stdout.split()]


def wait_ready(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} never became ready")


@pytest.fixture
def cli_env(services: ServiceUrls, tmp_path: Path) -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    return {
        **os.environ,
        "DARKROOM_DATABASE_URL": services.database_url,
        "DARKROOM_REDIS_URL": services.redis_url,
        "DARKROOM_STORAGE_DIR": str(tmp_path / "outputs"),
        "DARKROOM_DATA_DIR": str(tmp_path / "data"),
        "DARKROOM_QUEUE_NAME": f"darkroom:cli-{run}:jobs",
        "DARKROOM_WEBHOOK_QUEUE_NAME": f"darkroom:cli-{run}:webhooks",
    }


@contextmanager
def processes(*commands: list[str], env: dict[str, str]) -> Iterator[list[subprocess.Popen[bytes]]]:
    started = [subprocess.Popen(c, env=env, cwd=ROOT) for c in commands]
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in started:
            process.wait(timeout=30)


def test_keys_create_json_prints_key_and_secret_once(cli_env: dict[str, str]) -> None:
    out = subprocess.run(
        [*DARKROOM, "keys", "create", "--name", "ci", "--json"],
        env=cli_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    created = json.loads(out.stdout)
    assert created["key"].startswith("dk_")
    assert created["webhook_secret"].startswith("whsec_")


def test_serve_worker_and_submit_wait(cli_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**cli_env, "DARKROOM_PUBLIC_URL": url}
    key = json.loads(
        subprocess.run(
            [*DARKROOM, "keys", "create", "--name", "ci", "--json"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )["key"]
    serve = [*DARKROOM, "serve", "--port", str(port)]
    with processes(serve, [*DARKROOM, "worker"], env=env) as (api, worker):
        wait_ready(url)
        submitted = subprocess.run(
            [*DARKROOM, "submit", "examples/batch.json", "--wait", "--url", url, "--key", key],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert submitted.returncode == 0, submitted.stderr
        batch = json.loads(submitted.stdout)
        assert batch["status"] == "succeeded"
        assert batch["counts"]["succeeded"] == 4
        assert "outputs:" in submitted.stderr
        files = sorted(p.name for p in (tmp_path / "outputs" / batch["id"]).iterdir())
        assert files == ["00002.jpg", "00003.png", "fox.png", "lighthouse.png"]
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        api.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert api.wait(timeout=30) in (0, -signal.SIGTERM)


def test_up_starts_embedded_servers_when_nothing_answers_and_ctrl_c_stops_all(
    tmp_path: Path,
) -> None:
    """The newcomer's machine: no Postgres, no Redis. `darkroom up` must still work."""
    port = free_port()
    closed = free_port()
    env = {
        **os.environ,
        "DARKROOM_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:{closed}/darkroom",
        "DARKROOM_REDIS_URL": f"redis://127.0.0.1:{closed}/0",
        "DARKROOM_LOCAL_DEFAULTS": "false",
        "DARKROOM_DATA_DIR": str(tmp_path / "data"),
        "DARKROOM_STORAGE_DIR": str(tmp_path / "outputs"),
    }
    up = subprocess.Popen(
        [*DARKROOM, "up", "--port", str(port), "--workers", "1"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", timeout_s=120)
        key = json.loads((tmp_path / "data" / "dev-key.json").read_text())["key"]
        headers = {"authorization": f"Bearer {key}"}
        api = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers)
        body = {"jobs": [{"prompt": "offline", "width": 64, "height": 64}]}
        batch = api.post("/v1/batches", json=body).raise_for_status().json()
        deadline = time.monotonic() + 60
        while batch["status"] != "succeeded" and time.monotonic() < deadline:
            time.sleep(0.2)
            batch = api.get(f"/v1/batches/{batch['id']}").json()
        assert batch["status"] == "succeeded"
        records = {
            p.stem: json.loads(p.read_text())
            for p in (tmp_path / "data").glob("*.json")
            if p.name != "dev-key.json"
        }
        embedded_ports = [r["port"] for r in records.values()]
        assert len(embedded_ports) == 2
        assert all(port_open(p) for p in embedded_ports)

        # A worker that crashes is started again.
        [crashed] = worker_children(up.pid)
        os.kill(crashed, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while worker_children(up.pid) in ([], [crashed]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(worker_children(up.pid)) == 1
        assert crashed not in worker_children(up.pid)
    finally:
        up.send_signal(signal.SIGINT)
        output, _ = up.communicate(timeout=60)
    assert up.returncode == 0, output
    assert "API key:" in output
    assert "whsec_" in output
    assert not port_open(port)
    assert not any(port_open(p) for p in embedded_ports)
