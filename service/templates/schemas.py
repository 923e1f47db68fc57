"""Bodies of /v1/templates, and the template a batch gives or names."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from service.kit.templating import TemplateError, check_syntax
from service.kit.text import Text, VisibleText

# A template's text is no longer than the prompt it renders may be (batches' MAX_PROMPT):
# a longer one could only render a prompt that is refused.
MAX_TEMPLATE = 4_000
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
# name, or name@version: what a batch writes to use a stored template.
REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}(@[1-9][0-9]{0,8})?$"


def _parses(source: str | None) -> str | None:
    """A template that does not parse is refused where it is given (saved, or sent with a
    batch), with the line Jinja2 found the problem on, not when the first row renders."""
    if source is not None:
        try:
            check_syntax(source)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None
    return source


PromptTemplateText = Annotated[
    VisibleText, Field(min_length=1, max_length=MAX_TEMPLATE), AfterValidator(_parses)
]
OptionalTemplateText = Annotated[Text, Field(max_length=MAX_TEMPLATE), AfterValidator(_parses)]
TemplateName = Annotated[str, Field(pattern=NAME_PATTERN, max_length=100)]
TemplateRef = Annotated[
    str,
    Field(
        pattern=REF_PATTERN,
        max_length=110,
        description="A stored template: `name` (its latest version) or `name@version`",
    ),
]


class TemplateBody(BaseModel):
    """Sandboxed Jinja2 templates over a row's variables, e.g. prompt
    `"E-commerce photo: {{ name }}, {{ color }}, studio lighting"`, output_name `"{{ sku }}"`."""

    model_config = ConfigDict(extra="forbid")

    prompt: PromptTemplateText
    negative_prompt: OptionalTemplateText | None = None
    output_name: OptionalTemplateText | None = Field(
        default=None, description="A template for the output's file name, e.g. '{{ sku }}'"
    )


class TemplateCreate(TemplateBody):
    name: TemplateName = Field(
        description="Letters, digits, '_', '.', '-'; posting a name again makes its next version"
    )


class TemplateOut(BaseModel):
    id: uuid.UUID
    name: str
    version: int
    ref: str = Field(description="`name@version`: what a batch's `template` may name")
    prompt: str
    negative_prompt: str | None
    output_name: str | None
    created_at: datetime


class TemplatePage(BaseModel):
    items: list[TemplateOut]
    next_cursor: str | None
