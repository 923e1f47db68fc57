"""Creating, changing and presenting integrations, and previewing their templates.
Never commits: the caller's scope does.

Secrets in `inbound` are write-only: stored because every delivery is verified with
them, and returned once only when Darkroom made them (generic's whsec_ secret).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from service.batches.routing import name_problem  # the check batches make, shared
from service.config import Settings
from service.integrations.ingest import acted_on, read_article
from service.integrations.kinds import KINDS
from service.integrations.kinds.base import CmsKind, InboundRequest
from service.integrations.render import RenderFailed, render_job
from service.integrations.schemas import (
    IntegrationCreate,
    IntegrationOut,
    IntegrationUpdate,
    PreviewIn,
    PreviewOut,
    TemplateIn,
)
from service.integrations.writeback import WRITEBACKS
from service.kit.base import utcnow
from service.kit.errors import ErrorDetail, InvalidInput, field_path
from service.models import ApiKey, Integration
from service.providers.registry import ProviderRegistry

# Inbound settings that are not secret, and so may be shown (Strapi's header name).
PUBLIC_INBOUND_KEYS = frozenset({"header"})
_FIELD_PREFIX = re.compile(r"^([A-Za-z_][\w.\[\]-]*): (.+)$", re.DOTALL)


@dataclass(frozen=True)
class Saved:
    integration: Integration
    secret: str | None  # made by Darkroom in this request: shown once


def _invalid(field: str, message: str, code: str = "validation_error") -> InvalidInput:
    detail = ErrorDetail(field=field, message=message)
    return InvalidInput(f"{field}: {message}", details=[detail], code=code)


def check_inbound(kind: CmsKind, inbound: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The kind's own check. Its ValueError names the field as "<field>: why"."""
    try:
        stored = kind.check_inbound(inbound)
    except (ValueError, TypeError) as exc:
        match = _FIELD_PREFIX.match(str(exc))
        if match:
            field = match[1].removeprefix("inbound.")  # some kinds name it in full
            raise _invalid(f"inbound.{field}", match[2]) from None
        raise _invalid("inbound", str(exc) or "not valid for this kind") from None
    made = stored.get("secret") if "secret" not in inbound else None
    return stored, made if isinstance(made, str) else None


def check_template(template: TemplateIn, registry: ProviderRegistry) -> dict[str, Any]:
    if template.model is not None:
        problem = name_problem(template.model, registry)
        if problem is not None:
            raise _invalid("template.model", problem)
    return template.model_dump(mode="json")


def check_writeback(
    kind: str, writeback: Mapping[str, Any] | None, settings: Settings
) -> dict[str, Any] | None:
    if writeback is None:
        return None
    client = WRITEBACKS.get(kind)
    if client is None:
        raise _invalid("writeback", f"kind {kind!r} has no write-back on this server: send null")
    try:
        config = client.config_model.model_validate(writeback)
    except ValidationError as exc:
        details = [
            ErrorDetail(field=f"writeback.{field_path(err['loc'])}".rstrip("."), message=err["msg"])
            for err in exc.errors()
        ]
        first = details[0]
        raise InvalidInput(f"{first.field}: {first.message}", details=details) from None
    stored = config.model_dump(mode="json")
    prefix = settings.writeback_env_prefix
    for field, name in env_names(stored):
        if not name.startswith(prefix):
            raise _invalid(
                f"writeback.{field}",
                f"{name!r}: only environment variables named {prefix}... are handed to "
                "write-backs (DARKROOM_WRITEBACK_ENV_PREFIX)",
            )
    return stored


def env_names(block: Mapping[str, Any], path: str = "") -> list[tuple[str, str]]:
    """(field, variable) for every environment variable a write-back block names: keys
    ending in `_env`, and `{"env": NAME}` header values."""
    found: list[tuple[str, str]] = []
    for key, value in block.items():
        field = f"{path}{key}"
        if key.endswith("_env") and isinstance(value, str):
            found.append((field, value))
        elif isinstance(value, Mapping):
            if set(value) == {"env"} and isinstance(value["env"], str):
                found.append((f"{field}.env", value["env"]))
            else:
                found += env_names(value, f"{field}.")
    return found


async def create_integration(
    session: AsyncSession,
    *,
    api_key: ApiKey,
    body: IntegrationCreate,
    registry: ProviderRegistry,
    settings: Settings,
) -> Saved:
    kind = KINDS[body.kind]
    inbound, secret = check_inbound(kind, body.inbound)
    now = utcnow()
    integration = Integration(
        id=uuid.uuid4(),
        api_key_id=api_key.id,
        name=body.name,
        kind=body.kind,
        events=body.events,
        inbound=inbound,
        template=check_template(body.template, registry),
        writeback=check_writeback(body.kind, body.writeback, settings),
        callback_url=str(body.callback_url) if body.callback_url else None,
        locale=body.locale,
        rejected_count=0,
        created_at=now,
        updated_at=now,
    )
    session.add(integration)
    await session.flush()
    return Saved(integration, secret)


async def update_integration(
    session: AsyncSession,
    integration: Integration,
    body: IntegrationUpdate,
    registry: ProviderRegistry,
    settings: Settings,
) -> Saved:
    """Fields sent replace what was there; `null` clears the optional ones."""
    sent = body.model_fields_set
    kind_name = body.kind if body.kind is not None else integration.kind
    if body.kind is not None and body.kind != integration.kind and body.inbound is None:
        raise _invalid("inbound", "required when the kind changes")
    secret = None
    if body.inbound is not None:
        integration.inbound, secret = check_inbound(KINDS[kind_name], body.inbound)
    if body.template is not None:
        integration.template = check_template(body.template, registry)
    if "writeback" in sent or kind_name != integration.kind:
        wanted = body.writeback if "writeback" in sent else integration.writeback
        integration.writeback = check_writeback(kind_name, wanted, settings)
    integration.kind = kind_name
    if body.name is not None:
        integration.name = body.name
    if "events" in sent:
        integration.events = body.events
    if "callback_url" in sent:
        integration.callback_url = str(body.callback_url) if body.callback_url else None
    if "locale" in sent:
        integration.locale = body.locale
    integration.updated_at = utcnow()
    await session.flush()
    return Saved(integration, secret)


def integration_out(
    integration: Integration, public_url: str, secret: str | None = None
) -> IntegrationOut:
    kind = KINDS.get(integration.kind)
    return IntegrationOut(
        id=integration.id,
        name=integration.name,
        kind=integration.kind,
        events=integration.events,
        default_events=list(kind.default_events) if kind else [],
        inbound={k: v for k, v in integration.inbound.items() if k in PUBLIC_INBOUND_KEYS},
        template=integration.template,
        writeback=integration.writeback,
        callback_url=integration.callback_url,
        locale=integration.locale,
        inbound_url=f"{public_url.rstrip('/')}/v1/hooks/{integration.id}",
        rejected_count=integration.rejected_count,
        created_at=integration.created_at,
        updated_at=integration.updated_at,
        secret=secret,
    )


def preview(integration: Integration, sample: PreviewIn, settings: Settings) -> PreviewOut:
    """Read and render a sample body as a delivery would be, without verifying it and
    without storing anything."""
    kind = KINDS.get(integration.kind)
    if kind is None:
        raise _invalid("kind", f"kind {integration.kind!r} is not available on this server")
    raw = json.dumps(sample.body).encode()
    request = InboundRequest(
        method="POST",
        path=f"/v1/hooks/{integration.id}",
        query={},
        headers={
            name.lower(): value if isinstance(value, str) else json.dumps(value)
            for name, value in (sample.headers or {}).items()
        },
        body=raw,
    )
    article = read_article(kind, request, sample.body, integration.read_locale)
    try:
        job = render_job(integration.template, article.variables, settings)
    except RenderFailed as exc:
        raise _invalid(exc.field, exc.message, code="template_error") from None
    return PreviewOut(
        event_type=article.event_type,
        would_create_job=article.event_type in acted_on(integration, kind),
        dedupe_key=article.dedupe_key,
        variables={k: v for k, v in article.variables.items() if k != "raw"},
        prompt=job.prompt,
        negative_prompt=job.negative_prompt,
        output_name=job.output_name,
        model=job.model,
        width=job.width,
        height=job.height,
        format=job.format,
    )
