"""Small readers shared by the kinds: the inbound block and its secret, constant-time
comparison of header values, and tolerant extraction from a parsed body."""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from typing import Any

from service.integrations.kinds.base import PayloadError, SignatureError

_TAGS = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
EXCERPT_CHARS = 500


def only_fields(inbound: Mapping[str, Any], kind: str, *allowed: str) -> None:
    """Refuse an inbound block that is not an object, or that holds a field the kind does
    not read (a typo would otherwise be stored and silently ignored)."""
    takes = ", ".join(allowed)
    if not isinstance(inbound, Mapping):
        raise ValueError(f"inbound: expected an object ({kind} takes {takes})")
    unknown = sorted(set(inbound) - set(allowed))
    if unknown:
        raise ValueError(f"inbound.{unknown[0]}: unknown field ({kind} takes {takes})")


def secret_block(
    inbound: Mapping[str, Any],
    kind: str,
    what: str = "a non-empty string",
    max_chars: int | None = None,
) -> dict[str, Any]:
    """An inbound block that is exactly {"secret": <non-empty string>}; `what` says which
    secret, in the kind's own words."""
    only_fields(inbound, kind, "secret")
    secret = inbound.get("secret")
    if not isinstance(secret, str) or not secret.strip():
        raise ValueError(f"inbound.secret: required, {what}")
    if max_chars is not None and len(secret) > max_chars:
        raise ValueError(f"inbound.secret: longer than {max_chars} characters")
    return {"secret": secret}


def same(expected: str, given: str) -> bool:
    """Constant-time equality on the bytes (hmac.compare_digest refuses non-ASCII str, and
    a header may hold anything)."""
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def inbound_secret(inbound: Mapping[str, Any]) -> str:
    secret = inbound.get("secret")
    if not isinstance(secret, str) or not secret:
        # A stored integration always has one; a broken row must verify nothing.
        raise SignatureError("the integration has no inbound secret")
    return secret


def required_object(
    parent: Mapping[str, Any], key: str, path: str, why: str | None = None
) -> dict[str, Any]:
    """The object at `key`; else a PayloadError at `path` saying `why` (by default, that it
    is missing): the body's own field names tell the sender what to fix."""
    value = parent.get(key)
    if not isinstance(value, dict):
        raise PayloadError(path, why or f"{path} is missing or not an object")
    return value


def required_str(parent: Mapping[str, Any], key: str, path: str, why: str | None = None) -> str:
    """The non-empty string at `key`; else a PayloadError at `path` saying `why`."""
    value = parent.get(key)
    if not isinstance(value, str) or not value:
        raise PayloadError(path, why or f"{path} is missing or empty")
    return value


def required_text(parent: Mapping[str, Any], key: str, path: str) -> str:
    """As required_str, but a number is read as its decimal text (WordPress sends ids as
    numbers or strings, by version)."""
    value = parent.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return required_str(parent, key, path)


def text_fields(source: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, str]:
    """Template variables from string fields that are present: variable -> body key. An
    absent field stays absent, so a template that needs it fails naming it."""
    out: dict[str, str] = {}
    for variable, key in names.items():
        value = source.get(key)
        if isinstance(value, str):
            out[variable] = value
    return out


def first_text(source: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    """The first of `keys` that holds a non-blank string, stripped."""
    for key in keys:
        value = source.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def first_texts(source: Mapping[str, Any], keys: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    """Template variables from `first_text` of each variable's keys: a variable none of
    them holds stays absent, so a template that needs it fails naming it."""
    found = {variable: first_text(source, names) for variable, names in keys.items()}
    return {variable: value for variable, value in found.items() if value is not None}


def names_in(value: Any, keys: tuple[str, ...]) -> list[str]:
    """Names from a relation as a body shows it: a list (or one) of strings, or of objects
    whose first string among `keys` is the name; a bare reference has none."""
    items = value if isinstance(value, list) else [value] if value else []
    names: list[str] = []
    for item in items:
        if isinstance(item, str) and item.strip():
            names.append(item.strip())
        elif isinstance(item, Mapping):
            found = first_text(item, keys)
            if found is not None:
                names.append(found)
    return names


def names_of(items: Any) -> list[str]:
    """`name` of each object in a list, or in the values of an object (PHP encodes an
    associative array as an object and an empty one as a list)."""
    values = list(items.values()) if isinstance(items, dict) else items
    if not isinstance(values, list):
        return []
    return [
        item["name"]
        for item in values
        if isinstance(item, dict) and isinstance(item.get("name"), str)
    ]


def plain_head(text: Any, limit: int = EXCERPT_CHARS) -> str:
    """The start of a text with tags and runs of space removed: an excerpt of last resort."""
    if not isinstance(text, str):
        return ""
    flat = _SPACE.sub(" ", _TAGS.sub(" ", text)).strip()
    if len(flat) <= limit:
        return flat
    cut = flat[:limit].rsplit(" ", 1)[0]
    return cut + "…"
