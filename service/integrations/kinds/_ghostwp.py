"""Small readers shared by the Ghost and WordPress kinds: the inbound block, constant-time
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


def check_secret_block(inbound: Mapping[str, Any]) -> dict[str, Any]:
    """An inbound block that is exactly {"secret": <non-empty string>}."""
    if not isinstance(inbound, Mapping):
        raise ValueError("inbound: expected an object with a secret")
    unknown = sorted(set(inbound) - {"secret"})
    if unknown:
        raise ValueError(f"inbound.{unknown[0]}: unknown field (only secret is read)")
    secret = inbound.get("secret")
    if not isinstance(secret, str) or not secret.strip():
        raise ValueError("inbound.secret: required, a non-empty string")
    return {"secret": secret}


def same(expected: str, given: str) -> bool:
    """Constant-time equality on the bytes (hmac.compare_digest refuses non-ASCII str, and
    a header may hold anything)."""
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def inbound_secret(inbound: Mapping[str, Any]) -> bytes:
    secret = inbound.get("secret")
    if not isinstance(secret, str) or not secret:
        # A stored integration always has one; a broken row must verify nothing.
        raise SignatureError("the integration has no inbound secret")
    return secret.encode()


def required_object(parent: Mapping[str, Any], key: str, path: str) -> dict[str, Any]:
    value = parent.get(key)
    if not isinstance(value, dict):
        raise PayloadError(path, f"{path} is missing or not an object")
    return value


def required_text(parent: Mapping[str, Any], key: str, path: str) -> str:
    value = parent.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise PayloadError(path, f"{path} is missing or empty")
    return value


def text_fields(source: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, str]:
    """Template variables from string fields that are present: variable -> body key. An
    absent field stays absent, so a template that needs it fails naming it."""
    out: dict[str, str] = {}
    for variable, key in names.items():
        value = source.get(key)
        if isinstance(value, str):
            out[variable] = value
    return out


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
