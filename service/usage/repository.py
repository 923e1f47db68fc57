"""The spend query behind GET /v1/usage: attempts that finished in a window, summed per
group and in total in one statement (one snapshot, so the totals are the sum of the
groups even while jobs finish), as NUMERIC: money is never summed as floats."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Numeric,
    and_,
    cast,
    func,
    literal,
    literal_column,
    not_,
    select,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from service.models import ApiKey, Batch, Job, JobAttempt

GroupBy = Literal["model", "account", "day", "batch", "api_key"]
GROUP_BYS: tuple[GroupBy, ...] = ("model", "account", "day", "batch", "api_key")
# Outcomes that are not an error at the provider: made it, waited on a 429, were
# cancelled by the caller, or lost with a dead worker.
NOT_FAILED = ("succeeded", "rate_limited", "cancelled", "abandoned")


@dataclass(frozen=True)
class Figures:
    cost_usd: Decimal
    images: int
    videos: int
    video_seconds: Decimal
    attempts: int
    failed_attempts: int


@dataclass(frozen=True)
class Group:
    # The model, account, UTC day, batch id or API key id (None: attempts made before
    # models were recorded); `name` the batch's or key's name, `prefix` the key's.
    key: str | None
    name: str | None
    prefix: str | None
    figures: Figures


@dataclass(frozen=True)
class Spend:
    groups: list[Group]
    totals: Figures


async def spend(session: AsyncSession, start: datetime, end: datetime, group_by: GroupBy) -> Spend:
    """Attempts that finished in [start, end): one row per group, and the totals row
    (ROLLUP of the group's key columns as one: the groups, then the grand total)."""
    keys = _keys(group_by)
    made = JobAttempt.outcome == "succeeded"
    is_video = func.coalesce(Job.params["media"].astext, "image") == "video"
    zero = literal(Decimal(0), Numeric(12, 6))
    figures = (
        func.coalesce(func.sum(JobAttempt.cost_usd), zero),
        func.count().filter(and_(made, not_(is_video))),
        func.count().filter(and_(made, is_video)),
        func.coalesce(
            func.sum(cast(Job.output_duration_s, Numeric)).filter(and_(made, is_video)), 0
        ),
        func.count(),
        func.count().filter(JobAttempt.outcome.not_in(NOT_FAILED)),
    )
    query = (
        select(func.grouping(keys[0]).label("total"), *keys, *figures)
        .select_from(JobAttempt)
        .join(Job, Job.id == JobAttempt.job_id)
        .where(JobAttempt.finished_at >= start, JobAttempt.finished_at < end)
        .group_by(func.rollup(tuple_(*keys)))
    )
    if group_by in ("batch", "api_key"):
        query = query.join(Batch, Batch.id == Job.batch_id)
    if group_by == "api_key":
        query = query.join(ApiKey, ApiKey.id == Batch.api_key_id)
    rows = (await session.execute(query)).all()
    totals = Figures(Decimal(0), 0, 0, Decimal(0), 0, 0)
    groups = []
    for row in rows:
        values = tuple(row)
        parts = values[1 : 1 + len(keys)]
        found = _figures(values[1 + len(keys) :])
        if values[0]:
            totals = found
        else:
            groups.append(_group(group_by, parts, found))
    return Spend(groups, totals)


def _keys(group_by: GroupBy) -> list[ColumnElement[Any] | InstrumentedAttribute[Any]]:
    if group_by == "model":
        return [func.coalesce(JobAttempt.model, Job.model)]
    if group_by == "account":
        return [JobAttempt.provider]
    if group_by == "day":
        # A literal, not a parameter: the same expression in SELECT and GROUP BY.
        return [func.date(func.timezone(literal_column("'UTC'"), JobAttempt.finished_at))]
    if group_by == "batch":
        return [Job.batch_id, Batch.name]
    return [Batch.api_key_id, ApiKey.name, ApiKey.prefix]


def _figures(values: tuple[Any, ...]) -> Figures:
    cost, images, videos, seconds, attempts, failed = values
    return Figures(Decimal(cost), images, videos, Decimal(seconds), attempts, failed)


def _group(group_by: GroupBy, parts: tuple[Any, ...], figures: Figures) -> Group:
    key = parts[0]
    text = key.isoformat() if isinstance(key, date) else (str(key) if key is not None else None)
    name = parts[1] if len(parts) > 1 else None
    prefix = parts[2] if len(parts) > 2 else None
    return Group(text, name, prefix, figures)
