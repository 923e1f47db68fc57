"""YAML: the pipeline shape. Batch-level keys as in a JSON body (name, priority,
budget_usd, callback_url, metadata, notify, defaults, template, templates), and `jobs`:
rows that set job fields, may pick a named `template`, and give variables (in
`variables`, or as any other key, as a CSV's other columns do). Images and videos mix.

    name: spring-catalogue
    defaults: {model: flux-schnell, width: 1024, height: 1024}
    templates:
      photo: {prompt: "E-commerce photo: {{ name }}, {{ color }}", output_name: "{{ sku }}"}
      clip: "product-clip@2"
    jobs:
      - {template: photo, sku: A-1, name: mug, color: red}
      - {template: clip, media: video, sku: A-1, name: mug, duration_s: 5}

Problems are placed with the parser's marks (line and column of the key). A YAML
file is read whole: it is a pipeline, not a 50,000-row table (that is CSV's job)."""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from service.batches.files.rows import (
    JOB_FIELDS,
    FileProblems,
    FileRows,
    Places,
    column_of,
    too_many_rows,
)
from service.batches.schemas import MAX_FILE_ROWS

# Aliases can make a small file a huge (or endless) value: count what they expand to.
MAX_NODES = 2_000_000
_Mark = tuple[int, int]


def parse_yaml(text: str, max_rows: int = MAX_FILE_ROWS) -> FileRows:
    problems = FileProblems()
    root = _compose(text, problems)
    problems.raise_any()
    if not isinstance(root, MappingNode):
        where = _at(_mark(root)) if root is not None else "line 1"
        problems.add(where, "the file must be a mapping: name, defaults, template(s), jobs")
        problems.raise_any()
    assert isinstance(root, MappingNode)
    _check_size(root, problems)
    problems.raise_any()
    loader = yaml.SafeLoader("")
    try:
        data = loader.construct_document(root)
    except yaml.YAMLError as exc:
        problems.add(_error_place(exc), _problem(exc))
        problems.raise_any()
    finally:
        loader.dispose()
    keys = _key_marks(root)
    batch = {str(k): _plain(v, _at(keys.get(str(k))), problems) for k, v in data.items()}
    raw_jobs = batch.pop("jobs", None)
    job_nodes = _job_nodes(root)
    if not isinstance(raw_jobs, list) or not raw_jobs:
        problems.add(_at(keys.get("jobs")) if "jobs" in keys else "jobs", "needs a list of jobs")
        problems.raise_any()
    assert isinstance(raw_jobs, list)
    if len(raw_jobs) > max_rows:
        raise too_many_rows()
    jobs = [_job(row, index, job_nodes, problems) for index, row in enumerate(raw_jobs)]
    problems.raise_any()

    def job_place(index: int, path: str | None) -> str:
        node = job_nodes[index] if index < len(job_nodes) else None
        if node is None:
            return f"jobs[{index}]"
        column = column_of(path)
        marks = _key_marks(node) if isinstance(node, MappingNode) else {}
        if column == "variables" and path and "." in path:
            column = path.split(".", 1)[1]  # a variable given as a key of its own
        if column is not None and column in marks:
            return f'{_at(marks[column])} ("{path}")'
        return _at(_mark(node)) + (f' ("{path}")' if path else "")

    def batch_place(path: str) -> str:
        column = column_of(path)
        return f'{_at(keys[column])} ("{path}")' if column in keys else path

    return FileRows(batch=batch, jobs=jobs, places=Places(job=job_place, batch=batch_place))


def _compose(text: str, problems: FileProblems) -> Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        problems.add(_error_place(exc), _problem(exc))
    except RecursionError:
        problems.add("body", "not YAML this server reads: nested too deep")
    return None


def _check_size(root: Node, problems: FileProblems) -> None:
    seen = 0
    stack: list[Node] = [root]
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            problems.add(_at(_mark(root)), "aliases expand to more than this server reads")
            return
        if isinstance(node, SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, MappingNode):
            for key, value in node.value:
                stack.append(key)
                stack.append(value)


def _job(row: Any, index: int, nodes: list[Node], problems: FileProblems) -> dict[str, Any]:
    where = _at(_mark(nodes[index])) if index < len(nodes) else f"jobs[{index}]"
    if not isinstance(row, dict):
        problems.add(where, "each job must be a mapping of fields and variables")
        return {}
    job: dict[str, Any] = {}
    variables: dict[str, Any] = {}
    for key, value in row.items():
        if not isinstance(key, str):
            problems.add(where, f"key {key!r} must be text")
            continue
        plain = _plain(value, where, problems)
        if key in JOB_FIELDS or key == "input":
            job[key] = plain
        elif key == "variables" and isinstance(plain, dict):
            variables.update(plain)
        else:
            variables[key] = plain
    if variables:
        job["variables"] = variables
    return job


def _plain(value: Any, where: str, problems: FileProblems) -> Any:
    """A YAML value as JSON would have it: dates become ISO text; what JSON or Postgres
    cannot hold (NaN, NUL, bytes, sets, non-text keys) is a problem."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        problems.add(where, f"{value} is not a number JSON allows")
        return None
    if isinstance(value, str):
        if "\x00" in value:
            problems.add(where, "must not contain NUL (\\u0000)")
        return value
    if isinstance(value, list):
        return [_plain(item, where, problems) for item in value]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                problems.add(where, f"key {key!r} must be text")
                continue
            out[key] = _plain(item, where, problems)
        return out
    if value is None or isinstance(value, bool | int | float):
        return value
    problems.add(where, f"a {type(value).__name__} is not a value a batch can hold")
    return None


def _job_nodes(root: MappingNode) -> list[Node]:
    for key, value in root.value:
        if isinstance(key, ScalarNode) and key.value == "jobs" and isinstance(value, SequenceNode):
            return list(value.value)
    return []


def _key_marks(node: MappingNode) -> dict[str, _Mark]:
    return {str(key.value): _mark(key) for key, _ in node.value if isinstance(key, ScalarNode)}


def _mark(node: Node) -> _Mark:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _at(mark: _Mark | None) -> str:
    return f"line {mark[0]}, column {mark[1]}" if mark else "body"


def _error_place(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return _at((mark.line + 1, mark.column + 1)) if mark is not None else "body"


def _problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    text = " ".join(p for p in (context, problem) if p) or str(exc)
    return f"not valid YAML: {text}"
