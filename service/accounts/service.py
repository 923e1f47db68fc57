"""The live state of every provider account, read from the Redis keys that dispatch,
the limiter, the latency book and the callback record keep. Nothing here writes, and
nothing reads an account's credentials."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from redis.exceptions import RedisError

from service.accounts.schemas import (
    AccountList,
    AccountOut,
    CallbacksOut,
    LatencyOut,
    LimitsOut,
    QueuedOut,
)
from service.jobs.polls import callbacks_requested
from service.kit.errors import ServiceUnavailable
from service.models import Priority
from service.state import State


async def list_accounts(state: State) -> AccountList:
    names = state.dispatch.accounts()
    try:
        items = await asyncio.gather(*(_account(state, name) for name in names))
    except (RedisError, OSError) as exc:
        raise ServiceUnavailable("cannot read the accounts' state now; try again") from exc
    return AccountList(items=list(items))


async def _account(state: State, name: str) -> AccountOut:
    provider = state.registry.providers[name]
    limits = state.registry.limits(name)
    dispatch = state.dispatch
    snapshot = await dispatch.limiter(name).snapshot()
    queued = await dispatch.queue(name).queued_by_priority()
    profile = await dispatch.latencies.account_profile(name)
    callbacks = await dispatch.callbacks.status(name)
    last = callbacks.last_arrived_ms
    return AccountOut(
        name=name,
        kind=provider.kind,
        limits=LimitsOut(
            rate_per_s=limits.rate_per_s, burst=limits.burst, max_concurrent=limits.max_concurrent
        ),
        effective_rate_per_s=snapshot.effective_rate,
        blocked_for_s=round(snapshot.blocked_for_s, 3),
        slots_in_use=snapshot.in_flight,
        queued=QueuedOut(realtime=queued[Priority.realtime], bulk=queued[Priority.bulk]),
        latency=LatencyOut(
            p50_s=profile.p50 if profile else None,
            p90_s=profile.p90 if profile else None,
            samples=profile.samples if profile else 0,
        ),
        rate_limited_last_minute=snapshot.rate_limited_last_minute,
        callbacks=CallbacksOut(
            requested=callbacks_requested(state, provider),
            arriving=callbacks.arriving,
            missing=callbacks.missing,
            last_arrived_at=datetime.fromtimestamp(last / 1000, UTC) if last else None,
            completed_by_polls_in_a_row=callbacks.polled_in_a_row,
        ),
    )
