"""Keeping a granted slot while its worker is busy before the request goes out.

A grant's slot is leased for one request's timeout plus a margin: past that, its holder
counts as dead and the reconciler gives the job to another worker, which closes the live
attempt as abandoned. Work before the request that may take longer than one request
(looking through a provider's listing for a create whose answer was lost: several pages,
any of them slow) must therefore keep renewing the lease, so that a live worker is never
presumed dead while a dead one's slot still runs out on time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from redis.exceptions import RedisError

from service.logging import get_logger
from service.ratelimit import AccountLimiter

log = get_logger(__name__)


@contextlib.asynccontextmanager
async def slot_kept(limiter: AccountLimiter, job_id: str, lease_s: float) -> AsyncIterator[None]:
    """Renew the job's slot every third of its lease for as long as the block runs."""

    async def renew_until_cancelled() -> None:
        while True:
            await asyncio.sleep(lease_s / 3)
            try:
                await limiter.renew(job_id, lease_s)
            except (RedisError, OSError) as exc:  # the next renewal may get through
                log.warning("slot_renewal_failed", error=repr(exc))

    renewing = asyncio.create_task(renew_until_cancelled())
    try:
        yield
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
