"""Request and response bodies of /v1/integrations and /v1/hooks.

The create body is a contract (issue 8): its keys stay as written. `locale` is an
addition, for Contentful's field locale.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic.config import JsonDict

from service.batches.schemas import CallbackUrl, Dimension, ImageFormatName
from service.integrations.kinds import KINDS
from service.kit.templating import TemplateError, check_syntax
from service.kit.text import JsonObject, JsonValue, Text, VisibleText

MAX_TEMPLATE = 8_000
MAX_EVENTS = 50


def _parses(source: str | None) -> str | None:
    """A template that does not parse is refused when it is saved, not when the first
    article arrives."""
    if source is not None:
        try:
            check_syntax(source)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None
    return source


def _known_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; known: {sorted(KINDS)}")
    return kind


TemplateSource = Annotated[
    VisibleText, Field(min_length=1, max_length=MAX_TEMPLATE), AfterValidator(_parses)
]
OptionalTemplate = Annotated[Text, Field(max_length=MAX_TEMPLATE), AfterValidator(_parses)]
KindName = Annotated[
    Text,
    Field(
        max_length=40,
        description="How the CMS signs and shapes its webhooks",
        json_schema_extra={"enum": sorted(KINDS)},
    ),
    AfterValidator(_known_kind),
]
EventName = Annotated[VisibleText, Field(min_length=1, max_length=200)]
Events = Annotated[list[EventName], Field(max_length=MAX_EVENTS)]
Locale = Annotated[VisibleText, Field(min_length=1, max_length=35)]
Name = Annotated[VisibleText, Field(min_length=1, max_length=200)]


class TemplateIn(BaseModel):
    """Jinja2 templates (sandboxed) over the article's variables: title, excerpt, slug,
    url, tags, authors, id, language, status, raw."""

    model_config = ConfigDict(extra="forbid")

    prompt: TemplateSource
    negative_prompt: OptionalTemplate | None = None
    model: Annotated[Text, Field(min_length=1, max_length=200)] | None = Field(
        default=None, description="A model this server runs; the server's default if left out"
    )
    width: Dimension | None = None
    height: Dimension | None = None
    format: ImageFormatName | None = None
    output_name: OptionalTemplate | None = Field(
        default=None, description="A template for the file name, e.g. '{{ slug }}-cover'"
    )


class IntegrationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    kind: KindName
    events: Events | None = Field(
        default=None, description="Event types that make a job; the kind's publish events if null"
    )
    inbound: JsonObject = Field(
        default_factory=dict,
        description="How the CMS authenticates: {'secret': ...}, strapi {'header', 'value'}, "
        "generic {} (a whsec_ secret is made and returned once). Write-only.",
    )
    template: TemplateIn
    writeback: JsonObject | None = None
    callback_url: CallbackUrl | None = None
    locale: Locale | None = Field(default=None, description="Contentful: the locale to read")


def _not_nullable(schema: JsonDict) -> None:
    """The schema of an optional field that may be left out but not sent as null."""
    branches = schema.pop("anyOf", None)
    if isinstance(branches, list):
        kept = [b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")]
        if len(kept) == 1 and isinstance(kept[0], dict):
            schema.update(kept[0])
        else:
            schema["anyOf"] = kept


class IntegrationUpdate(BaseModel):
    """Every field may change; a field left out stays. A new `kind` needs a new `inbound`."""

    model_config = ConfigDict(extra="forbid")

    # Left out, these stay; they cannot be null, and the schema says so.
    name: Name | None = Field(default=None, json_schema_extra=_not_nullable)
    kind: KindName | None = Field(default=None, json_schema_extra=_not_nullable)
    events: Events | None = None
    inbound: JsonObject | None = Field(default=None, json_schema_extra=_not_nullable)
    template: TemplateIn | None = Field(default=None, json_schema_extra=_not_nullable)
    writeback: JsonObject | None = None
    callback_url: CallbackUrl | None = None
    locale: Locale | None = None

    @field_validator("name", "kind", "inbound", "template")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:  # only a value sent is validated: a null, not a left-out field
            raise ValueError("cannot be null; leave it out to keep it")
        return value


class IntegrationOut(BaseModel):
    id: uuid.UUID
    name: str
    kind: str
    events: list[str] | None
    default_events: list[str]
    inbound: dict[str, Any] = Field(description="The inbound settings without their secrets")
    template: dict[str, Any]
    writeback: dict[str, Any] | None
    callback_url: str | None
    locale: str | None
    inbound_url: str = Field(description="Paste this into the CMS's webhook settings")
    rejected_count: int = Field(description="Deliveries refused for a bad or stale signature")
    created_at: datetime
    updated_at: datetime
    secret: str | None = Field(
        default=None, description="generic: the whsec_ signing secret, shown once"
    )


class IntegrationPage(BaseModel):
    items: list[IntegrationOut]
    next_cursor: str | None


VerdictName = Literal["accepted", "ignored", "failed"]


class InboundEventOut(BaseModel):
    id: str
    event_type: str
    verdict: VerdictName
    reason: str | None
    dedupe_key: str
    batch_id: uuid.UUID | None
    job_id: uuid.UUID | None
    received_at: datetime
    headers: dict[str, Any]
    body: Any
    writeback_status: str | None
    writeback_error: str | None
    writeback_result: dict[str, Any] | None


class InboundEventPage(BaseModel):
    items: list[InboundEventOut]
    next_cursor: str | None


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    body: JsonValue = Field(description="A sample webhook body, as the CMS would send it")
    headers: JsonObject | None = Field(
        default=None,
        description="Headers the kind reads (e.g. Contentful's X-Contentful-Topic); a value "
        "that is not a string is sent as its JSON",
    )


class PreviewOut(BaseModel):
    event_type: str
    would_create_job: bool = Field(description="The event is one the integration acts on")
    dedupe_key: str
    variables: dict[str, Any] = Field(description="What the template sees, except `raw`")
    prompt: str
    negative_prompt: str | None
    output_name: str | None
    model: str
    width: int
    height: int
    format: str


HookStatus = Literal["accepted", "duplicate", "ignored"]


class HookAnswer(BaseModel):
    event_id: str
    job_id: uuid.UUID | None
    status: HookStatus
