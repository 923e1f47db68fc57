"""CI: the wheel, installed the way a user installs it, runs a job end to end from a foreign folder.

1. Build the wheel from the files git knows (a clean copy: nothing stale from build/ sneaks in),
   and check that it holds every file git tracks under service/ and migrations/.
2. Install it into a fresh venv: dependencies from requirements.lock, the wheel with --no-deps.
3. From an empty temporary folder, with nothing of the checkout on any path: `darkroom migrate`
   on a fresh database, `darkroom keys create`, `darkroom serve` on a free port, one
   `darkroom worker`, and `darkroom submit --wait` of one local job; its output file must exist.

Postgres and Redis are found or started as the tests find them (service.devenv); the database and
the Redis db are this run's own and are dropped and emptied at the end, whatever happened.
Run with the project's venv: `.venv/bin/python scripts/check_wheel.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import redis

from service.config import Settings
from service.devenv import drop_database, ensure_services
from service.devenv.redis_dbs import claim_redis_db, release_redis_db, with_db

ROOT = Path(__file__).resolve().parents[1]
UV = ROOT / ".venv" / "bin" / "uv"
READY_TIMEOUT_S = 30.0
JOB_TIMEOUT_S = 60.0
BATCH = {
    "name": "wheel check",
    "jobs": [{"prompt": "a lighthouse at dusk", "output_name": "lighthouse"}],
    "defaults": {"width": 256, "height": 256, "format": "png"},
}


class CheckFailed(Exception):
    pass


def say(message: str) -> None:
    sys.stderr.write(f"check_wheel: {message}\n")
    sys.stderr.flush()


def run(
    command: list[str | Path],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> str:
    """Run a command; on failure, raise with what it printed."""
    shown = " ".join(map(str, command))
    try:
        result = subprocess.run(
            [str(part) for part in command],
            cwd=cwd,
            env=env,
            timeout=timeout,
            capture_output=True,
            text=True,
            check=False,
        )
    except subprocess.TimeoutExpired as expired:
        raise CheckFailed(f"{shown} still running after {timeout:.0f} s") from expired
    if result.returncode != 0:
        raise CheckFailed(
            f"{shown} exited {result.returncode}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return result.stdout


def tracked_files() -> list[str]:
    """What a clone would have, plus uncommitted edits: tracked and new files that exist."""
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT)
    return sorted({name for name in listed.split("\0") if name and (ROOT / name).is_file()})


def build_wheel(workdir: Path) -> Path:
    source = workdir / "source"
    files = tracked_files()
    for name in files:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    # --no-build-isolation: the build uses the setuptools pinned in the dev lock, offline.
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"]
    run([*pip_wheel, "--no-build-isolation", "--wheel-dir", workdir / "dist", source])
    (wheel,) = (workdir / "dist").glob("darkroom-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
    wanted = {
        f"service/{name}" if name.startswith("migrations/") else name
        for name in files
        if name.startswith(("service/", "migrations/"))
    }
    if missing := sorted(wanted - in_wheel):
        raise CheckFailed(f"the wheel lacks {len(missing)} file(s): {', '.join(missing)}")
    say(f"built {wheel.name}: {len(wanted)} files of service/ and migrations/, none missing")
    return wheel


def install(wheel: Path, venv: Path) -> Path:
    run([UV, "venv", "--quiet", "--python", sys.executable, venv])
    python = venv / "bin" / "python"
    run([UV, "pip", "install", "--quiet", "--python", python, "-r", ROOT / "requirements.lock"])
    run([UV, "pip", "install", "--quiet", "--python", python, "--no-deps", wheel])
    return venv / "bin"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def process(
    command: list[str], *, cwd: Path, env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A long-running command, stopped (SIGTERM, then SIGKILL) however the block ends; its
    log is shown when the block fails."""
    with log.open("wb") as output:
        child = subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=output)
    try:
        yield child
        if child.poll() is not None:
            raise CheckFailed(f"{' '.join(command[1:])} exited {child.returncode} early")
    except BaseException:
        say(f"--- log of {' '.join(command)}:\n{log.read_text(errors='replace')[-4000:]}")
        raise
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def wait_until_ready(url: str, api: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while api.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise CheckFailed(f"{url}/readyz did not answer 200 within {READY_TIMEOUT_S:.0f} s")
        time.sleep(0.2)
    raise CheckFailed(f"serve exited {api.returncode} before {url}/readyz answered")


def end_to_end(bin_dir: Path, folder: Path, database_url: str, redis_url: str) -> None:
    """What a user types, from a folder that holds no project files."""
    darkroom = str(bin_dir / "darkroom")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin",
        "HOME": str(folder),
        "LANG": "C.UTF-8",
        "DARKROOM_DATABASE_URL": database_url,
        "DARKROOM_REDIS_URL": redis_url,
        "DARKROOM_PUBLIC_URL": url,
    }
    located = run(
        [bin_dir / "python", "-c", "import service; print(service.__file__)"], cwd=folder, env=env
    )
    if not located.startswith(str(bin_dir.parent)):
        raise CheckFailed(f"the venv imports service from {located.strip()}, not from the wheel")

    run([darkroom, "migrate"], cwd=folder, env=env)
    created = json.loads(
        run([darkroom, "keys", "create", "--name", "wheel check", "--json"], cwd=folder, env=env)
    )
    say("migrate and keys create: done")
    (folder / "batch.json").write_text(json.dumps(BATCH))
    with ExitStack() as stack:
        api = stack.enter_context(
            process(
                [darkroom, "serve", "--port", str(port)],
                cwd=folder,
                env=env,
                log=folder / "serve.log",
            )
        )
        stack.enter_context(
            process([darkroom, "worker"], cwd=folder, env=env, log=folder / "worker.log")
        )
        wait_until_ready(url, api)
        say(f"serve answers on {url}; submitting one job")
        run(
            [darkroom, "submit", "batch.json", "--wait", "--url", url],
            cwd=folder,
            env={**env, "DARKROOM_API_KEY": created["key"]},  # kept out of any error message
            timeout=JOB_TIMEOUT_S,
        )
    outputs = sorted((folder / ".data" / "outputs").rglob("lighthouse.png"))
    if not outputs:
        raise CheckFailed(f"the job succeeded but no lighthouse.png is under {folder}/.data")
    say(f"the job's output is at {outputs[0].relative_to(folder)} ({outputs[0].stat().st_size} B)")


def main() -> int:
    began = time.monotonic()
    run_id = uuid.uuid4().hex[:10]
    settings = Settings()
    with tempfile.TemporaryDirectory(prefix="darkroom-wheel-") as temporary:
        workdir = Path(temporary)
        try:
            bin_dir = install(build_wheel(workdir), workdir / "venv")
            say(f"installed into a fresh venv ({time.monotonic() - began:.0f} s so far)")
            folder = workdir / "elsewhere"
            folder.mkdir()
            with ensure_services(
                database_url=os.environ.get("DARKROOM_DATABASE_URL"),
                redis_url=os.environ.get("DARKROOM_REDIS_URL"),
                probe_local_defaults=settings.local_defaults,
                data_dir=ROOT / ".data" / "test",
                database_name=f"darkroom_wheel_{run_id}",
            ) as services:
                number = claim_redis_db(services.redis_url, run_id)
                redis_url = with_db(services.redis_url, number)
                try:
                    end_to_end(bin_dir, folder, services.database_url, redis_url)
                finally:
                    drop_database(services.database_url)
                    redis.Redis.from_url(redis_url).flushdb()
                    release_redis_db(services.redis_url, number, run_id)
        except CheckFailed as failure:
            say(f"FAILED: {failure}")
            return 1
    say(f"the installed wheel works from a foreign folder ({time.monotonic() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
