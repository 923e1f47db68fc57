"""CSV: a header row, then one job per row.

Columns named like job fields set them, converted to their types (an empty cell leaves
the field unset); every other column is a template variable (an empty cell is a missing
variable). Quoting, embedded newlines and commas are the csv module's."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from typing import Any

from service.batches.files.rows import (
    JOB_FIELDS,
    FileProblems,
    FileRows,
    Places,
    column_of,
    too_many_rows,
)
from service.batches.schemas import MAX_FILE_ROWS

_INTEGERS = frozenset({"width", "height", "seed", "fps"})
_OBJECTS = frozenset({"options", "metadata"})
# Free text is kept as written; every other string field loses surrounding spaces.
_FREE_TEXT = frozenset({"prompt", "negative_prompt", "output_name"})
# Names a cell value as JSON would: the type the job field wants.
Convert = Callable[[str], Any]


def _integer(cell: str) -> int:
    try:
        return int(cell.strip())
    except ValueError:
        raise ValueError(f"{cell.strip()[:40]!r} is not a whole number") from None


def _number(cell: str) -> float:
    try:
        return float(cell.strip())
    except ValueError:
        raise ValueError(f"{cell.strip()[:40]!r} is not a number") from None


def _object(cell: str) -> Any:
    try:
        value = json.loads(cell, parse_constant=_no_constant)
    except ValueError as exc:
        raise ValueError(f"not a JSON object: {exc}") from None
    except RecursionError:
        raise ValueError("not a JSON object: nested too deep") from None
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _references(cell: str) -> list[str]:
    """Upload ids or https URLs, separated by spaces."""
    return cell.split()


def _converter(name: str) -> Convert:
    if name in _INTEGERS:
        return _integer
    if name == "duration_s":
        return _number
    if name in _OBJECTS:
        return _object
    if name == "reference_images":
        return _references
    if name in _FREE_TEXT:
        return str
    return str.strip


def parse_csv(lines: Iterator[str], max_rows: int = MAX_FILE_ROWS) -> FileRows:
    reader = csv.reader(lines)
    problems = FileProblems()
    header: list[tuple[str, Convert | None]] = []
    jobs: list[dict[str, Any]] = []
    line_of: list[int] = []
    while not problems.full:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.add(f"line {start}", f"not CSV: {exc}")
            break
        if not header:
            if not any(cell.strip() for cell in record):
                continue  # blank lines before the header
            header = _header(record, start, problems)
            problems.raise_any()
            continue
        if not any(record):
            continue  # a blank line
        if len(jobs) >= max_rows:
            raise too_many_rows()
        job = _row(record, header, start, problems)
        jobs.append(job)
        line_of.append(start)
    problems.raise_any()
    if not header:
        problems.add("line 1", "the file is empty: a CSV batch needs a header row and rows")
    elif not jobs:
        problems.add("line 2", "the file has a header but no rows: one row per job")
    problems.raise_any()
    names = [name for name, _ in header]

    def job_place(index: int, path: str | None) -> str:
        column = column_of(path)
        if column is None or column == "variables" or column not in names:
            return f"line {line_of[index]}"
        return f'line {line_of[index]}, column "{column}"'

    return FileRows(batch={}, jobs=jobs, places=Places(job=job_place))


def _header(
    record: list[str], line: int, problems: FileProblems
) -> list[tuple[str, Convert | None]]:
    """(name, converter) per column; None: a template variable."""
    header: list[tuple[str, Convert | None]] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(record, start=1):
        name = raw.strip()
        if not name:
            problems.add(f"line {line}, column {number}", "the header names no column here")
            continue
        if "\x00" in name:
            problems.add(f"line {line}, column {number}", "must not contain NUL")
            continue
        if name in seen:
            problems.add(
                f'line {line}, column "{name}"',
                f"named twice in the header (columns {seen[name]} and {number})",
            )
        seen.setdefault(name, number)
        header.append((name, _converter(name) if name in JOB_FIELDS else None))
    return header


def _row(
    record: list[str],
    header: list[tuple[str, Convert | None]],
    line: int,
    problems: FileProblems,
) -> dict[str, Any]:
    if len(record) > len(header):
        problems.add(
            f"line {line}",
            f"{len(record)} cells, but the header names {len(header)} columns "
            "(a cell with a comma must be quoted)",
        )
        return {}
    job: dict[str, Any] = {}
    variables: dict[str, str] = {}
    for (name, convert), cell in zip(header, record, strict=False):
        if not cell:
            continue
        if "\x00" in cell:
            problems.add(f'line {line}, column "{name}"', "must not contain NUL (\\u0000)")
            continue
        if convert is None:
            variables[name] = cell
            continue
        try:
            value = convert(cell)
        except ValueError as exc:
            problems.add(f'line {line}, column "{name}"', str(exc))
            continue
        if value != "":
            job[name] = value
    if variables:
        job["variables"] = variables
    return job
