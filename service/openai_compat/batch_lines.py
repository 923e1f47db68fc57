"""An OpenAI Batch API input file, read into Darkroom jobs.

Every line is checked before anything is created: one bad line is a 400 naming it (and
the field), and nothing exists afterwards. Each line's `body` is mapped exactly as an
`images/generations` body is (params.py); a line asking for n images makes n jobs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from service.batches.schemas import MAX_JOBS
from service.config import Settings
from service.kit.json_guard import unstorable
from service.openai_compat.errors import OpenAIError, from_validation
from service.openai_compat.params import ImageParams, job_fields
from service.providers.registry import ProviderRegistry

ENDPOINTS = frozenset({"/v1/images/generations"})
MAX_CUSTOM_ID = 512


@dataclass
class ReadLines:
    # [custom_id, job count] per line, in order.
    lines: list[list[Any]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    # The input line number (1-based) of each job.
    line_of_job: list[int] = field(default_factory=list)


def line_error(number: int, message: str, param: str | None = None) -> OpenAIError:
    where = f"line {number}" + (f", {param}" if param else "")
    return OpenAIError(
        400,
        f"{where}: {message}",
        param="input_file_id",
        code="invalid_batch_line",
        extra={"line": number, "field": param},
    )


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _line_object(number: int, raw: bytes) -> dict[str, Any]:
    """The line's object, refused like the body guard refuses a body: what Postgres and
    Python cannot keep (NUL, lone surrogates, NaN) is named, never stored."""
    try:
        obj = json.loads(raw, parse_constant=_not_json)
    except (ValueError, RecursionError) as exc:
        raise line_error(number, f"not valid JSON ({str(exc)[:200]})") from None
    if not isinstance(obj, dict):
        raise line_error(number, "expected a JSON object")
    problems = unstorable(obj)
    if problems:
        raise line_error(number, problems[0].message, problems[0].field)
    return obj


def _line_params(number: int, obj: dict[str, Any], endpoint: str) -> tuple[str, ImageParams]:
    unknown = set(obj) - {"custom_id", "method", "url", "body"}
    if unknown:
        raise line_error(number, "unrecognized field", sorted(unknown)[0])
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID:
        raise line_error(number, f"a string of 1 to {MAX_CUSTOM_ID} characters", "custom_id")
    if obj.get("method") != "POST":
        raise line_error(number, 'must be "POST"', "method")
    if obj.get("url") != endpoint:
        raise line_error(number, f"must be the batch's endpoint {endpoint!r}", "url")
    body = obj.get("body")
    if not isinstance(body, dict):
        raise line_error(number, "expected a JSON object", "body")
    try:
        params = ImageParams.model_validate(body)
    except ValidationError as exc:
        error = from_validation(exc.errors())
        raise line_error(number, error.message, f"body.{error.param}") from None
    return custom_id, params


def read_lines(
    data: bytes, endpoint: str, registry: ProviderRegistry, settings: Settings
) -> ReadLines:
    """The file's jobs; OpenAIError naming the first bad line."""
    out = ReadLines()
    seen: set[str] = set()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        obj = _line_object(number, raw)
        custom_id, params = _line_params(number, obj, endpoint)
        if custom_id in seen:
            raise line_error(number, f"duplicate custom_id {custom_id[:100]!r}", "custom_id")
        seen.add(custom_id)
        try:
            _, jobs = job_fields(params, registry, settings)
        except OpenAIError as exc:
            raise line_error(number, exc.message, f"body.{exc.param}") from None
        out.lines.append([custom_id, len(jobs)])
        out.jobs.extend(jobs)
        out.line_of_job.extend([number] * len(jobs))
        if len(out.jobs) > MAX_JOBS:
            raise line_error(number, f"a batch makes at most {MAX_JOBS} images")
    if not out.lines:
        raise OpenAIError(
            400, "the input file has no requests", param="input_file_id", code="empty_file"
        )
    return out
