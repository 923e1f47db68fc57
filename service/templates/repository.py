"""Queries for stored prompt templates."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import PromptTemplate


async def latest_version(session: AsyncSession, api_key_id: uuid.UUID, name: str) -> int:
    query = select(func.max(PromptTemplate.version)).where(
        PromptTemplate.api_key_id == api_key_id, PromptTemplate.name == name
    )
    return int((await session.execute(query)).scalar() or 0)


async def get(
    session: AsyncSession, api_key_id: uuid.UUID, name: str, version: int | None
) -> PromptTemplate | None:
    """One version, or the latest when `version` is None."""
    query = select(PromptTemplate).where(
        PromptTemplate.api_key_id == api_key_id, PromptTemplate.name == name
    )
    if version is None:
        query = query.order_by(PromptTemplate.version.desc()).limit(1)
    else:
        query = query.where(PromptTemplate.version == version)
    return (await session.execute(query)).scalars().first()


async def list_latest(
    session: AsyncSession, api_key_id: uuid.UUID, *, limit: int, after: str | None
) -> list[PromptTemplate]:
    """The latest version of each of the key's templates, by name."""
    latest = (
        select(PromptTemplate.name, func.max(PromptTemplate.version).label("version"))
        .where(PromptTemplate.api_key_id == api_key_id)
        .group_by(PromptTemplate.name)
    )
    if after is not None:
        latest = latest.where(PromptTemplate.name > after)
    newest = latest.order_by(PromptTemplate.name).limit(limit).subquery()
    query = (
        select(PromptTemplate)
        .join(
            newest,
            (PromptTemplate.name == newest.c.name) & (PromptTemplate.version == newest.c.version),
        )
        .where(PromptTemplate.api_key_id == api_key_id)
        .order_by(PromptTemplate.name)
    )
    return list((await session.execute(query)).scalars())


async def list_versions(
    session: AsyncSession, api_key_id: uuid.UUID, name: str
) -> list[PromptTemplate]:
    query = (
        select(PromptTemplate)
        .where(PromptTemplate.api_key_id == api_key_id, PromptTemplate.name == name)
        .order_by(PromptTemplate.version)
    )
    return list((await session.execute(query)).scalars())
