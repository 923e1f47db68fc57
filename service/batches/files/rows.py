"""What a batch file gives, and where each part of it came from.

Every parser (CSV, JSONL, YAML) produces FileRows: the batch-level keys, each job as
the dict a JSON body would have carried, and Places, which turn a field path of the
JSON body (`jobs[16].width`) into the line and column of the file (`line 18, column
"width"`). One FileBatchCreate validation, then the same submit as JSON; every 422 on
the way is re-addressed with Places."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from service.batches.schemas import MAX_FILE_ROWS, FileBatchCreate, JobCreate
from service.kit.errors import ApiError, ErrorDetail, InvalidInput, PayloadTooLarge, field_path

MAX_DETAILS = 100
# The fields a row may set; every other column or key of a row is a template variable.
JOB_FIELDS = frozenset(JobCreate.model_fields) - {"input", "variables"}
_JOB_PATH = re.compile(r"^jobs\[(\d+)\](?:\.(.+))?$")


@dataclass
class Places:
    """Where each job (and each batch-level key) was in the file."""

    # job index, the field path inside the job or None -> "line 17, column \"width\"".
    job: Callable[[int, str | None], str]
    batch: Callable[[str], str] = field(default=lambda name: name)


@dataclass
class FileRows:
    batch: dict[str, Any]
    jobs: list[dict[str, Any]]
    places: Places


class FileProblems:
    """Collects a file's problems (up to MAX_DETAILS) while it is read."""

    def __init__(self) -> None:
        self.details: list[ErrorDetail] = []

    def add(self, where: str, message: str) -> None:
        self.details.append(ErrorDetail(field=where, message=message))

    @property
    def full(self) -> bool:
        return len(self.details) >= MAX_DETAILS

    def raise_any(self) -> None:
        if self.details:
            raise invalid(self.details)


def invalid(details: Sequence[ErrorDetail], code: str = "invalid_file") -> InvalidInput:
    first = details[0]
    message = f"{first.field}: {first.message}" if first.field else first.message
    if len(details) > 1:
        message += f" (and {len(details) - 1} more)"
    return InvalidInput(message, details=list(details[:MAX_DETAILS]), code=code)


def too_many_rows() -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the file has more than {MAX_FILE_ROWS:,} rows: split it into several batches",
        code="too_many_rows",
    )


def build_batch(rows: FileRows) -> FileBatchCreate:
    """The file's batch, validated as a JSON body would be; a 422 names lines and columns."""
    try:
        return FileBatchCreate.model_validate({**rows.batch, "jobs": rows.jobs})
    except ValidationError as exc:
        details = []
        for error in exc.errors(include_url=False, include_input=False)[:MAX_DETAILS]:
            loc = [p for p in error["loc"] if not (isinstance(p, str) and "-" in p)]
            details.append(ErrorDetail(field=field_path(loc) or "body", message=error["msg"]))
        raise locate(InvalidInput("invalid", details=details), rows.places) from None


def locate(error: ApiError, places: Places) -> ApiError:
    """The same 422, its details addressed by line and column instead of JSON path
    (any other error, a 409 for a reused Idempotency-Key say, is left as it is)."""
    if not error.details or error.status_code != 422:
        return error
    details = []
    for detail in error.details:
        where = detail.field
        if where:
            match = _JOB_PATH.match(where)
            if match is not None:
                where = places.job(int(match[1]), match[2])
            else:
                where = places.batch(where)
        details.append(ErrorDetail(field=where, message=detail.message))
    return invalid(details, code=error.code)


def column_of(path: str | None) -> str | None:
    """`reference_images[0]` -> `reference_images`; `options.steps` -> `options`."""
    if not path:
        return None
    return re.split(r"[.\[]", path, maxsplit=1)[0]
