"""Due times of a cron expression in a timezone (cronsim), as UTC instants.

cronsim follows Debian cron across DST for an expression at fixed times (a minute and an
hour given): a local time that does not exist (spring forward) runs at the first minute
that does (02:30 runs at 03:00), and a local time that happens twice (fall back) runs
once, at its first occurrence. Expressions with `*` in the minute or hour run by the
clock: every real occurrence, the repeated hour twice.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, available_timezones

from cronsim import CronSim, CronSimError

MAX_CRON = 100
FIELDS = "minute hour day-of-month month day-of-week"


class BadCron(ValueError):
    """The cron expression or the timezone cannot be used; the message says why."""


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    # Only the IANA names: ZoneInfo also opens whatever file a key names.
    return frozenset(available_timezones())


def zone(name: str) -> ZoneInfo:
    if name not in _zone_names():
        raise BadCron(f"unknown timezone {name[:64]!r}: use an IANA name like Europe/Amsterdam")
    return ZoneInfo(name)


def check_cron(expr: str) -> None:
    """Five fields (minute hour day-of-month month day-of-week), each one cronsim reads,
    and at least one due time ahead."""
    if len(expr.split()) != 5:
        raise BadCron(f"five fields are needed: {FIELDS}")
    try:
        next(CronSim(expr, datetime.now(UTC)))
    except CronSimError as exc:  # "Bad hour": say which fields there are
        raise BadCron(f"{exc}: the fields are {FIELDS}") from exc
    except StopIteration as exc:
        raise BadCron("this expression is never due") from exc


def next_due(expr: str, timezone: str, after: datetime) -> datetime | None:
    """The first due time strictly after `after`, in UTC; None if there is none."""
    tz = zone(timezone)
    try:
        found = next(CronSim(expr, after.astimezone(tz)))
    except (CronSimError, StopIteration):
        return None
    return found.astimezone(UTC)


def latest_due(expr: str, timezone: str, at: datetime) -> datetime | None:
    """The last due time at or before `at`, in UTC. Found backwards, then checked
    forwards, so it is always one that next_due would have given."""
    tz = zone(timezone)
    try:
        candidate = next(CronSim(expr, at.astimezone(tz), reverse=True)).astimezone(UTC)
    except (CronSimError, StopIteration):
        return None
    if candidate > at:  # cronsim starts at the whole second it was given
        return None
    while True:
        following = next_due(expr, timezone, candidate)
        if following is None or following > at:
            return candidate
        candidate = following
