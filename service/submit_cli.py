"""`darkroom submit FILE.json [--wait]`: post a batch, then follow it with a progress bar."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from service.config import Settings
from service.dev_key import read_dev_key

FINAL = {"succeeded", "failed", "partially_failed", "cancelled"}
POLL_S = 0.5


def submit_file(path: Path, *, wait: bool, url: str, key: str | None, settings: Settings) -> int:
    console = Console(stderr=True)
    key = key or read_dev_key(settings.data_dir)
    if key is None:
        console.print("[red]no API key: pass --key or set DARKROOM_API_KEY[/red]")
        return 2
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        console.print(f"[red]cannot read {path}: {exc}[/red]")
        return 2
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=60) as api:
        response = api.post("/v1/batches", json=body)
        if response.status_code not in (200, 202):
            console.print(f"[red]HTTP {response.status_code}[/red] {response.text}")
            return 1
        batch = response.json()
        console.print(f"batch [bold]{batch['id']}[/bold]: {batch['counts']['total']} jobs queued")
        if wait:
            batch = _follow(api, batch, console)
    print(json.dumps(batch, indent=2))  # noqa: T201 - the command's output
    if wait:
        _say_where_outputs_are(batch, settings, url, console)
        return 0 if batch["status"] == "succeeded" else 1
    return 0


def _follow(api: httpx.Client, batch: dict[str, Any], console: Console) -> dict[str, Any]:
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("generating", total=batch["counts"]["total"])
        while batch["status"] not in FINAL:
            time.sleep(POLL_S)
            batch = api.get(f"/v1/batches/{batch['id']}").raise_for_status().json()
            counts = batch["counts"]
            done = counts["succeeded"] + counts["failed"] + counts["cancelled"]
            progress.update(task, completed=done, description=f"{counts['failed']} failed")
    return batch


def _say_where_outputs_are(
    batch: dict[str, Any], settings: Settings, url: str, console: Console
) -> None:
    folder = (settings.storage_dir / batch["id"]).resolve()
    console.print(f"status: [bold]{batch['status']}[/bold]")
    if folder.is_dir():
        console.print(f"outputs: {folder}")
    console.print(f"jobs and output URLs: {url}/v1/batches/{batch['id']}/jobs")
