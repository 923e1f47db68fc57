"""Typed template values (render_value) and the names a template reads (variables_used):
what configuration that builds a JSON body relies on."""

from __future__ import annotations

from typing import Any

import pytest

from service.kit.templating import TemplateError, render_value, single_expression, variables_used

VARIABLES: dict[str, Any] = {"width": 1024, "ratio": 1.5, "on": True, "none": None, "tags": ["a"]}


@pytest.mark.parametrize(
    ("source", "expression"),
    [
        ("{{ width }}", " width "),
        ("{{-width-}}", "width"),
        ("{{ width | string }}", " width | string "),
        ("{{ a }}{{ b }}", None),
        (" {{ width }}", None),
        ("{{ width }}\n", None),
        ("{% if x %}{{ width }}{% endif %}", None),
        ("{{ '}}' }}", " '}}' "),
        ("plain", None),
    ],
)
def test_single_expression(source: str, expression: str | None) -> None:
    assert single_expression(source) == expression


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ width }}", 1024),
        ("{{ ratio }}", 1.5),
        ("{{ on }}", True),
        ("{{ none }}", None),
        ("{{ tags }}", ["a"]),
        ("{{ width | string }}", "1024"),
        ("{{ on | string | lower }}", "true"),
        ("{{ width * 2 }}", 2048),
        ("{{ width }} x", "1024 x"),
        ("{{ none }}!", "None!"),
    ],
)
def test_render_value_keeps_the_type_of_a_single_placeholder(source: str, expected: Any) -> None:
    value = render_value(source, VARIABLES)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ missing }}", "'missing' is undefined"),
        ("{{ width.__class__.__mro__ }}", "unsafe"),
        ("{{ width ** 1000 }}", "exponent 1000 is larger than 64"),
        ("{{ 'ab' * 60000 }}", "would make more than"),
        ("{{ width", "TemplateSyntaxError"),
    ],
)
def test_render_value_fails_as_a_template_error(source: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        render_value(source, VARIABLES)


def test_a_single_placeholder_is_bounded_in_size() -> None:
    with pytest.raises(TemplateError, match="longer than 10 characters"):
        render_value("{{ 'x' * 11 }}", {}, max_chars=10)


def test_variables_used_lists_what_a_template_reads() -> None:
    source = (
        "{{ prompt }} {% for t in tags %}{{ t }}{% endfor %} {{ options.steps }} {{ range(2) }}"
    )
    assert variables_used(source) == {"prompt", "tags", "options"}
    with pytest.raises(TemplateError):
        variables_used("{% if %}")
