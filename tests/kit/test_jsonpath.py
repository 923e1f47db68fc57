"""The JSONPath subset: what parses, what it finds, and errors that name the path."""

from __future__ import annotations

from typing import Any

import pytest

from service.kit.jsonpath import JsonPathError, JsonPathNotFound, format_steps, parse

DOCUMENT: dict[str, Any] = {
    "code": 200,
    "data": {"image_url": "https://cdn/x.png", "images": [{"url": "a"}, {"url": "b"}]},
    "odd key": {"it's": 1},
    "list": [[1, 2], [3]],
    "null": None,
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("$", DOCUMENT),
        ("$.code", 200),
        ("$.data.image_url", "https://cdn/x.png"),
        ("$['data']['image_url']", "https://cdn/x.png"),
        ('$["data"].images[1].url', "b"),
        ("$.data.images[-1].url", "b"),
        ("$.list[0][1]", 2),
        ("$['odd key']['it\\'s']", 1),
        ("$.null", None),
        (" $.code ", 200),
        ("$[ 'code' ]", 200),
    ],
)
def test_finds_the_value_at_a_path(source: str, expected: Any) -> None:
    assert parse(source).find(DOCUMENT) == expected


def test_steps_are_keys_and_indexes() -> None:
    assert parse("$.data.images[0]['url']").steps == ("data", "images", 0, "url")
    assert parse("$.a-b._c").steps == ("a-b", "_c")


@pytest.mark.parametrize(
    ("source", "names"),
    [
        ("data.x", "starts with '$'"),
        ("", "starts with '$'"),
        ("$.", "expected a key name"),
        ("$.*", "wildcards are not supported"),
        ("$..url", "recursive descent"),
        ("$.data[", "expected [<index>]"),
        ("$.data[*]", "wildcards, slices and filters"),
        ("$.data[0:2]", "wildcards, slices and filters"),
        ("$.data[?(@.x)]", "wildcards, slices and filters"),
        ("$['unterminated]", "expected [<index>]"),
        ("$data", "unexpected 'd'"),
        ("$.a b", "unexpected ' '"),
    ],
)
def test_a_bad_path_is_refused_naming_it(source: str, names: str) -> None:
    with pytest.raises(JsonPathError) as caught:
        parse(source)
    assert names in str(caught.value)
    if source:
        assert repr(source) in str(caught.value)


def test_a_path_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(JsonPathError, match="is a string"):
        parse(3)  # type: ignore[arg-type]


def test_a_very_long_path_is_refused() -> None:
    with pytest.raises(JsonPathError, match="longer than"):
        parse("$" + ".a" * 400)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("$.data.missing", "$.data.missing: no key 'missing' at $.data"),
        ("$.data.images[5]", "index 5 is out of range (a list of 2) at $.data.images"),
        ("$.code.x", "expected an object at $.code, got a number"),
        ("$.data[0]", "expected a list at $.data, got an object"),
        ("$.data.image_url[0]", "expected a list at $.data.image_url, got a string"),
        ("$.null.x", "expected an object at $.null, got null"),
        ("$['odd key'].x", "no key 'x' at $['odd key']"),
    ],
)
def test_not_found_names_the_path_and_where_it_stopped(source: str, message: str) -> None:
    with pytest.raises(JsonPathNotFound) as caught:
        parse(source).find(DOCUMENT)
    assert message in str(caught.value)


def test_get_gives_the_default_when_nothing_is_there() -> None:
    assert parse("$.data.missing").get(DOCUMENT) is None
    assert parse("$.data.missing").get(DOCUMENT, "x") == "x"
    assert parse("$.code").get(DOCUMENT, "x") == 200


def test_format_reads_back_the_same_steps() -> None:
    steps = ("data", "odd key", 3, "it's", "a-b")
    text = format_steps(steps)
    assert text == "$.data['odd key'][3]['it\\'s'].a-b"
    assert parse(text).steps == steps
