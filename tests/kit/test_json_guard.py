"""The body guard's scans of raw bytes agree with what a parser would make of them."""

from __future__ import annotations

import json

import pytest

from service.kit.json_guard import MAX_DEPTH, JsonBodyGuard

ESCAPES: dict[str, tuple[bytes, str | None]] = {
    "a lone high surrogate": (rb'{"a": "x\ud800y"}', "a"),
    "a lone low surrogate": (rb'{"a": "\udfff"}', "a"),
    "upper-case hex": (rb'{"a": "\uD800"}', "a"),
    "a pair": (rb'{"a": "\ud83d\ude00"}', None),
    "a pair, then a lone low one": (rb'{"a": "\ud83d\ude00\udc00"}', "a"),
    "a reversed pair": (rb'{"a": ["\udc00\ud800"]}', "a[0]"),
    "NUL": (rb'{"a": {"b": "\u0000"}}', "a.b"),
    "NUL as a key": (rb'{"\u0000": 1}', "body"),
    "an escaped backslash before u0000": (rb'{"a": "\\u0000"}', None),
    "an escaped backslash before ud800": (rb'{"a": "\\ud800"}', None),
    "an escaped backslash, then a real escape": (rb'{"a": "\\\ud800"}', "a"),
    "an accent": (rb'{"a": "caf\u00e9"}', None),
    "a quote, then a surrogate": (rb'{"a": "\"\ud800"}', "a"),
    "NaN": (b'{"a": NaN}', "a"),
    "-Infinity": (b'{"a": [-Infinity]}', "a[0]"),
    "NaN in a string": (b'{"a": "NaN and Infinity"}', None),
}


@pytest.mark.parametrize(("raw", "field"), ESCAPES.values(), ids=ESCAPES.keys())
def test_unstorable_values_are_found_as_a_parser_reads_them(raw: bytes, field: str | None) -> None:
    response = JsonBodyGuard(app=None).refusal(raw)  # type: ignore[arg-type]
    if field is None:
        assert response is None
        assert json.loads(raw)  # and it parses: the guard let through what is sound
        return
    assert response is not None
    assert response.status_code == 422
    assert json.loads(response.body)["error"]["details"][0]["field"] == field


def nested(depth: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    return opener * depth + closer * depth


NESTING = {
    "at the limit": (nested(MAX_DEPTH), False),
    "one past": (nested(MAX_DEPTH + 1), True),
    "objects one past": (b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1), True),
    "brackets inside strings": (b'{"a": "' + b"[" * 10_000 + b'"}', False),
    "brackets inside escaped strings": (b'{"a": "\\"' + b"[" * 10_000 + b'"}', False),
    "unclosed, past the limit": (b"[" * (MAX_DEPTH + 1), True),
    "unclosed, shallow": (b'{"jobs": [{"prompt": "x"}', False),
    "mixed, deep": (b'[{"a":' * 40 + b"1" + b"}]" * 40, True),
}


@pytest.mark.parametrize(("raw", "refused"), NESTING.values(), ids=NESTING.keys())
def test_nesting_is_measured_outside_strings(raw: bytes, refused: bool) -> None:
    response = JsonBodyGuard(app=None).refusal(raw)  # type: ignore[arg-type]
    assert (response is not None) == refused
    if response is not None:
        error = json.loads(response.body)["error"]
        assert (error["code"], error["details"][0]["field"]) == ("invalid_json", "body")
