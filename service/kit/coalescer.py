"""Group commit for one process: calls that arrive together share one round trip.

Each caller awaits `submit(item)` and gets its own result or its own exception, as if it
had run alone. Underneath, items that arrive while a flush is in flight (or in the same
turn of the event loop) are handed to the flush function together, so a worker running
16 jobs pays for one transaction where it paid for 16. Under light load nothing waits:
a lone item is flushed on the next turn of the loop.

A group that fails as a whole is retried item by item (each alone, all at once), so one
bad item (or a deadlock between two groups) costs its own caller an exception and nobody
else anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

from service.logging import get_logger

log = get_logger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# Results of a flush, one per item in order: a value, or the exception for that caller.
Flush = Callable[[Sequence[T]], Awaitable[Sequence[R | BaseException]]]


class Coalescer(Generic[T, R]):
    """`flush` receives at most `max_size` items, never two with the same `key`: an item
    that repeats a key waits for the next group, so each group sees every key once."""

    def __init__(
        self,
        flush: Flush[T, R],
        *,
        name: str,
        max_size: int = 200,
        key: Callable[[T], Hashable] | None = None,
    ) -> None:
        self._flush = flush
        self._name = name
        self._max_size = max_size
        self._key = key
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._runner: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.groups = 0
        self.items = 0

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a loop that ended took its runner and callers along
            self._loop, self._runner, self._waiting = loop, None, []
        future: asyncio.Future[R] = loop.create_future()
        self._waiting.append((item, future))
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name=f"coalescer:{self._name}")
        # A cancelled caller leaves its item in the group: the flush runs anyway, and
        # its result (a claimed attempt, say) is repaired as a lost worker's would be.
        return await asyncio.shield(future)

    async def _run(self) -> None:
        try:
            while self._waiting:
                await asyncio.sleep(0)  # callers of this same turn join the group
                group = self._take_group()
                await self._flush_group(group)
        finally:
            self._runner = None
            # A cancelled runner (the loop shutting down) must not strand anyone.
            for _, future in self._waiting:
                if not future.done():
                    future.set_exception(RuntimeError(f"{self._name} coalescer stopped"))
            self._waiting.clear()

    def _take_group(self) -> list[tuple[T, asyncio.Future[R]]]:
        group: list[tuple[T, asyncio.Future[R]]] = []
        later: list[tuple[T, asyncio.Future[R]]] = []
        seen: set[Hashable] = set()
        for entry in self._waiting:
            key = self._key(entry[0]) if self._key is not None else None
            if len(group) >= self._max_size or (key is not None and key in seen):
                later.append(entry)
                continue
            if key is not None:
                seen.add(key)
            group.append(entry)
        self._waiting = later
        return group

    async def _flush_group(self, group: list[tuple[T, asyncio.Future[R]]]) -> None:
        self.groups += 1
        self.items += len(group)
        items = [item for item, _ in group]
        try:
            results = await self._flush(items)
            if len(results) != len(items):
                raise RuntimeError(f"{self._name}: {len(results)} results for {len(items)} items")
        except Exception as exc:
            if len(group) == 1:
                _settle(group[0][1], exc)
                return
            log.warning(
                "coalesced_group_failed", group=self._name, size=len(group), error=repr(exc)
            )
            # At once, not in turn: if the database is away, every caller hears so after
            # one timeout, not after one per item.
            await asyncio.gather(*(self._flush_group([entry]) for entry in group))
            return
        for (_, future), result in zip(group, results, strict=True):
            _settle(future, result)


def _settle(future: asyncio.Future[R], result: R | BaseException) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
