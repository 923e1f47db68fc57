"""`darkroom submit FILE.json [--wait]`: post a batch, then follow it with a progress bar."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from service.api_client import ApiClient, ApiFailure, resolve_target
from service.config import Settings

FINAL = {"succeeded", "failed", "partially_failed", "cancelled"}
POLL_S = 0.5


def submit_file(
    path: Path,
    *,
    wait: bool,
    url: str | None,
    key: str | None,
    settings: Settings,
    compact: bool = False,
) -> int:
    console = Console(stderr=True, highlight=False)
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        console.print(f"[red]darkroom: cannot read {escape(str(path))}: {escape(str(exc))}[/red]")
        return 2
    try:
        target = resolve_target(url, key, settings.data_dir)
        with ApiClient(target) as api:
            batch = api.call("POST", "/v1/batches", json=body)
            total = batch["counts"]["total"]
            console.print(f"batch [bold]{batch['id']}[/bold]: {total} jobs queued")
            if wait:
                batch = _follow(api, batch, console)
    except ApiFailure as failure:
        console.print(f"[red]darkroom: {escape(str(failure))}[/red]", soft_wrap=True)
        return failure.exit_code
    print(json.dumps(batch, indent=None if compact else 2))  # noqa: T201 - the command's output
    if wait:
        _say_where_outputs_are(batch, settings, target.url, console)
        return 0 if batch["status"] == "succeeded" else 1
    return 0


def _follow(api: ApiClient, batch: dict[str, Any], console: Console) -> dict[str, Any]:
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
            batch = api.call("GET", f"/v1/batches/{batch['id']}")
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
