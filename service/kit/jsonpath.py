"""A small JSONPath subset, for configuration that says where a value sits in a JSON
document (a provider's response: `$.data.image_url`, `$.output[0]`).

Only what such configuration needs: the root `$`, child keys (`.key` or `['key']`,
`["key"]`) and list indexes (`[0]`, `[-1]`). No wildcards, slices, filters or recursive
descent: a path names exactly one place, so reading it cannot be ambiguous. Paths are
parsed once (when the configuration is loaded) and every error names the path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Step = str | int

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_INDEX = re.compile(r"\[\s*(-?\d+)\s*\]")
_QUOTED = re.compile(r"""\[\s*(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")\s*\]""")
_ESCAPE = re.compile(r"\\(.)")
_MAX_LENGTH = 512


class JsonPathError(ValueError):
    """A path that does not parse; the message names it and where it went wrong."""


class JsonPathNotFound(LookupError):
    """A path that names nothing in the document; the message names the path and the
    step where it stopped."""


@dataclass(frozen=True)
class JsonPath:
    source: str
    steps: tuple[Step, ...]

    def find(self, document: Any) -> Any:
        """The value at this path; JsonPathNotFound when the document has none."""
        value = document
        for position, step in enumerate(self.steps):
            value = _step(value, step, self, position)
        return value

    def get(self, document: Any, default: Any = None) -> Any:
        try:
            return self.find(document)
        except JsonPathNotFound:
            return default

    def __str__(self) -> str:
        return self.source


def _step(value: Any, step: Step, path: JsonPath, position: int) -> Any:
    if isinstance(step, int):
        if isinstance(value, Sequence) and not isinstance(value, str | bytes):
            if -len(value) <= step < len(value):
                return value[step]
            raise JsonPathNotFound(
                f"{path}: index {step} is out of range (a list of {len(value)}) at "
                f"{_prefix(path, position)}"
            )
        raise JsonPathNotFound(
            f"{path}: expected a list at {_prefix(path, position)}, got {_kind(value)}"
        )
    if isinstance(value, Mapping):
        if step in value:
            return value[step]
        raise JsonPathNotFound(f"{path}: no key {step!r} at {_prefix(path, position)}")
    raise JsonPathNotFound(
        f"{path}: expected an object at {_prefix(path, position)}, got {_kind(value)}"
    )


def _prefix(path: JsonPath, position: int) -> str:
    return format_steps(path.steps[:position])


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, Sequence):
        return "a list"
    return type(value).__name__


def format_steps(steps: Sequence[Step]) -> str:
    """`$` followed by the steps, in the plainest notation that reads back the same."""
    parts = ["$"]
    for step in steps:
        if isinstance(step, int):
            parts.append(f"[{step}]")
        elif _NAME.fullmatch(step):
            parts.append(f".{step}")
        else:
            escaped = step.replace("\\", "\\\\").replace("'", "\\'")
            parts.append(f"['{escaped}']")
    return "".join(parts)


def parse(source: str) -> JsonPath:
    """Parse a path such as `$.data.images[0]['url']`; JsonPathError names the problem."""
    if not isinstance(source, str):
        raise JsonPathError(f"a JSONPath is a string, got {type(source).__name__}")
    if len(source) > _MAX_LENGTH:
        raise JsonPathError(f"{source[:40]}...: longer than {_MAX_LENGTH} characters")
    text = source.strip()
    if not text.startswith("$"):
        raise JsonPathError(f"{source!r}: a JSONPath starts with '$'")
    steps: list[Step] = []
    position = 1
    while position < len(text):
        step, position = _next_step(source, text, position)
        steps.append(step)
    return JsonPath(source, tuple(steps))


def _next_step(source: str, text: str, position: int) -> tuple[Step, int]:
    char = text[position]
    if char == ".":
        if text.startswith("..", position):
            raise JsonPathError(f"{source!r}: recursive descent '..' is not supported")
        match = _NAME.match(text, position + 1)
        if match is None:
            raise JsonPathError(
                f"{source!r}: expected a key name after '.' at character {position + 1} "
                "(use ['...'] for other keys; wildcards are not supported)"
            )
        return match.group(0), match.end()
    if char == "[":
        index = _INDEX.match(text, position)
        if index is not None:
            return int(index.group(1)), index.end()
        quoted = _QUOTED.match(text, position)
        if quoted is not None:
            raw = quoted.group(1) if quoted.group(1) is not None else quoted.group(2)
            return _ESCAPE.sub(r"\1", raw), quoted.end()
        raise JsonPathError(
            f"{source!r}: expected [<index>] or ['<key>'] at character {position + 1} "
            "(wildcards, slices and filters are not supported)"
        )
    raise JsonPathError(
        f"{source!r}: unexpected {char!r} at character {position + 1}; expected '.' or '['"
    )
