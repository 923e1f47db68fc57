"""Stored prompt templates: versioned, never changed once written. Never commits."""

from __future__ import annotations

import uuid

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.kit.errors import Conflict, NotFound
from service.models import ApiKey, PromptTemplate
from service.templates import repository
from service.templates.schemas import TemplateBody, TemplateCreate, TemplateOut

_VERSION_TRIES = 5


async def create_template(
    session: AsyncSession, api_key: ApiKey, body: TemplateCreate
) -> PromptTemplate:
    """Store `body` as the next version of its name (1 for a new name). Two posts of one
    name at once both land: the unique (key, name, version) makes the loser try the next."""
    for _ in range(_VERSION_TRIES):
        version = await repository.latest_version(session, api_key.id, body.name) + 1
        template = PromptTemplate(
            id=uuid.uuid4(),
            api_key_id=api_key.id,
            name=body.name,
            version=version,
            prompt=body.prompt,
            negative_prompt=body.negative_prompt,
            output_name=body.output_name,
        )
        try:
            async with session.begin_nested():
                session.add(template)
        except IntegrityError:
            continue
        return template
    raise Conflict(f"template {body.name!r} is being written by others: retry", code="busy")


async def get_template(
    session: AsyncSession, api_key: ApiKey, name: str, version: int | None = None
) -> PromptTemplate:
    template = await repository.get(session, api_key.id, name, version)
    if template is None:
        raise NotFound(f"no template {_ref(name, version)}")
    return template


async def resolve_ref(
    session: AsyncSession, api_key_id: uuid.UUID, ref: str
) -> tuple[TemplateBody, str] | None:
    """A batch's `name` or `name@version`: the stored text and its exact `name@version`
    (what the batch keeps, so it can be read back against what it was rendered from)."""
    name, _, version = ref.partition("@")
    template = await repository.get(session, api_key_id, name, int(version) if version else None)
    if template is None:
        return None
    body = TemplateBody.model_construct(
        prompt=template.prompt,
        negative_prompt=template.negative_prompt,
        output_name=template.output_name,
    )
    return body, f"{template.name}@{template.version}"


def template_out(template: PromptTemplate) -> TemplateOut:
    return TemplateOut(
        id=template.id,
        name=template.name,
        version=template.version,
        ref=f"{template.name}@{template.version}",
        prompt=template.prompt,
        negative_prompt=template.negative_prompt,
        output_name=template.output_name,
        created_at=template.created_at,
    )


def _ref(name: str, version: int | None) -> str:
    return repr(name if version is None else f"{name}@{version}")
