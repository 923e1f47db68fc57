"""Every request body passes here before anything parses it.

Darkroom's bodies are JSON, and what JSON can carry is more than Postgres and Python
can keep: a lone UTF-16 surrogate ("\\ud800") parses to a str that cannot be encoded,
NUL (\\u0000) cannot go into text or jsonb, NaN and Infinity are not JSON at all, and a
100,000-deep array makes a recursive parser give up with RecursionError. Refusing them
here, once, covers every field of every body (batches, provider callbacks, and any
endpoint added later) with a 422 that names the field, instead of a 500 from wherever
the value first hurts.

Every body is checked, whatever Content-Type it declares: a provider's callback is
parsed as JSON whatever its header says. Nesting is measured on the raw bytes, before
any parser recurses. A body is parsed here only when a scan of its bytes finds a value
that cannot be stored, to name the field; an ordinary body costs two regex passes.

The one exception is a path that takes a file (`raw_paths`: POST /v1/uploads): its body
is an image in a multipart form, not JSON, and its brackets would read as nesting. A path
that takes JSON or a file (`file_paths`: POST /v1/batches) is checked unless the body
declares a Content-Type that is not JSON: its file parser checks what it reads, and
reads it as it streams in rather than whole.
"""

from __future__ import annotations

import json
import re

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.kit.errors import ApiError, ErrorBody, ErrorDetail, error_json

MAX_DEPTH = 64
"""Far past any body Darkroom reads (metadata stops at 16), far short of the parser's limit."""

MAX_DETAILS = 100
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# A JSON string, escapes included; what is left outside strings is structure.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_PAIR = re.compile(rb"\[\]|\{\}")
# Scanned left to right, so an escaped backslash or a whole surrogate pair is consumed
# before its second half could be taken for an escape of its own.
_ESCAPES = re.compile(
    rb"\\\\"
    rb"|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
    rb"|(\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2}))"
)


class _NonFinite:
    """Stands for NaN or Infinity while parsing, so the walk can say where it was."""

    def __init__(self, name: str) -> None:
        self.name = name


class JsonBodyGuard:
    def __init__(
        self,
        app: ASGIApp,
        max_depth: int = MAX_DEPTH,
        raw_paths: frozenset[str] = frozenset(),
        file_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.max_depth = max_depth
        self.raw_paths = raw_paths
        self.file_paths = file_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in _BODY_METHODS
            or scope["path"] in self.raw_paths
            or (scope["path"] in self.file_paths and not _declares_json(scope))
        ):
            await self.app(scope, receive, send)
            return
        try:
            body = await _read_body(receive)
        except ApiError as exc:  # the size limit, raised by the receive it wraps
            body_error = ErrorBody(code=exc.code, message=exc.message, details=exc.details)
            await error_json(exc.status_code, body_error)(scope, receive, send)
            return
        if body is None:
            return  # the client went away
        refusal = self.refusal(body)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def refusal(self, body: bytes) -> Response | None:
        """The error response for a body that must not reach the app, or None."""
        if not body:
            return None
        outside_strings = _outside_strings(body)
        if nesting_depth(outside_strings, self.max_depth) > self.max_depth:
            detail = ErrorDetail(
                field="body", message=f"malformed JSON: nested deeper than {self.max_depth} levels"
            )
            return _error(422, "invalid_json", [detail])
        non_finite = b"NaN" in outside_strings or b"Infinity" in outside_strings
        if not non_finite and not _has_unstorable_escape(body):
            return None
        try:
            value = json.loads(body, parse_constant=_NonFinite)
        except ValueError:
            return None  # malformed: the app's own parser says where
        details = unstorable(value)
        return _error(422, "validation_error", details) if details else None


def _declares_json(scope: Scope) -> bool:
    """No Content-Type (parsed as JSON), or a JSON one."""
    declared: bytes | None = dict(scope["headers"]).get(b"content-type")
    if not declared:
        return True
    kind = declared.split(b";", 1)[0].strip().lower()
    return kind == b"application/json" or kind.endswith(b"+json")


def nesting_depth(structure: bytes, limit: int) -> int:
    """How deep a parser would recurse into `structure` (a body with its strings taken
    out), counted up to just past `limit`. Each pass takes out the innermost pairs at C
    speed. Brackets that never pair up (an unclosed body) count one level each: a parser
    descends into every opener before it finds the end missing."""
    brackets = structure.translate(None, _NOT_BRACKETS)
    depth = 0
    while brackets and depth <= limit:
        inner = _PAIR.sub(b"", brackets)
        if len(inner) == len(brackets):
            return depth + len(brackets)
        brackets, depth = inner, depth + 1
    return depth


def _outside_strings(body: bytes) -> bytes:
    if b"\\" not in body:  # no escaped quote: every quote opens or closes a string
        return b"".join(body.split(b'"')[::2])
    return _STRING.sub(b"", body)


def _has_unstorable_escape(body: bytes) -> bool:
    return b"\\u" in body and any(m.group(1) for m in _ESCAPES.finditer(body))


def unstorable(value: object) -> list[ErrorDetail]:
    """Every string, key and number in a parsed body that cannot be stored, by field."""
    details: list[ErrorDetail] = []
    stack: list[tuple[object, str]] = [(value, "")]
    while stack and len(details) < MAX_DETAILS:
        item, path = stack.pop()
        if isinstance(item, str):
            problem = _text_problem(item)
            if problem:
                details.append(ErrorDetail(field=path or "body", message=problem))
        elif isinstance(item, _NonFinite):
            details.append(
                ErrorDetail(
                    field=path or "body", message=f"must be a finite number, not {item.name}"
                )
            )
        elif isinstance(item, dict):
            children: list[tuple[object, str]] = []
            for key, child in item.items():
                problem = _text_problem(key)
                if problem:
                    details.append(
                        ErrorDetail(
                            field=path or "body", message=f"key {_printable(key)}: {problem}"
                        )
                    )
                segment = _segment(key)
                children.append((child, f"{path}.{segment}" if path else segment))
            stack.extend(reversed(children))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in reversed(list(enumerate(item))))
    return details


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "must not contain NUL (\\u0000): it cannot be stored"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = ord(text[exc.start])
        return f"contains a lone UTF-16 surrogate (\\u{bad:04x}): it is not a character"
    return None


def _printable(text: str) -> str:
    """A key quoted for a message; what cannot be sent back is written as an escape."""
    return json.dumps(text[:100])


def _segment(key: str) -> str:
    """A key as part of a field path, with what cannot be sent back written as escapes."""
    return json.dumps(key)[1:-1] if _text_problem(key) else key


def _error(status: int, code: str, details: list[ErrorDetail]) -> Response:
    first = details[0]
    message = f"{first.field}: {first.message}"
    if len(details) > 1:
        message += f" (and {len(details) - 1} more)"
    return error_json(status, ErrorBody(code=code, message=message, details=details))


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
