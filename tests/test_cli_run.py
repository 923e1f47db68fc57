"""`darkroom run` and `darkroom download` as a user runs them: the real command in a
process, against the API on a real port; this test's own loop runs the jobs meanwhile."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.run_cli import download_command, run_file
from service.state import State
from service.worker import run_until_idle
from tests.conftest import ROOT, Caller, submit
from tests.manifests.helpers import finished_batch

pytest_plugins = ("tests.cli_fixtures",)  # api_url, env
DARKROOM = [sys.executable, "-m", "service.cli"]
CSV = (
    "sku,name,prompt,output_name,format,width,height\n"
    "A-1,Red mug,a red mug,A-1,,64,64\n"
    'A-2,"Blue mug, large",a blue mug,A-2,png,64,64\n'
    ",,an espresso,,jpeg,64,64\n"
)
BATCH = {
    "name": "covers",
    "defaults": {"width": 64, "height": 64},
    "jobs": [
        {"prompt": "a lighthouse", "output_name": "lighthouse"},
        {"prompt": "a fox", "output_name": "fox", "seed": 7},
        {"prompt": "an espresso", "format": "jpeg"},
    ],
}
FILES = {
    "products.csv": CSV,
    "products.jsonl": "\n".join(json.dumps({**BATCH["defaults"], **job}) for job in BATCH["jobs"])
    + "\n",
    "pipeline.yaml": (
        "name: covers\n"
        "defaults: {width: 64, height: 64}\n"
        "template: {prompt: 'Photo: {{ name }}', output_name: '{{ sku }}'}\n"
        "jobs:\n"
        "  - {sku: A-1, name: mug}\n"
        "  - {sku: A-2, name: cup}\n"
        "  - {sku: A-3, name: bowl}\n"
    ),
    "covers.json": json.dumps(BATCH),
}


async def darkroom(
    env: dict[str, str], *args: str, worker: State | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the command to its end; with `worker`, run jobs in this loop while it waits."""
    process = await asyncio.create_subprocess_exec(
        *DARKROOM,
        *args,
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    finished = asyncio.ensure_future(process.communicate())
    while not finished.done():
        if worker is not None:
            await run_until_idle(worker)
        await asyncio.wait([finished], timeout=0.1)
    out, err = finished.result()
    assert process.returncode is not None
    return subprocess.CompletedProcess(args, process.returncode, out.decode(), err.decode())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_folder_matches_manifest(out: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    files = {row["file"]: row for row in manifest["jobs"] if row["file"]}
    assert sorted(p.name for p in out.iterdir()) == sorted([*files, "manifest.json"])
    for name, row in files.items():
        assert sha256(out / name) == row["sha256"]
    return manifest


async def test_run_waits_downloads_and_a_second_download_resumes(
    env: dict[str, str],
    caller: Caller,
    state: State,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    batch_file, out = tmp_path / "products.csv", tmp_path / "out"
    batch_file.write_text(CSV)

    ran = await darkroom(env, "run", str(batch_file), "--out", str(out), "--json", worker=state)
    assert ran.returncode == 0, ran.stderr
    summary = json.loads(ran.stdout)  # one JSON object, nothing else on stdout
    assert (summary["status"], summary["downloaded"], summary["skipped"]) == ("succeeded", 3, 0)
    assert summary["failed"] == []
    assert summary["exit_code"] == 0
    assert "3/3" in ran.stderr  # the progress line
    assert "jobs/s" in ran.stderr
    assert caller.key not in ran.stdout + ran.stderr
    manifest = assert_folder_matches_manifest(out)
    assert [row["file"] for row in manifest["jobs"]] == ["A-1.png", "A-2.png", "00002.jpg"]
    assert manifest["jobs"][1]["variables"] == {"sku": "A-2", "name": "Blue mug, large"}

    # Resume: a corrupted file and a missing one are fetched again, a leftover part file
    # of an interrupted download is replaced, the good one is skipped.
    (out / "A-1.png").write_bytes(b"not a mug")
    (out / "00002.jpg").unlink()
    (out / ".00002.jpg.part").write_bytes(b"half")
    batch_id = summary["batch_id"]
    again = await darkroom(env, "download", batch_id, "--out", str(out), "--json")
    assert again.returncode == 0, again.stderr
    resumed = json.loads(again.stdout)
    assert (resumed["downloaded"], resumed["skipped"]) == (2, 1)
    assert_folder_matches_manifest(out)

    human = await asyncio.to_thread(
        in_process,
        capsys,
        download_command,
        batch_id,
        out=out,
        as_json=False,
        url=env["DARKROOM_API_URL"],
        key=caller.key,
        settings=state.settings,
    )
    assert human.returncode == 0, human.stderr
    assert f"batch {batch_id}: succeeded (3 succeeded)" in human.stdout
    assert "0 downloaded, 3 already there, 0 failed" in human.stdout


async def test_download_of_a_batch_with_a_failed_job_exits_3(
    env: dict[str, str],
    client: httpx.AsyncClient,
    caller: Caller,
    state: State,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    batch_id = await finished_batch(client, caller, state)
    out = tmp_path / "out"
    got = await asyncio.to_thread(
        in_process,
        capsys,
        download_command,
        batch_id,
        out=out,
        as_json=True,
        url=env["DARKROOM_API_URL"],
        key=caller.key,
        settings=state.settings,
    )
    assert got.returncode == 3, got.stderr
    summary = json.loads(got.stdout)
    assert summary["status"] == "partially_failed"
    assert summary["counts"]["failed"] == 1
    manifest = assert_folder_matches_manifest(out)
    assert sorted(p.name for p in out.iterdir()) == [
        "00003.jpg",
        "SKU-1.png",
        "SKU-2.png",
        "manifest.json",
    ]
    assert manifest["jobs"][2]["error_code"] == "content_policy"


SERVER_LOG = re.compile(r"^\d{4}-\d\d-\d\dT\S+ \[")


def in_process(
    capsys: pytest.CaptureFixture[str], command: Callable[..., int], *args: Any, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """The command's function itself, for the cases where starting a process adds nothing.
    The live server runs in this process too: its request log lines (written as it answers,
    sometimes after the command has returned) are left out of what the command wrote."""
    code = command(*args, **kwargs)
    out, err = capsys.readouterr()
    err = "".join(line for line in err.splitlines(keepends=True) if not SERVER_LOG.match(line))
    return subprocess.CompletedProcess(args, code, out, err)


async def test_run_without_wait_submits_and_an_unfinished_download_exits_5(
    api_url: str, caller: Caller, state: State, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch_file = tmp_path / "covers.json"
    batch_file.write_text(json.dumps(BATCH))
    target = {"url": api_url, "key": caller.key, "settings": state.settings}
    ran = await asyncio.to_thread(
        in_process, capsys, run_file, batch_file, wait=False, out=None, as_json=True, **target
    )
    assert ran.returncode == 0, ran.stderr
    summary = json.loads(ran.stdout)
    assert summary["status"] == "queued"
    assert summary["counts"]["total"] == 3
    out = tmp_path / "o"
    got = await asyncio.to_thread(
        in_process, capsys, download_command, summary["batch_id"], out=out, as_json=False, **target
    )
    assert got.returncode == 5, got.stderr
    assert [p.name for p in out.iterdir()] == ["manifest.json"]
    assert "queued" in got.stdout


async def test_what_a_user_reads_when_it_cannot_work(
    api_url: str,
    client: httpx.AsyncClient,
    caller: Caller,
    state: State,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    unknown = tmp_path / "covers.txt"
    unknown.write_text("prompt\nx\n")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"jobs": [{"prompt": ""}]}))
    batch_id = await submit(client, caller, {"jobs": [{"prompt": "x"}]})
    target = {"url": api_url, "key": caller.key, "settings": state.settings}
    runs: list[tuple[Any, ...]] = [
        (run_file, unknown, 2, "cannot tell the type of covers.txt"),
        (run_file, tmp_path / "missing.csv", 2, "cannot read"),
        (run_file, bad, 1, "jobs[0].prompt"),
    ]
    for command, path, code, text in runs:
        result = await asyncio.to_thread(
            in_process, capsys, command, path, wait=True, out=None, as_json=True, **target
        )
        assert_one_line(result, code, text)
    downloads = [
        ("not-a-batch", target, 2, "is not a batch id"),
        (batch_id, {**target, "key": "dk_no"}, 1, "HTTP 401"),
        (str(uuid.uuid4()), target, 1, "HTTP 404"),
    ]
    for batch, where, code, text in downloads:
        result = await asyncio.to_thread(
            in_process, capsys, download_command, batch, out=tmp_path / "o", as_json=True, **where
        )
        assert_one_line(result, code, text)


async def test_run_sends_each_file_as_its_content_type(
    api_url: str, caller: Caller, state: State, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = {"url": api_url, "key": caller.key, "settings": state.settings}
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
        ran = await asyncio.to_thread(
            in_process,
            capsys,
            run_file,
            tmp_path / name,
            wait=False,
            out=None,
            as_json=False,
            **target,
        )
        assert ran.returncode == 0, (name, ran.stderr)
        assert ": queued (3 queued)" in ran.stdout, name


def assert_one_line(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, result.stderr
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("darkroom: ")
    assert text in line
