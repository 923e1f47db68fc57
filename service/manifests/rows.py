"""One manifest row per job, the same for the JSON manifest, the CSV manifest, the
archive's manifest.json and the CLI's download folder.

The names follow the tutorials' manifest.json where they fit (`file`, `prompt`,
`status`, `error`, `cost_usd`, `model`, `seed`, `width`, `height`). A row is flat, so that
the CSV and the JSON say the same thing in the same words; only the row's own
variables (sku, name, ...) are nested in JSON and become the first columns in CSV.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Row

from service.jobs.presenter import output_url
from service.manifests.repository import AttemptFacts
from service.models import JobStatus
from service.storage.base import Storage

MANIFEST_NAME = "manifest.json"

COLUMNS = (
    "index",
    "job_id",
    "file",
    "output_name",
    "prompt",
    "model",
    "route",
    "provider",
    "status",
    "url",
    "media",
    "content_type",
    "sha256",
    "bytes",
    "width",
    "height",
    "duration_s",
    "seed",
    "cost_usd",
    "generation_s",
    "attempts",
    "error_code",
    "error",
    "finished_at",
)


class FileNames:
    """The file each job's output is written to: its output name, unless a job before it
    (in index order) took that name already, whatever the case; then `stem-2.ext`,
    `stem-3.ext`, ... Deterministic, so the manifest, the archive and `darkroom download`
    always agree. Holds one short name per job, never the jobs."""

    def __init__(self) -> None:
        self._taken = {MANIFEST_NAME}

    def claim(self, name: str) -> str:
        stem, dot, ext = name.rpartition(".")
        if not dot:
            stem, ext = name, ""
        candidate, n = name, 1
        while candidate.lower() in self._taken:
            n += 1
            candidate = f"{stem}-{n}.{ext}" if dot else f"{stem}-{n}"
        self._taken.add(candidate.lower())
        return candidate


@dataclass
class ManifestRow:
    values: dict[str, Any]
    variables: dict[str, Any] = field(default_factory=dict)
    # Where the output is in storage (None without one): what the archive reads.
    output_key: str | None = None

    @property
    def file(self) -> str | None:
        name = self.values["file"]
        return str(name) if name is not None else None

    def as_json(self) -> dict[str, Any]:
        return {**self.values, "variables": self.variables}


def job_row(
    job: Row[Any],
    facts: AttemptFacts | None,
    names: FileNames,
    *,
    public_url: str,
    storage: Storage,
) -> ManifestRow:
    params = job.params
    output_name = str(params.get("output_name") or f"{job.position:05d}")
    file_name = names.claim(output_name)
    has_output = job.status is JobStatus.succeeded and job.output_key is not None
    content_type = job.output_content_type if has_output else None
    media = params.get("media", "image")
    if content_type:
        media = "video" if content_type.startswith("video/") else "image"
    generation_ms = facts.generation_ms if facts is not None else None
    error = job.error_code is not None and job.status is not JobStatus.succeeded
    values: dict[str, Any] = {
        "index": job.position,
        "job_id": str(job.id),
        "file": file_name if has_output else None,
        "output_name": output_name,
        "prompt": job.prompt,
        "model": job.model,
        "route": job.route,
        "provider": job.provider,
        "status": job.status.value,
        "url": output_url(job.id, job.output_key, public_url, storage) if has_output else None,
        "media": media,
        "content_type": content_type,
        "sha256": job.output_sha256 if has_output else None,
        "bytes": job.output_bytes if has_output else None,
        "width": (job.output_width if has_output else None) or params.get("width"),
        "height": (job.output_height if has_output else None) or params.get("height"),
        "duration_s": (job.output_duration_s if has_output else None) or params.get("duration_s"),
        "seed": params.get("seed"),
        "cost_usd": float(job.cost_usd),
        "generation_s": None if generation_ms is None else generation_ms / 1000,
        "attempts": job.attempts,
        "error_code": job.error_code if error else None,
        "error": (job.error_message or "") if error else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }
    variables = job.variables if isinstance(job.variables, dict) else {}
    return ManifestRow(values, dict(variables), job.output_key if has_output else None)


def variable_names(templates: dict[str, Any] | None, names: list[str]) -> list[str]:
    """The order of the variable columns: the batch file's own column order when the batch
    recorded one (`templates["columns"]`), then any other names, sorted."""
    recorded = templates.get("columns") if isinstance(templates, dict) else None
    first = [n for n in recorded if isinstance(n, str)] if isinstance(recorded, list) else []
    known = set(names)
    ordered = [name for name in dict.fromkeys(first) if name in known]
    return ordered + sorted(known - set(ordered))


def csv_header(variables: list[str]) -> list[str]:
    """Variables first (a variable named like a fixed column is shown as `var.<name>`),
    then the fixed columns, always in the same order."""
    fixed = set(COLUMNS)
    return [f"var.{name}" if name in fixed else name for name in variables] + list(COLUMNS)


def csv_line(row: ManifestRow | None, variables: list[str], header: list[str]) -> str:
    """One CSV record (the header when `row` is None), quoted by the csv module."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    if row is None:
        writer.writerow(header)
    else:
        writer.writerow(
            [_cell(row.variables.get(name)) for name in variables]
            + [_cell(row.values[name]) for name in COLUMNS]
        )
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)
