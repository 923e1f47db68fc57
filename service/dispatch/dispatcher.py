"""The loop in every worker process that turns grants into provider requests.

One loop per provider account asks the account's queue for a grant (service.dispatch.
queue.take: limits checked, next job picked fairly, token and slot taken, atomically) and
runs the granted job as a task of this process. Refused, it sleeps as long as the limiter
says (or a few ms when a slot or a place may free up any moment).

`worker_concurrency` bounds the provider requests in flight in this process; other
processes take the grants this one cannot.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from redis.exceptions import RedisError

from service.dispatch.queue import Grant, Refusal
from service.logging import get_logger
from service.state import State

log = get_logger(__name__)

RunGrant = Callable[[State, Grant], Awaitable[None]]

# How soon to ask again when: no job waits; every slot is taken (a slot is freed by a
# completion anywhere, with no signal here); the rate limiter gave no wait.
IDLE_POLL_S = 0.1
BUSY_POLL_S = 0.01
MAX_WAIT_S = 1.0
REDIS_DOWN_WAIT_S = 1.0
# Grants asked for in one round trip when this process has room for several requests:
# enough to make a burst of completions cheap, few enough that one account's loop does
# not take every free place before another account's loop looks.
MAX_GRANTS_AT_ONCE = 8


class Dispatcher:
    def __init__(self, state: State, run_grant: RunGrant, *, concurrency: int) -> None:
        self.state = state
        self.run_grant = run_grant
        self.capacity = asyncio.Semaphore(concurrency)
        self.running: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for account in self.state.dispatch.accounts():
            self._loops.append(asyncio.create_task(self._loop(account), name=f"dispatch:{account}"))

    @property
    def busy(self) -> bool:
        return bool(self.running)

    async def stop(self, *, grace_s: float = 30.0) -> None:
        """Stop taking grants, give running requests `grace_s` to finish, then cancel them
        (their slots' leases run out and the reconciler puts the jobs back in line)."""
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops.clear()
        if self.running:
            _, pending = await asyncio.wait(set(self.running), timeout=grace_s)
            for task in pending:
                # Its job runs again elsewhere: a synchronous request is sent again.
                log.warning("job_request_cut", job_id=task.get_name().removeprefix("job:"))
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _loop(self, account: str) -> None:
        queue = self.state.dispatch.queue(account)
        while True:
            room = await self._reserve()
            try:
                outcomes = await queue.take_many(room)
            except (RedisError, OSError) as exc:
                self._give_back(room)
                log.warning("dispatch_redis_unavailable", account=account, error=repr(exc))
                await asyncio.sleep(REDIS_DOWN_WAIT_S)
                continue
            grants = [outcome for outcome in outcomes if isinstance(outcome, Grant)]
            for grant in grants:
                task = asyncio.create_task(self._run(grant), name=f"job:{grant.job_id}")
                self.running.add(task)
                task.add_done_callback(self.running.discard)
            self._give_back(room - len(grants))
            refusal = outcomes[-1]
            if isinstance(refusal, Refusal) and not grants:
                await asyncio.sleep(wait_after(refusal))

    async def _reserve(self) -> int:
        """Wait for room for one request, then take whatever more is free right now (up
        to MAX_GRANTS_AT_ONCE): their grants come in one round trip."""
        await self.capacity.acquire()
        room = 1
        while room < MAX_GRANTS_AT_ONCE and not self.capacity.locked():
            await self.capacity.acquire()  # free: returns at once
            room += 1
        return room

    def _give_back(self, room: int) -> None:
        for _ in range(room):
            self.capacity.release()

    async def _run(self, grant: Grant) -> None:
        try:
            await self.run_grant(self.state, grant)
        finally:
            self.capacity.release()


def wait_after(refusal: Refusal) -> float:
    if refusal.reason == "empty":
        return IDLE_POLL_S
    if refusal.reason in ("busy", "pending") or refusal.wait_s <= 0:
        return BUSY_POLL_S
    return min(refusal.wait_s, MAX_WAIT_S)


@contextlib.asynccontextmanager
async def running_dispatcher(
    state: State, run_grant: RunGrant, *, concurrency: int
) -> AsyncIterator[Dispatcher]:
    dispatcher = Dispatcher(state, run_grant, concurrency=concurrency)
    dispatcher.start()
    try:
        yield dispatcher
    finally:
        await dispatcher.stop()
