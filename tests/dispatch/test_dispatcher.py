"""The dispatcher loop: every queued job runs once, within the process's concurrency and
the account's limits; stop() stops taking grants and honours its grace period."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from service.dispatch.accounts import Dispatch
from service.dispatch.dispatcher import (
    BUSY_POLL_S,
    IDLE_POLL_S,
    MAX_WAIT_S,
    Dispatcher,
    running_dispatcher,
    wait_after,
)
from service.dispatch.queue import Grant, Refusal
from service.models import Priority
from service.providers.account import Limits
from service.providers.config import DarkroomConfig
from service.providers.local import LocalConfig
from service.providers.registry import build_registry
from service.state import State
from tests.dispatch import install_clock

GUARD_S = 10.0  # only a guard against hanging: no test asserts how long anything took


async def wait_until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(GUARD_S):
        while not condition():
            await asyncio.sleep(0.005)


@dataclass
class Recorder:
    """A run_grant that records what ran and how many ran at once, per account."""

    hold_s: float = 0.01
    release_slot: bool = True
    gate: asyncio.Event | None = None
    # Hold each request until this many of its account's (or, under "*", of all) requests are
    # in flight at once: a peak then depends on the dispatcher, not on how fast a loaded
    # machine happens to grant compared with hold_s.
    fill_to: dict[str, int] = field(default_factory=dict)
    filled: dict[str, asyncio.Event] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    in_flight: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)

    @property
    def total_in_flight(self) -> int:
        return sum(self.in_flight.values())

    async def __call__(self, state: State, grant: Grant) -> None:
        account = grant.account
        self.ran.append(grant.job_id)
        self.in_flight[account] = self.in_flight.get(account, 0) + 1
        self.peak[account] = max(self.peak.get(account, 0), self.in_flight[account])
        self.peak["*"] = max(self.peak.get("*", 0), self.total_in_flight)
        try:
            for scope, target in self.fill_to.items():
                filled = self.filled.setdefault(scope, asyncio.Event())
                if self.peak.get(scope, 0) >= target:
                    filled.set()
                if scope in (account, "*"):
                    await filled.wait()
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(self.hold_s)
            self.finished.append(grant.job_id)
        except asyncio.CancelledError:
            self.cancelled.append(grant.job_id)
            raise
        finally:
            self.in_flight[account] -= 1
            if self.release_slot:
                await state.dispatch.limiter(account).release(grant.job_id)


async def queue_jobs(state: State, account: str, batch: str, count: int) -> list[str]:
    ids = [f"{account}-{batch}-{n}" for n in range(count)]
    await state.dispatch.queue(account).enqueue(batch, ids, Priority.bulk)
    return ids


async def use_accounts(state: State, accounts: dict[str, Limits]) -> None:
    """Replace the State's provider accounts with local-kind ones with these limits."""
    config = DarkroomConfig(
        providers={name: LocalConfig(kind="local", limits=lim) for name, lim in accounts.items()}
    )
    await state.registry.aclose()
    state.registry = build_registry(config)
    state.dispatch = Dispatch(state.redis, state.registry)


async def test_every_job_runs_once_never_more_than_concurrency(state: State) -> None:
    assert "local" in state.dispatch.accounts()
    jobs = await queue_jobs(state, "local", "A", 20) + await queue_jobs(state, "local", "B", 10)
    record = Recorder(fill_to={"*": 3})
    dispatcher = Dispatcher(state, record, concurrency=3)

    dispatcher.start()
    await wait_until(lambda: len(record.finished) == len(jobs))
    await asyncio.wait_for(dispatcher.stop(), GUARD_S)

    assert sorted(record.ran) == sorted(jobs)
    assert record.peak["*"] == 3
    assert not dispatcher.busy
    assert await state.dispatch.queue("local").backlog() == 0
    snap = await state.dispatch.limiter("local").snapshot()
    assert (snap.grants, snap.in_flight) == (len(jobs), 0)


async def test_batches_are_served_fairly_through_the_dispatcher(state: State) -> None:
    big = await queue_jobs(state, "local", "big", 40)
    small = await queue_jobs(state, "local", "small", 5)
    record = Recorder(hold_s=0)

    async with running_dispatcher(state, record, concurrency=1):
        await wait_until(lambda: len(record.finished) == len(big) + len(small))

    last_small = max(record.ran.index(job) for job in small)
    assert last_small < 2 * len(small)
    assert [job for job in record.ran if job in big] == big


async def test_stop_takes_no_more_grants_and_cancels_after_grace(state: State) -> None:
    jobs = await queue_jobs(state, "local", "A", 10)
    record = Recorder(gate=asyncio.Event())  # never opened: the requests hang
    dispatcher = Dispatcher(state, record, concurrency=3)
    dispatcher.start()
    await wait_until(lambda: len(record.ran) == 3)

    await asyncio.wait_for(dispatcher.stop(grace_s=0.05), GUARD_S)

    assert sorted(record.cancelled) == sorted(record.ran) == sorted(jobs[:3])
    assert record.finished == []
    assert not dispatcher.busy
    assert await state.dispatch.queue("local").backlog() == 7


async def test_stop_lets_running_requests_finish_within_grace(state: State) -> None:
    await queue_jobs(state, "local", "A", 10)
    gate = asyncio.Event()
    record = Recorder(gate=gate)
    dispatcher = Dispatcher(state, record, concurrency=3)
    dispatcher.start()
    await wait_until(lambda: len(record.ran) == 3)

    stopping = asyncio.create_task(dispatcher.stop(grace_s=GUARD_S))
    await asyncio.sleep(0)  # stop() has cancelled the loops and waits for the requests
    gate.set()
    await asyncio.wait_for(stopping, GUARD_S)

    assert sorted(record.finished) == sorted(record.ran)
    assert len(record.ran) == 3
    assert record.cancelled == []
    assert await state.dispatch.queue("local").backlog() == 7


async def test_account_limit_binds_below_process_concurrency(state: State) -> None:
    await use_accounts(state, {"tight": Limits(max_concurrent=2), "roomy": Limits()})
    tight = await queue_jobs(state, "tight", "A", 12)
    roomy = await queue_jobs(state, "roomy", "A", 12)
    record = Recorder(hold_s=0.01, fill_to={"tight": 2, "roomy": 3})

    async with running_dispatcher(state, record, concurrency=6):
        await wait_until(lambda: len(record.finished) == len(tight) + len(roomy))

    assert sorted(record.ran) == sorted(tight + roomy)
    assert record.peak["tight"] == 2
    # A busy account does not hold back the other: its loop keeps the spare capacity.
    assert record.peak["roomy"] >= 3
    assert record.peak["*"] <= 6


async def test_rate_bound_account_is_paced_by_the_limiter(
    state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = install_clock(monkeypatch)  # frozen: no token comes back unless we advance it
    await use_accounts(state, {"paced": Limits(rate_per_s=10, burst=2)})
    jobs = await queue_jobs(state, "paced", "A", 5)
    record = Recorder(hold_s=0)
    limiter = state.dispatch.limiter("paced")

    async def send(state: State, grant: Grant) -> None:
        await limiter.wait_turn(grant.job_id)  # as the runner does before its request
        await record(state, grant)

    async with running_dispatcher(state, send, concurrency=5):
        await wait_until(lambda: len(record.finished) == 2)
        # The burst went out; the next picks wait for their turn, and nothing more. Turns go
        # to whichever waiting task asks first: which two ran is not promised, only how many.
        await asyncio.sleep(0.3)
        assert len(set(record.ran)) == len(record.ran) == 2

        clock.advance(10)
        await wait_until(lambda: len(record.finished) == 4)
        await asyncio.sleep(0.3)
        assert len(set(record.ran)) == len(record.ran) == 4
        clock.advance(10)
        await wait_until(lambda: len(record.finished) == 5)

    assert sorted(record.ran) == sorted(jobs)  # each exactly once
    assert (await limiter.snapshot()).grants == 5
    assert await state.dispatch.queue("paced").backlog() == 0


async def test_a_failing_request_frees_its_capacity(state: State) -> None:
    jobs = await queue_jobs(state, "local", "A", 5)
    attempted: list[str] = []

    async def explode(state: State, grant: Grant) -> None:
        attempted.append(grant.job_id)
        await state.dispatch.limiter(grant.account).release(grant.job_id)
        raise RuntimeError("provider went away")

    async with running_dispatcher(state, explode, concurrency=1) as dispatcher:
        await wait_until(lambda: len(attempted) == len(jobs))
        await wait_until(lambda: not dispatcher.busy)

    assert attempted == jobs


@pytest.mark.parametrize(
    ("refusal", "expected"),
    [
        (Refusal("empty", 0), IDLE_POLL_S),
        (Refusal("busy", 0), BUSY_POLL_S),
        (Refusal("rate", 0), BUSY_POLL_S),
        (Refusal("rate", 0.25), 0.25),
        (Refusal("blocked", 0.5), 0.5),
        (Refusal("blocked", 30), MAX_WAIT_S),
    ],
)
def test_wait_after_a_refusal(refusal: Refusal, expected: float) -> None:
    assert wait_after(refusal) == expected
