"""Spend over a time window: what the attempts that finished in it cost, and what they
made. One team runs Darkroom, so there is one view of it: every key sees all of it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from service.catalog.pricing import MICRO
from service.kit.base import utcnow
from service.kit.errors import ErrorDetail, InvalidInput
from service.usage import repository
from service.usage.repository import GROUP_BYS, Figures, GroupBy
from service.usage.schemas import UsageFigures, UsageGroup, UsageOut


async def usage(
    session: AsyncSession, start: datetime | None, end: datetime | None, group_by: str
) -> UsageOut:
    """Spend in [start, end) grouped by `group_by`; the window defaults to the current
    UTC month up to now (or, given only an end, that end's month up to it)."""
    grouping = _group_by(group_by)
    end = _utc(end, "to") if end is not None else utcnow()
    start = _utc(start, "from") if start is not None else _month_start(end)
    if end <= start:
        raise _invalid("to", f"must be after from ({start.isoformat()})")
    found = await repository.spend(session, start, end, grouping)
    groups = [
        UsageGroup(key=g.key, name=g.name, prefix=g.prefix, **_figures(g.figures))
        for g in _ordered(grouping, found.groups)
    ]
    return UsageOut(
        from_=start,
        to=end,
        group_by=grouping,
        groups=groups,
        totals=UsageFigures(**_figures(found.totals)),
    )


def _group_by(value: str) -> GroupBy:
    for known in GROUP_BYS:
        if value == known:
            return known
    raise _invalid(
        "group_by", f"unknown grouping {value[:50]!r}; use one of: {', '.join(GROUP_BYS)}"
    )


def _utc(moment: datetime, field: str) -> datetime:
    """A datetime without an offset is UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):
        raise _invalid(field, "is out of range") from None


def _month_start(end: datetime) -> datetime:
    """The start of the UTC month holding the instant just before `end`."""
    last = end - timedelta(microseconds=1) if end > datetime.min.replace(tzinfo=UTC) else end
    return last.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _ordered(grouping: GroupBy, groups: list[repository.Group]) -> list[repository.Group]:
    """Days in order; anything else by what it cost, most first."""
    if grouping == "day":
        return sorted(groups, key=lambda g: g.key or "")
    return sorted(groups, key=lambda g: (-g.figures.cost_usd, g.key or ""))


def _figures(figures: Figures) -> dict[str, float | int]:
    return {
        "cost_usd": float(figures.cost_usd.quantize(MICRO)),
        "images": figures.images,
        "videos": figures.videos,
        "video_seconds": float(figures.video_seconds),
        "attempts": figures.attempts,
        "failed_attempts": figures.failed_attempts,
    }


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", details=[ErrorDetail(field=field, message=message)])
