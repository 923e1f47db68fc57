"""The `darkroom` command as a user runs it: real processes, real ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from service.devenv.processes import pid_alive
from tests.conftest import ROOT, ServiceUrls
from tests.embedded_tmp import embedded_tmp_dir

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


def run_submit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DARKROOM, "submit", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def assert_one_line(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    """What a user reads when the API refuses: one line on stderr, never a traceback."""
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("darkroom: ")
    for text in expected:
        assert text in line


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


@pytest.mark.parametrize(
    ("command", "says"),
    [(["keys", "create", "--name", "ci"], "create a key in"), (["migrate"], "migrate")],
)
def test_a_command_without_a_database_says_so_in_one_line(
    cli_env: dict[str, str], command: list[str], says: str
) -> None:
    closed = free_port()
    env = {**cli_env, "DARKROOM_DATABASE_URL": f"postgresql+asyncpg://u:pw@127.0.0.1:{closed}/x"}
    result = subprocess.run(
        [*DARKROOM, *command],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(
        f"darkroom: cannot {says} postgresql+asyncpg://u:***@127.0.0.1:{closed}/x: "
    )
    assert "pw" not in line


def test_openapi_json_names_what_it_wrote(cli_env: dict[str, str], tmp_path: Path) -> None:
    output = tmp_path / "doc" / "openapi.json"
    result = subprocess.run(
        [*DARKROOM, "openapi", "--output", str(output), "--json"],
        env=cli_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    answer = json.loads(result.stdout)
    document = json.loads(output.read_text())
    assert answer == {
        "output": str(output),
        "operations": sum(len(methods) for methods in document["paths"].values()),
    }
    assert answer["operations"] > 50


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
        wrong_key = run_submit(env, "examples/batch.json", "--url", url, "--key", "dk_wrong")
        assert_one_line(wrong_key, "HTTP 401")
        (tmp_path / "bad.json").write_text(json.dumps({"jobs": [{"prompt": ""}]}))
        invalid = run_submit(env, str(tmp_path / "bad.json"), "--url", url, "--key", key)
        assert_one_line(invalid, "HTTP 422", "jobs[0].prompt")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        api.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert api.wait(timeout=30) in (0, -signal.SIGTERM)


# `darkroom up`: real processes, embedded servers (nothing answers on the configured URLs). The
# data dir is shared by the module, so initdb runs once; every `up` stops what it started.
GUARD_S = 300.0  # only against hanging: under load an embedded start takes a while
BANNER_END = "Ctrl-C stops everything."


@pytest.fixture(scope="module")
def up_data_dir() -> Iterator[Path]:
    """Outside tmp_path: see tests/embedded_tmp.py."""
    with embedded_tmp_dir() as path:
        yield path / "data"


@pytest.fixture
def up_env(up_data_dir: Path, tmp_path: Path) -> dict[str, str]:
    closed = free_port()
    return {
        **os.environ,
        "DARKROOM_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:{closed}/darkroom",
        "DARKROOM_REDIS_URL": f"redis://127.0.0.1:{closed}/0",
        "DARKROOM_LOCAL_DEFAULTS": "false",
        "DARKROOM_DATA_DIR": str(up_data_dir),
        "DARKROOM_STORAGE_DIR": str(tmp_path / "outputs"),
    }


class Up:
    """`darkroom up` with its stdout and stderr on one pipe, read line by line."""

    def __init__(self, port: int, env: dict[str, str], *, ignore_sigint: bool = False) -> None:
        def child_setup() -> None:
            if ignore_sigint:  # as a background job, nohup or a CI runner would start it
                signal.signal(signal.SIGINT, signal.SIG_IGN)

        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [*DARKROOM, "up", "--port", str(port), "--workers", "1"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=child_setup,
        )
        self.lines: list[str] = []
        self.watchdog = threading.Timer(GUARD_S, self.process.kill)
        self.watchdog.start()

    def read_until_banner(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if BANNER_END in line:
                return
        raise AssertionError("up ended before its banner:\n" + "".join(self.lines))

    def children(self) -> list[int]:
        found = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True)
        return [int(pid) for pid in found.stdout.split()]

    def finish(self) -> str:
        """Wait for the exit; the rest of the output, if the pipe is still open."""
        rest = "" if self.process.stdout is None else self.process.communicate()[0] or ""
        self.process.wait()
        self.watchdog.cancel()
        return "".join(self.lines) + rest

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.watchdog.cancel()


def try_command(output: str) -> str:
    [line] = [line for line in output.splitlines() if line.strip().startswith("Try: ")]
    return line.strip().removeprefix("Try: ")


def embedded_records(data_dir: Path) -> dict[str, dict[str, int]]:
    return {
        p.stem: json.loads(p.read_text()) for p in data_dir.glob("*.json") if p.stem != "dev-key"
    }


def test_up_starts_embedded_servers_when_nothing_answers_and_ctrl_c_stops_all(
    up_env: dict[str, str], up_data_dir: Path
) -> None:
    """The newcomer's machine: no Postgres, no Redis. `darkroom up` must still work."""
    up = Up(free_port(), up_env)
    try:
        up.read_until_banner()
        # The banner comes only once the API answers, and the command it suggests works.
        assert httpx.get(f"{up.url}/readyz", timeout=5).status_code == 200
        assert json.loads((up_data_dir / "dev-key.json").read_text())["url"] == up.url
        suggested = try_command("".join(up.lines))
        assert suggested == ".venv/bin/darkroom submit examples/batch.json --wait"
        tried = subprocess.run(
            suggested, shell=True, env=up_env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert tried.returncode == 0, tried.stderr
        assert json.loads(tried.stdout)["status"] == "succeeded"

        embedded_ports = [r["port"] for r in embedded_records(up_data_dir).values()]
        assert len(embedded_ports) == 2
        assert all(port_open(p) for p in embedded_ports)

        # A worker that crashes is started again.
        [crashed] = worker_children(up.process.pid)
        os.kill(crashed, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while worker_children(up.process.pid) in ([], [crashed]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(worker_children(up.process.pid)) == 1
        assert crashed not in worker_children(up.process.pid)
        up.process.send_signal(signal.SIGINT)
        output = up.finish()
    finally:
        up.kill()
    assert up.process.returncode == 0, output
    assert "whsec_" in output
    assert not port_open(int(up.url.rsplit(":", 1)[1]))
    assert not any(port_open(p) for p in embedded_ports)
    assert embedded_records(up_data_dir) == {}
    assert "url" not in json.loads((up_data_dir / "dev-key.json").read_text())


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_up_with_sigint_ignored_and_its_output_gone_still_stops_everything(
    up_env: dict[str, str], up_data_dir: Path, stop: signal.Signals
) -> None:
    """Started in the background (SIGINT ignored), its reader gone (stdout a closed pipe): either
    signal still stops the API, the worker and both embedded servers."""
    up = Up(free_port(), up_env, ignore_sigint=True)
    try:
        up.read_until_banner()
        children = up.children()
        assert len(children) == 4  # postgres, redis, the API, one worker
        assert up.process.stdout is not None
        up.process.stdout.close()  # every later line `up` or its children write hits EPIPE
        up.process.stdout = None
        up.process.send_signal(stop)
        up.finish()
    finally:
        up.kill()
    assert up.process.returncode == 0
    assert [pid for pid in children if pid_alive(pid)] == []
    assert embedded_records(up_data_dir) == {}


def test_up_on_a_taken_port_says_so_and_starts_nothing(up_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*DARKROOM, "up", "--port", str(port)],
            env=up_env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"darkroom: cannot serve on 127.0.0.1:{port}: already in use "
        "(choose another port with --port N)"
    ]


def test_an_api_that_cannot_bind_ends_the_stack_with_its_reason(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """The port is taken between the check and the API's own bind."""
    from service.devenv.signals import stop_on_signals
    from service.devenv.stack import StackError, run_stack

    with socket.socket() as taken, stop_on_signals() as signals:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            StackError, match=r"the API exited with status [1-9]\d* before answering"
        ):
            run_stack(
                host="127.0.0.1",
                port=port,
                workers=1,
                env=cli_env,
                data_dir=tmp_path,
                signals=signals,
                announce=lambda url: pytest.fail(f"announced {url}"),
            )


def test_a_grace_shorter_than_a_synchronous_timeout_is_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One line on stderr, and the process goes on starting: a synchronous request cut
    at the grace's end is sent again. Asynchronous accounts, accounts without their
    token, and the local renderer are not counted."""
    from service.cli import _check_config
    from service.config import Settings

    monkeypatch.setenv("PAID_TOKEN", "sk-test")
    monkeypatch.delenv("UNSET_TOKEN", raising=False)
    config = {
        "providers": {
            "paid": {"kind": "openai", "token_env": "PAID_TOKEN", "timeout_s": 300},
            "idle": {"kind": "openai", "token_env": "UNSET_TOKEN", "timeout_s": 900},
            "polled": {"kind": "replicate", "token_env": "PAID_TOKEN", "timeout_s": 600},
            "local": {"kind": "local", "timeout_s": 1200},
        },
        "models": {
            "sync-model": {"provider": "paid", "ref": "gpt-image-1"},
            "no-token": {"provider": "idle", "ref": "gpt-image-1"},
            "async-model": {"provider": "polled", "ref": "owner/model"},
            "cpu": {"provider": "local", "ref": "noise"},
        },
    }
    path = tmp_path / "darkroom.yaml"
    path.write_text(json.dumps(config))

    def check(grace_s: float) -> list[str]:
        settings = Settings(
            config=path,
            storage_dir=tmp_path / "outputs",
            shutdown_grace_s=grace_s,
            _env_file=None,  # type: ignore[call-arg]
        )
        _check_config(settings)  # returns: a warning, not an error
        captured = capsys.readouterr()
        assert captured.out == ""
        return captured.err.splitlines()

    [line] = check(30)
    assert line.startswith("darkroom: warning: DARKROOM_SHUTDOWN_GRACE_S=30 is below the 300 s")
    assert "'sync-model'" in line
    assert check(300) == []
