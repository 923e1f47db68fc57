"""When an outbox event is tried again: Svix's schedule, jittered, bounded.

Attempts are made at 0 s, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h after the one
before (each wait ±20 %), about 27.6 h in all; after the eighth failure the event fails.
A receiver's Retry-After (on 429 or 503) moves the next attempt, but only within
[the next step, twice the next step]: a receiver can slow the schedule down, never make
Darkroom hammer it, and never park an event for days.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# The wait before each attempt, in seconds; the first is sent at once.
STEPS_S: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
MAX_ATTEMPTS = len(STEPS_S)
JITTER = 0.2
RETRY_AFTER_STATUSES = frozenset({429, 503})


def next_step_s(attempts_in_round: int, *, scale: float = 1.0) -> float | None:
    """The nominal wait before the next attempt, after `attempts_in_round` attempts of the
    current round have failed; None when the schedule is used up."""
    if attempts_in_round >= MAX_ATTEMPTS:
        return None
    return STEPS_S[attempts_in_round] * scale


def jittered(step_s: float, rng: random.Random | None = None) -> float:
    """±20 %: receivers that failed together do not all come back at the same moment."""
    factor = 1 + (rng or random).uniform(-JITTER, JITTER)
    return step_s * factor


def retry_delay_s(
    attempts_in_round: int,
    *,
    scale: float = 1.0,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float | None:
    """The wait before the next attempt, or None when the event has had every attempt."""
    step = next_step_s(attempts_in_round, scale=scale)
    if step is None:
        return None
    if retry_after_s is not None:
        return min(max(retry_after_s, step), 2 * step)
    return jittered(step, rng)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Retry-After is either delta-seconds or an HTTP date; anything else is ignored."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def schedule_bounds_s(scale: float = 1.0) -> tuple[float, float, float]:
    """The time from the first attempt to the last: (shortest, nominal, longest)."""
    total = sum(STEPS_S) * scale
    return total * (1 - JITTER), total, total * (1 + JITTER)
