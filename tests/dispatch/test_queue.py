"""DispatchQueue: fairness between batches, priority, idempotent enqueue, backoff, purge."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import cast

import pytest

from service.dispatch.queue import AccountKeys, DispatchQueue
from service.models import Priority
from service.providers.account import Limits
from service.state import State
from tests.dispatch import granted, install_clock, refused, ring_of, take_all

LEASE_S = 60.0


def make_queue(state: State, account: str = "acct", limits: Limits | None = None) -> DispatchQueue:
    return DispatchQueue(state.redis, account, limits or Limits(), lease_s=LEASE_S)


def ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{n}" for n in range(count)]


async def test_small_batch_behind_a_big_one_is_served_one_for_one(state: State) -> None:
    queue = make_queue(state)
    assert await queue.enqueue("A", ids("a", 1_000), Priority.bulk) == 1_000
    assert await queue.enqueue("B", ids("b", 10), Priority.bulk) == 10

    first = [granted(await queue.take()) for _ in range(20)]

    assert [g.batch_id for g in first] == ["A", "B"] * 10
    assert [g.job_id for g in first if g.batch_id == "B"] == ids("b", 10)
    assert [g.job_id for g in first if g.batch_id == "A"] == ids("a", 10)
    # B is done: A has the account to itself, still in submission order.
    rest = await take_all(queue)
    assert [g.job_id for g in rest] == ids("a", 1_000)[10:]
    assert await queue.backlog() == 0


async def test_three_batches_share_the_account_round_robin(state: State) -> None:
    queue = make_queue(state)
    await queue.enqueue("A", ids("a", 5), Priority.bulk)
    await queue.enqueue("B", ids("b", 2), Priority.bulk)
    await queue.enqueue("C", ids("c", 3), Priority.bulk)

    order = [g.batch_id for g in await take_all(queue)]

    assert order == ["A", "B", "C", "A", "B", "C", "A", "C", "A", "A"]


async def test_enqueue_past_one_chunk_keeps_the_batch_in_the_ring_once(state: State) -> None:
    queue = make_queue(state)
    await queue.enqueue("A", ids("a", 4_500), Priority.bulk)  # three script calls
    await queue.enqueue("B", ids("b", 3), Priority.bulk)

    assert await ring_of(state.redis, queue.keys.ring(Priority.bulk)) == ["A", "B"]
    first = [granted(await queue.take()).batch_id for _ in range(6)]
    assert first == ["A", "B"] * 3
    assert await queue.backlog() == 4_500 - 3


async def test_realtime_job_goes_ahead_of_a_bulk_backlog(state: State) -> None:
    queue = make_queue(state)
    await queue.enqueue("bulk", ids("b", 500), Priority.bulk)
    granted(await queue.take())  # bulk is already flowing
    await queue.enqueue("cover", ["cover-1"], Priority.realtime)

    grant = granted(await queue.take())

    assert (grant.job_id, grant.batch_id, grant.priority) == ("cover-1", "cover", Priority.realtime)
    after = granted(await queue.take())
    assert (after.job_id, after.priority) == ("b-1", Priority.bulk)


async def test_realtime_batches_round_robin_and_all_go_before_bulk(state: State) -> None:
    queue = make_queue(state)
    await queue.enqueue("bulk", ids("b", 3), Priority.bulk)
    await queue.enqueue("R1", ids("r1", 4), Priority.realtime)
    await queue.enqueue("R2", ids("r2", 2), Priority.realtime)

    order = [(g.batch_id, g.priority) for g in await take_all(queue)]

    realtime, bulk = Priority.realtime, Priority.bulk
    assert order == [
        ("R1", realtime),
        ("R2", realtime),
        ("R1", realtime),
        ("R2", realtime),
        ("R1", realtime),
        ("R1", realtime),
        ("bulk", bulk),
        ("bulk", bulk),
        ("bulk", bulk),
    ]


async def test_enqueue_is_idempotent_and_waiting_tracks_membership(state: State) -> None:
    queue = make_queue(state)
    assert await queue.enqueue("A", ["j1", "j2", "j3"], Priority.bulk) == 3
    assert await queue.enqueue("A", ["j1", "j2", "j3", "j4"], Priority.bulk) == 1
    assert await queue.backlog() == 4
    assert await queue.waiting(["j1", "j4", "nope"]) == [True, True, False]
    assert await queue.waiting([]) == []

    grant = granted(await queue.take())

    assert grant.job_id == "j1"
    assert await queue.waiting(["j1", "j2"]) == [False, True]
    assert await queue.backlog() == 3
    # Taken jobs can be queued again (a retry): once.
    assert await queue.enqueue("A", ["j1", "j1"], Priority.bulk) == 1
    assert [g.job_id for g in await take_all(queue)] == ["j2", "j3", "j4", "j1"]


async def test_front_puts_a_job_at_the_head_of_its_batch(state: State) -> None:
    queue = make_queue(state)
    await queue.enqueue("A", ["a1", "a2", "a3"], Priority.bulk)
    await queue.enqueue("B", ["b1"], Priority.bulk)
    assert granted(await queue.take()).job_id == "a1"  # ring is now B, A

    assert await queue.enqueue("A", ["a1"], Priority.bulk, front=True) == 1
    # Already waiting: front does not move it.
    assert await queue.enqueue("A", ["a3"], Priority.bulk, front=True) == 0

    assert [g.job_id for g in await take_all(queue)] == ["b1", "a1", "a2", "a3"]


async def test_front_into_an_empty_batch_puts_it_back_in_the_ring(state: State) -> None:
    queue = make_queue(state)
    await queue.enqueue("A", ["a1"], Priority.bulk)
    granted(await queue.take())
    assert await ring_of(state.redis, queue.keys.ring(Priority.bulk)) == []

    await queue.enqueue("A", ["a1"], Priority.bulk, front=True)

    assert granted(await queue.take()).job_id == "a1"


async def test_empty_queue_refuses_with_empty(state: State) -> None:
    queue = make_queue(state)
    outcome = refused(await queue.take(), "empty")
    assert outcome.wait_s == 0
    assert await queue.backlog() == 0


async def test_delayed_job_is_granted_only_once_due(state: State) -> None:
    queue = make_queue(state)
    assert await queue.enqueue_later("A", "late", Priority.bulk, delay_s=0.2)
    # Waiting out a backoff is waiting: not enqueued twice, seen by the reconciler.
    assert await queue.waiting(["late"]) == [True]
    assert await queue.backlog() == 1
    assert not await queue.enqueue_later("A", "late", Priority.bulk, delay_s=0.2)
    assert await queue.enqueue("A", ["late"], Priority.bulk) == 0

    refused(await queue.take(), "empty")

    await asyncio.sleep(0.3)
    grant = granted(await queue.take())
    assert (grant.job_id, grant.batch_id, grant.priority) == ("late", "A", Priority.bulk)
    assert await queue.waiting(["late"]) == [False]
    refused(await queue.take(), "empty")


async def test_due_job_goes_to_the_front_of_its_flow(
    state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = install_clock(monkeypatch)
    queue = make_queue(state)
    await queue.enqueue("A", ["a1", "a2", "a3"], Priority.bulk)
    await queue.enqueue_later("A", "retry", Priority.bulk, delay_s=5)
    await queue.enqueue_later("R", "rt", Priority.realtime, delay_s=5)

    assert granted(await queue.take()).job_id == "a1"
    clock.advance(4.999)
    assert granted(await queue.take()).job_id == "a2"
    clock.advance(0.001)

    order = [(g.job_id, g.priority) for g in await take_all(queue)]

    # The realtime job keeps its priority; the bulk retry goes ahead of the rest of A.
    assert order == [("rt", Priority.realtime), ("retry", Priority.bulk), ("a3", Priority.bulk)]
    assert await cast(Awaitable[int], state.redis.zcard(queue.keys.delayed)) == 0


async def test_purge_removes_a_batch_from_every_structure(state: State) -> None:
    queue = make_queue(state)
    await queue.enqueue("A", ids("a", 5), Priority.bulk)
    await queue.enqueue("B", ids("b", 3), Priority.bulk)
    await queue.enqueue("R", ids("r", 2), Priority.realtime)
    granted(await queue.take())  # r-0

    assert await queue.purge("A") == 5

    keys = queue.keys
    assert await state.redis.exists(keys.flow("A")) == 0
    assert await ring_of(state.redis, keys.ring(Priority.bulk)) == ["B"]
    assert await ring_of(state.redis, keys.ring(Priority.realtime)) == ["R"]
    assert await queue.waiting(ids("a", 5)) == [False] * 5
    assert await queue.waiting([*ids("b", 3), "r-1"]) == [True] * 4
    assert await queue.backlog() == 4
    assert [g.job_id for g in await take_all(queue)] == ["r-1", "b-0", "b-1", "b-2"]
    assert await queue.purge("A") == 0


async def test_purge_of_a_realtime_batch(state: State) -> None:
    queue = make_queue(state)
    await queue.enqueue("R", ids("r", 3), Priority.realtime)
    await queue.enqueue("B", ids("b", 1), Priority.bulk)

    assert await queue.purge("R") == 3

    assert await ring_of(state.redis, queue.keys.ring(Priority.realtime)) == []
    assert [g.job_id for g in await take_all(queue)] == ["b-0"]


async def test_purge_also_drops_jobs_waiting_out_a_backoff(
    state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = install_clock(monkeypatch)
    queue = make_queue(state)
    await queue.enqueue("A", ["a1"], Priority.bulk)
    await queue.enqueue_later("A", "a-retry", Priority.bulk, delay_s=1)
    await queue.enqueue_later("B", "b-retry", Priority.bulk, delay_s=1)

    await queue.purge("A")

    assert await queue.waiting(["a1", "a-retry", "b-retry"]) == [False, False, True]
    clock.advance(2)
    assert [g.job_id for g in await take_all(queue)] == ["b-retry"]


async def test_accounts_do_not_share_queues(state: State) -> None:
    one, two = make_queue(state, "one"), make_queue(state, "two")
    await one.enqueue("A", ["x"], Priority.bulk)

    refused(await two.take(), "empty")
    assert await two.waiting(["x"]) == [False]
    assert granted(await one.take()).account == "one"


def test_account_keys_share_one_cluster_slot() -> None:
    keys = AccountKeys("acct")
    names = [keys.flow("b"), keys.ring(Priority.bulk), keys.delayed, keys.waiting]
    names += [keys.limiter, keys.slots]
    assert all(name.startswith("dr:a:{acct}:") for name in names)
    assert len(set(names)) == len(names)
