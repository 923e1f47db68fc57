"""JSONL: one job object per line, as in a JSON body's `jobs` (`variables` included)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from service.batches.files.rows import FileProblems, FileRows, Places, too_many_rows
from service.batches.schemas import MAX_FILE_ROWS
from service.kit.json_guard import unstorable


class _NotFinite(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _NotFinite(f"{name} is not a number JSON allows")


def parse_jsonl(lines: Iterator[str], max_rows: int = MAX_FILE_ROWS) -> FileRows:
    problems = FileProblems()
    jobs: list[dict[str, Any]] = []
    line_of: list[int] = []
    for number, line in enumerate(lines, start=1):
        if problems.full:
            break
        if not line.strip():
            continue
        if len(jobs) >= max_rows:
            raise too_many_rows()
        where = f"line {number}"
        try:
            job = json.loads(line, parse_constant=_no_constant)
        except _NotFinite as exc:
            problems.add(where, str(exc))
            continue
        except ValueError as exc:
            problems.add(where, f"malformed JSON: {exc}")
            continue
        except RecursionError:
            problems.add(where, "malformed JSON: nested too deep")
            continue
        if not isinstance(job, dict):
            problems.add(where, "each line must be one job object, {...}")
            continue
        for detail in unstorable(job):
            problems.add(f'{where}, field "{detail.field}"', detail.message)
        jobs.append(job)
        line_of.append(number)
    problems.raise_any()
    if not jobs:
        problems.add("line 1", "the file is empty: one job object per line")
        problems.raise_any()

    def job_place(index: int, path: str | None) -> str:
        line = f"line {line_of[index]}"
        return f'{line}, field "{path}"' if path else line

    return FileRows(batch={}, jobs=jobs, places=Places(job=job_place))
