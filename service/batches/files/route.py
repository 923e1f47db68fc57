"""POST /v1/batches with a file: a route that matches only the file content types, put
before the JSON route of the same path and method. The JSON route documents both (its
OpenAPI requestBody lists every content type); this one stays out of the document."""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import Scope

from service.batches.files.read import CONTENT_TYPES, FORM, takes
from service.batches.schemas import MAX_FILE_ROWS

_FILE_DESCRIPTION = (
    f"A batch file of up to {MAX_FILE_ROWS:,} rows: CSV (a header row, one job per row; "
    "columns named like job fields set them, the others are template variables), JSONL "
    "(one job object per line) or YAML (the pipeline shape: defaults, template or "
    "templates, jobs, and batch-level keys)"
)


class FileRoute(APIRoute):
    """Matches its path and method only when the body is a batch file."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        headers = dict(scope.get("headers") or [])
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        if not takes(content_type):
            return Match.NONE, {}
        return super().matches(scope)


def openapi_request_body() -> dict[str, Any]:
    """What the JSON route adds to its requestBody: the file content types."""
    raw = {"schema": {"type": "string", "description": _FILE_DESCRIPTION}}
    content: dict[str, Any] = {
        kind: raw for kind in ("text/csv", "application/x-ndjson", "application/yaml")
    }
    content[FORM] = {
        "schema": {
            "type": "object",
            "required": ["file"],
            "properties": {
                "file": {
                    "type": "string",
                    "format": "binary",
                    "description": _FILE_DESCRIPTION + "; the format from the part's "
                    "Content-Type or the file name's extension (.csv, .jsonl, .ndjson, .yaml, "
                    ".yml)",
                },
                "batch": {
                    "type": "string",
                    "description": "Batch-level settings as a JSON object (the JSON body's keys "
                    "but jobs), over the file's own",
                },
                "format": {
                    "type": "string",
                    "enum": ["csv", "jsonl", "yaml"],
                    "description": "The file's format, when neither its part's Content-Type "
                    "nor its name's extension says",
                },
                "name": {"type": "string", "maxLength": 200},
                "priority": {"type": "string", "enum": ["realtime", "bulk"]},
                "budget_usd": {"type": "string"},
                "callback_url": {"type": "string"},
                "template": {
                    "type": "string",
                    "description": "A stored template (`name` or `name@version`) or a JSON "
                    "object {prompt, negative_prompt, output_name}",
                },
            },
        }
    }
    return {"requestBody": {"content": content}}


__all__ = ["CONTENT_TYPES", "FileRoute", "openapi_request_body"]
