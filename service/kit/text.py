"""What a piece of text must be for Darkroom to keep it, said once for the server and
the OpenAPI document alike.

The body guard (kit.json_guard) refuses NUL and lone surrogates in every body; the
patterns here only tell clients and fuzzers so, and say when text counts as blank.
Each pattern is a character class of \\uXXXX escapes, which ECMA-262 (what JSON Schema
patterns are written in) and Python's re read the same way.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema
from typing_extensions import TypeAliasType

# Characters that show nothing: controls, whitespace (all that str.isspace() knows, and
# the no-break ones), and the zero-width and format marks that render as nothing (soft
# hyphen, joiners, direction marks, variation selectors, fillers, byte-order mark).
_INVISIBLE_RANGES = (
    "\\u0000-\\u0020",
    "\\u007f-\\u00a0",
    "\\u00ad",
    "\\u034f",
    "\\u061c",
    "\\u115f-\\u1160",
    "\\u1680",
    "\\u17b4-\\u17b5",
    "\\u180b-\\u180f",
    "\\u2000-\\u200f",
    "\\u2028-\\u202f",
    "\\u205f-\\u206f",
    "\\u3000",
    "\\u3164",
    "\\ufe00-\\ufe0f",
    "\\ufeff",
    "\\uffa0",
)
_VISIBLE_CHAR = "[^" + "".join(_INVISIBLE_RANGES) + "]"

NO_NUL_PATTERN = "^[^\\u0000]*$"
"""Postgres text and jsonb cannot hold U+0000."""

VISIBLE_PATTERN = "^[^\\u0000]*" + _VISIBLE_CHAR + "[^\\u0000]*$"
"""No NUL, and at least one character that shows: a prompt of spaces and zero-width
joiners is empty."""

_VISIBLE = re.compile(_VISIBLE_CHAR)


def is_blank(value: str) -> bool:
    return _VISIBLE.search(value) is None


def _not_blank(value: str) -> str:
    if is_blank(value):
        raise ValueError("must not be empty, or only whitespace and invisible characters")
    return value


Text = Annotated[str, Field(json_schema_extra={"pattern": NO_NUL_PATTERN})]
"""Any text Darkroom stores. The pattern is for the schema; the guard enforces it."""

VisibleText = Annotated[
    str, AfterValidator(_not_blank), Field(json_schema_extra={"pattern": VISIBLE_PATTERN})
]
"""Text that must say something (a prompt, an Idempotency-Key)."""


class _NamesAreText:
    """Pydantic writes a dict with constrained keys as patternProperties, which lets any
    other key through; propertyNames says what the server holds to: every key is Text."""

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        (pattern, values), *_ = schema.pop("patternProperties").items()
        return {**schema, "propertyNames": {"pattern": pattern}, "additionalProperties": values}


JsonValue = TypeAliasType(
    "JsonValue",
    "Text | int | float | bool | list[JsonValue] | JsonObject | None",
)
"""Any JSON that jsonb can store, stated for the schema: its text has no NUL."""

JsonObject = TypeAliasType("JsonObject", Annotated[dict[Text, JsonValue], _NamesAreText()])
