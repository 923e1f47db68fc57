"""`darkroom run FILE` and `darkroom download BATCH`: a batch file in, outputs and their
manifest out, with live progress on stderr and, with --json, one JSON object on stdout.

Exit codes (also in `darkroom run --help`: service/cli.py EXIT_CODES_HELP):
  0  done: every job succeeded (and, with --out, every output is in DIR)
  1  Darkroom refused the request or could not be reached
  2  bad usage: unreadable file, unknown file type, no API key, options that clash
  3  the batch finished with failed or cancelled jobs (the others' outputs are in DIR)
  4  some outputs could not be downloaded: run `darkroom download` again to resume
  5  the batch is not finished (download: what was ready is in DIR)
  130 interrupted (the batch goes on in Darkroom)
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from service.api_client import ApiClient, ApiFailure, Target, resolve_target
from service.config import Settings
from service.download_cli import Downloaded, download_batch
from service.progress import follow
from service.run_template import BadOptions, BatchOptions, submit

OK, REFUSED, USAGE, JOBS_FAILED, DOWNLOAD_FAILED, NOT_FINISHED, INTERRUPTED = 0, 1, 2, 3, 4, 5, 130
FINAL = {"succeeded", "failed", "partially_failed", "cancelled"}
CONTENT_TYPES = {
    ".csv": "text/csv",
    ".jsonl": "application/x-ndjson",
    ".ndjson": "application/x-ndjson",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".json": "application/json",
}


class Usage(Exception):
    """The user has to change the command: exit 2."""


def run_file(
    path: Path,
    *,
    wait: bool,
    out: Path | None,
    as_json: bool,
    url: str | None,
    key: str | None,
    settings: Settings,
    options: BatchOptions | None = None,
) -> int:
    """Submit a batch file (with the template and name `options` give: run_template.py);
    with --wait or --out, follow it to the end; with --out, download its outputs and
    manifest into the folder."""
    console = Console(stderr=True, highlight=False)
    options = options or BatchOptions()
    try:
        options.check()
        content_type = _content_type(path)
        path.open("rb").close()
    except (Usage, BadOptions, OSError) as exc:
        return _fail(console, _os_message(exc, path), USAGE)
    try:
        target = resolve_target(url, key, settings.data_dir)
        with ApiClient(target) as api:
            batch = submit(api, path, content_type, options)
        console.print(f"batch [bold]{batch['id']}[/bold]: {batch['counts']['total']} jobs queued")
        if not (wait or out):
            _emit(batch_summary(batch), as_json, console)
            return OK
        return _finish(target, batch, out=out, as_json=as_json, console=console)
    except ApiFailure as failure:
        return _fail(console, str(failure), failure.exit_code)
    except OSError as exc:  # the file went away between the check and the upload
        return _fail(console, _os_message(exc, path), USAGE)
    except KeyboardInterrupt:
        return _fail(console, "interrupted: the batch goes on in Darkroom", INTERRUPTED)


def download_command(
    batch_id: str, *, out: Path, as_json: bool, url: str | None, key: str | None, settings: Settings
) -> int:
    console = Console(stderr=True, highlight=False)
    try:
        batch_id = str(uuid.UUID(batch_id))
    except ValueError:
        return _fail(console, f"{batch_id!r} is not a batch id", USAGE)
    try:
        target = resolve_target(url, key, settings.data_dir)
        with ApiClient(target) as api:
            got = _download(api, batch_id, out, console)
    except ApiFailure as failure:
        return _fail(console, str(failure), failure.exit_code)
    except KeyboardInterrupt:
        return _fail(console, "interrupted: run the same command again to resume", INTERRUPTED)
    code = exit_code(got.manifest["status"], got)
    _emit({**got.summary(), "exit_code": code}, as_json, console)
    return code


def _finish(
    target: Target, batch: dict[str, Any], *, out: Path | None, as_json: bool, console: Console
) -> int:
    with ApiClient(target) as api:
        batch = follow(api, batch, console, final=FINAL)
        if out is None:
            code = OK if batch["status"] == "succeeded" else JOBS_FAILED
            _emit({**batch_summary(batch), "exit_code": code}, as_json, console)
            return code
        got = _download(api, batch["id"], out, console)
    code = exit_code(batch["status"], got)
    _emit({**got.summary(), "exit_code": code}, as_json, console)
    return code


def _download(api: ApiClient, batch_id: str, out: Path, console: Console) -> Downloaded:
    last = [0.0]

    def on_file(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= 1:
            last[0] = now
            console.print(f"downloaded {done}/{total}", highlight=False)

    got = download_batch(api, batch_id, out, on_file=on_file)
    for failed in got.failed:
        console.print(f"[red]{escape(failed['file'])}: {escape(failed['error'])}[/red]")
    return got


def exit_code(status: str, got: Downloaded) -> int:
    if got.failed:
        return DOWNLOAD_FAILED
    if status not in FINAL:
        return NOT_FINISHED
    return OK if status == "succeeded" else JOBS_FAILED


def batch_summary(batch: dict[str, Any]) -> dict[str, Any]:
    return {
        "batch_id": batch["id"],
        "status": batch["status"],
        "counts": batch["counts"],
        "cost_usd": batch["cost_usd"],
    }


def _emit(summary: dict[str, Any], as_json: bool, console: Console) -> None:
    """--json: the summary on stdout, for scripts. Otherwise a few lines for people."""
    if as_json:
        print(json.dumps(summary))  # noqa: T201 - the command's output
        return
    counts = summary["counts"]
    done = ", ".join(f"{n} {status}" for status, n in counts.items() if n and status != "total")
    lines = [f"batch {summary['batch_id']}: {summary['status']} ({done or 'no jobs'})"]
    lines.append(f"cost: ${summary['cost_usd']:.4f}")
    if "out" in summary:
        lines.append(
            f"outputs: {summary['out']} ({summary['downloaded']} downloaded, "
            f"{summary['skipped']} already there, {len(summary['failed'])} failed)"
        )
    print("\n".join(lines))  # noqa: T201 - the command's output


def _content_type(path: Path) -> str:
    content_type = CONTENT_TYPES.get(path.suffix.lower())
    if content_type is None:
        known = ", ".join(CONTENT_TYPES)
        raise Usage(f"cannot tell the type of {path.name}: name it {known}")
    return content_type


def _os_message(exc: Exception, path: Path) -> str:
    if isinstance(exc, OSError):
        return f"cannot read {path}: {exc.strerror or exc}"
    return str(exc)


def _fail(console: Console, message: str, code: int) -> int:
    console.print(f"[red]darkroom: {escape(message)}[/red]", soft_wrap=True)
    return code
