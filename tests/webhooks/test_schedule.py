"""The retry schedule: Svix's steps, ±20 % jitter, Retry-After within [step, 2 x step]."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from service.webhooks.schedule import (
    MAX_ATTEMPTS,
    STEPS_S,
    parse_retry_after,
    retry_delay_s,
    schedule_bounds_s,
)


def test_the_steps_are_svix_s_and_eight_attempts_in_all() -> None:
    assert STEPS_S == (0, 5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)
    assert MAX_ATTEMPTS == 8
    assert retry_delay_s(MAX_ATTEMPTS) is None  # the eighth failure ends it


@pytest.mark.parametrize("failed", range(1, MAX_ATTEMPTS))
def test_each_wait_is_its_step_within_20_percent(failed: int) -> None:
    rng = random.Random(failed)
    step = STEPS_S[failed]
    delays = [retry_delay_s(failed, rng=rng) for _ in range(500)]
    assert all(d is not None and 0.8 * step <= d <= 1.2 * step for d in delays)
    spread = [d for d in delays if d is not None]
    assert min(spread) < 0.85 * step
    assert max(spread) > 1.15 * step


def test_the_whole_schedule_takes_about_27_6_hours() -> None:
    shortest, nominal, longest = schedule_bounds_s()
    assert nominal == 99_305  # 27 h 35 min 5 s
    assert round(nominal / 3600, 1) == 27.6
    assert shortest == pytest.approx(0.8 * nominal)
    assert longest == pytest.approx(1.2 * nominal)


def test_the_scale_shrinks_every_step() -> None:
    assert retry_delay_s(1, scale=0.01, retry_after_s=0) == pytest.approx(0.05)
    assert schedule_bounds_s(0.01)[1] == pytest.approx(993.05)


@pytest.mark.parametrize(
    ("failed", "retry_after", "expected"),
    [
        (1, 1, 5),  # sooner than the step: the step
        (1, 7, 7),  # within: as asked
        (1, 3600, 10),  # later than twice the step: twice the step
        (2, 0, 300),
        (2, 500, 500),
        (4, 86_400, 14_400),
    ],
)
def test_retry_after_is_clamped_to_the_next_step_up_to_twice_it(
    failed: int, retry_after: float, expected: float
) -> None:
    assert retry_delay_s(failed, retry_after_s=retry_after) == expected


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120
    assert (
        parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now=now) == 90
    )
    assert parse_retry_after(format_datetime(now - timedelta(hours=1), usegmt=True), now=now) == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") is None
    assert parse_retry_after(None) is None
