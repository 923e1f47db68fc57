"""/v1/templates: stored, versioned prompt templates. Thin handlers; the work is in service.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from service.deps import ApiKeyDep, SessionDep
from service.kit.errors import ERROR_RESPONSES
from service.kit.pagination import (
    DEFAULT_LIMIT,
    Cursor,
    Limit,
    bad_cursor,
    decode_cursor,
    encode_cursor,
    keyset_page,
)
from service.templates import repository, service
from service.templates.schemas import (
    NAME_PATTERN,
    TemplateCreate,
    TemplateOut,
    TemplatePage,
)

router = APIRouter(prefix="/v1/templates", tags=["templates"], responses=ERROR_RESPONSES)

NameParam = Annotated[str, Path(pattern=NAME_PATTERN, max_length=100)]
VersionParam = Annotated[int, Path(ge=1, le=999_999_999)]


@router.post("", status_code=201)
async def create_template(
    body: TemplateCreate, session: SessionDep, api_key: ApiKeyDep
) -> TemplateOut:
    """Store a template. Posting a name that exists makes its next version; versions are
    never changed, so a batch that named `name@version` always renders the same text."""
    template = await service.create_template(session, api_key, body)
    await session.commit()
    return service.template_out(template)


@router.get("")
async def list_templates(
    session: SessionDep, api_key: ApiKeyDep, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> TemplatePage:
    """The latest version of each of the key's templates, by name."""
    after = None
    if cursor is not None:
        (after,) = decode_cursor(cursor, 1)
        if not isinstance(after, str):
            raise bad_cursor()
    rows = await repository.list_latest(session, api_key.id, limit=limit + 1, after=after)
    page, next_cursor = keyset_page(rows, limit, lambda t: encode_cursor([t.name]))
    return TemplatePage(items=[service.template_out(t) for t in page], next_cursor=next_cursor)


@router.get("/{name}")
async def get_template(name: NameParam, session: SessionDep, api_key: ApiKeyDep) -> TemplateOut:
    """The latest version of a template."""
    return service.template_out(await service.get_template(session, api_key, name))


@router.get("/{name}/versions")
async def list_template_versions(
    name: NameParam, session: SessionDep, api_key: ApiKeyDep
) -> list[TemplateOut]:
    """Every version of a template, oldest first."""
    await service.get_template(session, api_key, name)  # a 404 for an unknown name
    versions = await repository.list_versions(session, api_key.id, name)
    return [service.template_out(t) for t in versions]


@router.get("/{name}/versions/{version}")
async def get_template_version(
    name: NameParam, version: VersionParam, session: SessionDep, api_key: ApiKeyDep
) -> TemplateOut:
    """One version of a template (what `name@version` in a batch renders)."""
    return service.template_out(await service.get_template(session, api_key, name, version))
