"""A slot kept while its worker looks before sending: renewed during, left alone after."""

from __future__ import annotations

import asyncio

from service.dispatch.lease import slot_kept
from service.providers.account import Limits
from service.ratelimit import AccountLimiter, slots_key
from service.state import State


async def lease_expiry_ms(state: State, job_id: str) -> float | None:
    score = await state.redis.zscore(slots_key("kept"), job_id)
    return None if score is None else float(score)


async def test_a_kept_slot_is_renewed_while_the_block_runs_and_not_after(state: State) -> None:
    limiter = AccountLimiter(state.redis, "kept", Limits(max_concurrent=1))
    await limiter.renew("job-1", 0.3)
    granted_until = await lease_expiry_ms(state, "job-1")
    assert granted_until is not None

    async with slot_kept(limiter, "job-1", 0.3):
        await asyncio.sleep(0.5)  # past the grant's own lease: renewed at least once
    kept_until = await lease_expiry_ms(state, "job-1")
    assert kept_until is not None
    assert kept_until > granted_until

    await asyncio.sleep(0.25)  # no renewal outlives the block
    assert await lease_expiry_ms(state, "job-1") == kept_until
