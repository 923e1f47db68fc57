"""The latency book (shared through Redis) and the poll schedule drawn from it."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
from structlog.testing import LogCapture

from service.dispatch import callbacks, latency
from service.dispatch.callbacks import MISSING_AFTER, CallbackHealth
from service.dispatch.latency import Latencies, Profile, profile_of
from service.state import State


def test_too_few_observations_make_no_profile() -> None:
    assert profile_of([1.0] * (latency.MIN_SAMPLES - 1)) is None


def test_profile_quantiles() -> None:
    profile = profile_of([float(n) for n in range(1, 101)])
    assert profile == Profile(p10=10.0, p50=50.0, p90=90.0, p99=99.0, samples=100)


def test_with_nothing_observed_polls_start_fast_and_slow_down() -> None:
    assert latency.first_poll_delay_s(None, callbacks_arriving=True) == 1.0
    delays = [latency.next_poll_delay_s(None, waited_s=0, polls=n) for n in (1, 2, 3, 30)]
    assert delays == [1.0, 1.5, 2.25, latency.UNKNOWN_CAP_S]


def test_first_poll_where_completions_begin_or_at_the_tail_when_callbacks_arrive() -> None:
    profile = Profile(p10=0.6, p50=2.0, p90=8.0, p99=20.0, samples=200)
    assert latency.first_poll_delay_s(profile, callbacks_arriving=False) == 0.6
    assert latency.first_poll_delay_s(profile, callbacks_arriving=True) == 8.0
    fast = Profile(p10=0.005, p50=0.01, p90=0.02, p99=0.05, samples=200)
    assert latency.first_poll_delay_s(fast, callbacks_arriving=False) == latency.FLOOR_S
    slow = Profile(p10=500.0, p50=600.0, p90=900.0, p99=1200.0, samples=200)
    assert latency.first_poll_delay_s(slow, callbacks_arriving=False) == latency.CAP_S


def test_later_polls_follow_the_tail_then_back_off() -> None:
    profile = Profile(p10=0.6, p50=2.0, p90=8.0, p99=20.0, samples=200)

    def after(waited_s: float) -> float:
        return latency.next_poll_delay_s(profile, waited_s=waited_s, polls=2)

    assert after(2.0) == latency.FLOOR_S  # 10 % of 2 s is under the floor
    assert after(5.0) == pytest.approx(0.5)
    assert after(7.5) == pytest.approx(0.5)  # lands on p90 rather than past it
    assert after(7.9) == latency.FLOOR_S
    assert after(15.0) == pytest.approx(1.5)
    assert after(30.0) == pytest.approx(15.0)  # past p99: the profile says little
    assert after(300.0) == latency.CAP_S


def test_the_providers_own_timing_is_read_from_its_timestamps() -> None:
    payload = {"created_at": "2026-01-01T00:00:00.250Z", "completed_at": "2026-01-01T00:00:02Z"}
    assert latency.remote_duration_s(payload) == pytest.approx(1.75)
    assert latency.remote_duration_s({"created_at": "2026-01-01T00:00:00Z"}) is None
    assert latency.remote_duration_s({"created_at": "x", "completed_at": "y"}) is None
    backwards = {"created_at": "2026-01-01T00:00:02Z", "completed_at": "2026-01-01T00:00:01Z"}
    assert latency.remote_duration_s(backwards) is None


async def test_observations_are_shared_and_capped(state: State) -> None:
    writer, reader = Latencies(state.redis), Latencies(state.redis)
    for n in range(latency.SAMPLES + 50):
        await writer.observe("acct", "model-a", 100.0 if n < 50 else 1.0)
    await writer.observe("acct", "model-b", 5.0)

    profile = await reader.profile("acct", "model-a")

    assert profile == Profile(p10=1.0, p50=1.0, p90=1.0, p99=1.0, samples=latency.SAMPLES)
    assert await reader.profile("acct", "model-b") is None  # one observation says little
    whole = await reader.account_profile("acct")
    assert whole is not None
    assert whole.samples == latency.SAMPLES


@pytest.fixture
def callbacks_log(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The module's log lines (its logger is swapped: structlog caches loggers on first use,
    so capture_logs would miss lines of a logger an earlier test already used)."""
    capture = LogCapture()
    monkeypatch.setattr(callbacks, "log", structlog.wrap_logger(None, processors=[capture]))
    return capture.entries


async def test_missing_callbacks_are_noticed_once_and_forgotten_when_one_arrives(
    state: State, callbacks_log: list[dict[str, Any]]
) -> None:
    health = CallbackHealth(state.redis)
    logs = callbacks_log
    for _ in range(MISSING_AFTER + 5):
        await health.completed_by_poll("acct")
    missing = [entry for entry in logs if entry["event"] == "provider_callbacks_missing"]
    assert len(missing) == 1
    assert "unreachable" in missing[0]["reason"]
    status = await health.status("acct")
    assert (status.missing, status.arriving, status.polled_in_a_row) == (
        True,
        False,
        MISSING_AFTER + 5,
    )
    assert await health.arriving("acct") is False

    logs.clear()
    await health.arrived("acct")
    assert [entry["event"] for entry in logs] == ["provider_callbacks_arriving_again"]
    assert await health.arriving("acct") is True
    status = await health.status("acct")
    assert (status.missing, status.polled_in_a_row, status.arrived) == (False, 0, 1)


async def test_polled_completions_between_arriving_callbacks_are_no_alarm(state: State) -> None:
    health = CallbackHealth(state.redis)
    for _ in range(10):
        await health.arrived("acct")
        for _ in range(MISSING_AFTER // 2):
            await health.completed_by_poll("acct")
    assert (await health.status("acct")).missing is False
