"""The coalescer: calls that arrive together share one flush, and each caller still
gets its own answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from service.kit.coalescer import Coalescer


class Recorder:
    """A flush that doubles numbers, refuses negative ones, and can be held open."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()
        self.fail_groups_over = 0

    async def flush(self, items: Sequence[int]) -> list[int | BaseException]:
        self.groups.append(list(items))
        self.entered.set()
        await self.gate.wait()
        if self.fail_groups_over and len(items) > self.fail_groups_over:
            raise RuntimeError("the whole group failed")
        return [ValueError(f"{n} is negative") if n < 0 else n * 2 for n in items]


async def test_calls_of_one_turn_share_one_flush_and_get_their_own_results() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.flush, name="test")

    results = await asyncio.gather(*(coalescer.submit(n) for n in range(5)))

    assert results == [0, 2, 4, 6, 8]
    assert recorder.groups == [[0, 1, 2, 3, 4]]


async def test_calls_arriving_during_a_flush_form_the_next_group() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    coalescer = Coalescer(recorder.flush, name="test")
    first = asyncio.create_task(coalescer.submit(1))
    await recorder.entered.wait()  # the first group's flush is in flight

    later = [asyncio.create_task(coalescer.submit(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0)
    recorder.gate.set()

    assert await first == 2
    assert [await task for task in later] == [4, 6, 8]
    assert recorder.groups == [[1], [2, 3, 4]]


async def test_an_item_error_reaches_its_own_caller_only() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.flush, name="test")

    results = await asyncio.gather(
        coalescer.submit(1), coalescer.submit(-1), coalescer.submit(3), return_exceptions=True
    )

    assert results[0] == 2
    assert isinstance(results[1], ValueError)
    assert results[2] == 6
    assert recorder.groups == [[1, -1, 3]]


async def test_a_failed_group_is_retried_item_by_item() -> None:
    recorder = Recorder()
    recorder.fail_groups_over = 1  # only groups of one succeed
    coalescer = Coalescer(recorder.flush, name="test")

    results = await asyncio.gather(
        coalescer.submit(1), coalescer.submit(-2), coalescer.submit(3), return_exceptions=True
    )

    assert results[0] == 2
    assert isinstance(results[1], ValueError)
    assert results[2] == 6
    assert recorder.groups == [[1, -2, 3], [1], [-2], [3]]


async def test_a_group_error_alone_reaches_the_lone_caller() -> None:
    async def broken(items: Sequence[int]) -> list[int | BaseException]:
        raise ConnectionError("database away")

    coalescer: Coalescer[int, int] = Coalescer(broken, name="test")

    with pytest.raises(ConnectionError):
        await coalescer.submit(1)
    # And the coalescer still works afterwards.
    recorder = Recorder()
    coalescer = Coalescer(recorder.flush, name="test")
    assert await coalescer.submit(2) == 4


async def test_a_repeated_key_waits_for_the_next_group_and_groups_are_bounded() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.flush, name="test", max_size=3, key=lambda n: n % 10)

    results = await asyncio.gather(*(coalescer.submit(n) for n in (1, 11, 2, 3, 4)))

    assert results == [2, 22, 4, 6, 8]
    assert recorder.groups == [[1, 2, 3], [11, 4]]
    assert (coalescer.groups, coalescer.items) == (2, 5)


def test_a_coalescer_serves_a_new_event_loop_after_its_first_one_ended_mid_flush() -> None:
    recorder = Recorder()
    recorder.gate.clear()  # the first loop's flush never finishes
    coalescer = Coalescer(recorder.flush, name="test")

    async def abandon() -> None:
        asyncio.get_running_loop().create_task(coalescer.submit(1))
        await recorder.entered.wait()

    first = asyncio.new_event_loop()
    first.run_until_complete(abandon())
    first.close()  # its tasks are dropped without being cancelled, as at a hard stop

    async def ask() -> int:
        recorder.gate = asyncio.Event()  # events belong to the loop they are used in
        recorder.gate.set()
        return await coalescer.submit(2)

    assert asyncio.run(ask()) == 4
