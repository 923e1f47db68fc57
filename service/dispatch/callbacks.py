"""Whether an account's completion callbacks actually arrive.

Asking a provider for callbacks proves nothing: the callback URL may be unreachable from
the provider (a private network, a firewall) or its webhooks may be down. So every
account keeps, in Redis (one hash, shared by every worker), how its completions came:
- each verified callback marks the callbacks as arriving;
- each generation completed by a poll while a callback was requested adds one to a run
  of such completions; a callback ends the run.
A run of MISSING_AFTER completions with no callback for at least QUIET_S marks the
callbacks missing: logged once (by whichever worker crossed the line), shown on the
account's status, and poll scheduling stops counting on them until one arrives again.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import cast

from arq.connections import ArqRedis as Redis

from service.logging import get_logger

log = get_logger(__name__)

MISSING_AFTER = 20
QUIET_S = 10.0
CACHE_S = 2.0


def callbacks_key(account: str) -> str:
    return f"dr:a:{{{account}}}:callbacks"


# KEYS: hash. ARGV: now ms. Returns 1 when this callback ended a "missing" spell.
_ARRIVED = """
local was_missing = redis.call('HGET', KEYS[1], 'missing') == '1'
redis.call('HSET', KEYS[1], 'last_ms', ARGV[1], 'run', 0, 'missing', 0)
redis.call('HINCRBY', KEYS[1], 'arrived', 1)
if was_missing then return 1 end
return 0
"""

# KEYS: hash. ARGV: now ms, missing_after, quiet ms. Returns the run length when this
# completion marked the callbacks missing, else 0.
_POLLED = """
local run = redis.call('HINCRBY', KEYS[1], 'run', 1)
redis.call('HINCRBY', KEYS[1], 'polled', 1)
if redis.call('HGET', KEYS[1], 'missing') == '1' then return 0 end
local last = tonumber(redis.call('HGET', KEYS[1], 'last_ms')) or 0
if run >= tonumber(ARGV[2]) and tonumber(ARGV[1]) - last >= tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'missing', 1, 'missing_since_ms', ARGV[1])
  return run
end
return 0
"""


@dataclass(frozen=True)
class CallbackStatus:
    arriving: bool
    missing: bool
    last_arrived_ms: int | None
    polled_in_a_row: int
    arrived: int
    completed_by_polls: int


class CallbackHealth:
    """The per-account record of callbacks requested and arrived."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._arrived = redis.register_script(_ARRIVED)
        self._polled = redis.register_script(_POLLED)
        self._cache: dict[str, tuple[float, bool]] = {}

    async def arrived(self, account: str) -> None:
        if int(await self._arrived(keys=[callbacks_key(account)], args=[_now_ms()])):
            log.info("provider_callbacks_arriving_again", account=account)
        self._cache.pop(account, None)

    async def completed_by_poll(self, account: str) -> None:
        """A generation whose callback was requested was completed by a poll."""
        run = int(
            await self._polled(
                keys=[callbacks_key(account)],
                args=[_now_ms(), MISSING_AFTER, int(QUIET_S * 1000)],
            )
        )
        if run:
            log.warning(
                "provider_callbacks_missing",
                account=account,
                reason=(
                    f"{run} generations in a row were completed by polls with no callback "
                    f"for {QUIET_S:.0f} s or more: the callback URL is likely unreachable "
                    "from the provider; polls are timed without counting on callbacks "
                    "until one arrives"
                ),
            )
            self._cache.pop(account, None)

    async def arriving(self, account: str) -> bool:
        """May scheduling count on this account's callbacks? Only once one arrived, and
        not while they are missing (read through a short per-process cache)."""
        cached = self._cache.get(account)
        now = time.monotonic()
        if cached is not None and now - cached[0] < CACHE_S:
            return cached[1]
        status = await self.status(account)
        self._cache[account] = (now, status.arriving)
        return status.arriving

    async def status(self, account: str) -> CallbackStatus:
        raw = await cast(Awaitable[dict[bytes, bytes]], self.redis.hgetall(callbacks_key(account)))
        values = {k.decode(): v.decode() for k, v in raw.items()}
        last = int(values["last_ms"]) if "last_ms" in values else None
        missing = values.get("missing") == "1"
        return CallbackStatus(
            arriving=last is not None and not missing,
            missing=missing,
            last_arrived_ms=last,
            polled_in_a_row=int(values.get("run", 0)),
            arrived=int(values.get("arrived", 0)),
            completed_by_polls=int(values.get("polled", 0)),
        )


def _now_ms() -> int:
    return int(time.time() * 1000)
