"""`darkroom download BATCH --out DIR`: a batch's outputs and manifest into a folder.

Resumable: a file already there whose SHA-256 matches the manifest is skipped. A file is
written under a temporary name (`.NAME.part`) and renamed only once its SHA-256 checks
out, so an interrupted download never leaves a half file under the real name. Names come
from the manifest's `file` (the archive's names) and are refused unless they are one plain
file name: a server cannot make the CLI write outside DIR.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.api_client import ApiClient, ApiFailure

MANIFEST_FILE = "manifest.json"
WORKERS = 4
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}")
_READ = 1024 * 1024


@dataclass
class Downloaded:
    """What a download did, for the summary and the exit code."""

    manifest: dict[str, Any]
    out: Path
    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        totals = self.manifest["totals"]
        return {
            "batch_id": self.manifest["batch_id"],
            "status": self.manifest["status"],
            "counts": totals["by_status"],
            "cost_usd": totals["cost_usd"],
            "out": str(self.out),
            "manifest": str(self.out / MANIFEST_FILE),
            "downloaded": len(self.downloaded),
            "skipped": len(self.skipped),
            "failed": self.failed,
        }


def download_batch(
    api: ApiClient,
    batch_id: str,
    out: Path,
    *,
    on_file: Callable[[int, int], None] | None = None,
) -> Downloaded:
    """Every output of the batch into `out`, then its manifest.json. Failures of single
    files are collected (the rest goes on); a failure to get the manifest raises."""
    manifest = api.call("GET", f"/v1/batches/{batch_id}/manifest")
    result = Downloaded(manifest, out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ApiFailure(f"cannot create {out}: {exc.strerror or exc}") from exc
    rows = [row for row in manifest["jobs"] if row.get("file")]
    total, done = len(rows), 0
    pool = ThreadPoolExecutor(WORKERS)
    try:
        outcomes = pool.map(lambda r: _fetch(api, out, r), rows)
        for row, outcome in zip(rows, outcomes, strict=True):
            name = str(row["file"])
            if outcome == "downloaded":
                result.downloaded.append(name)
            elif outcome == "skipped":
                result.skipped.append(name)
            else:
                result.failed.append({"file": name, "job_id": str(row["job_id"]), "error": outcome})
            done += 1
            if on_file is not None:
                on_file(done, total)
    finally:
        # Ctrl-C: the files under way finish (or leave only a .part); no new one starts.
        pool.shutdown(cancel_futures=True)
    _write_atomically(out / MANIFEST_FILE, json.dumps(manifest, indent=2).encode() + b"\n")
    return result


def _fetch(api: ApiClient, out: Path, row: dict[str, Any]) -> str:
    """ "downloaded", "skipped", or why the file could not be had."""
    name = str(row["file"])
    if not _PLAIN_NAME.fullmatch(name) or name == MANIFEST_FILE:
        return f"refused the file name {name!r}"
    target, expected = out / name, str(row.get("sha256") or "")
    if expected and target.is_file() and _sha256(target) == expected:
        return "skipped"
    part = out / f".{name}.part"
    try:
        with part.open("wb") as file:
            api.download(f"/v1/jobs/{row['job_id']}/output", file)
        got = _sha256(part)
        if expected and got != expected:
            return f"sha256 {got} does not match the manifest's {expected}"
        os.replace(part, target)
    except ApiFailure as failure:
        return str(failure)
    except OSError as exc:
        return f"cannot write {target}: {exc.strerror or exc}"
    finally:
        part.unlink(missing_ok=True)
    return "downloaded"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_READ):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomically(path: Path, data: bytes) -> None:
    part = path.with_name(f".{path.name}.part")
    part.write_bytes(data)
    os.replace(part, path)
