"""Global limits per provider account, kept in Redis and changed only by atomic Lua.

Every worker process on every host shares them:
- rate: GCRA. One hash per account holds the theoretical arrival time (`tat`, ms); a
  grant moves it one emission interval on, and up to `burst` grants may go back to back.
- concurrency: a leased semaphore, a sorted set of holders (job ids) scored by lease
  expiry. A holder that died stops counting when its lease runs out; a live one renews.
  Holders are recorded even without a concurrency limit: a live lease is how the
  reconciler tells a job being worked on from one whose worker died.
- adaptivity (AIMD): a 429 cuts the account's effective rate (x0.7) and blocks it for
  the provider's hinted wait. The rate then climbs back additively: slowly up to the
  rate that drew the 429 (probing carefully where the limit was), then faster, up to
  the configured rate. Only a request sent after the last cut can cut again, so one
  burst of 429s from requests already in flight counts once.

The grant itself (check limits, pick the next job fairly, take a token and a slot) is
one script in service.dispatch.queue; this module holds the limiter's half of that
script and the calls that report back: release, renew, refund, rate_limited.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import cast

from arq.connections import ArqRedis as Redis

from service.providers.config import Limits

# Multiplicative decrease on a 429.
DECREASE = 0.7
# Seconds to climb back to the rate that drew the last 429.
RECOVER_S = 30.0
# Beyond that rate, the climb reaches the configured rate from zero in this many seconds.
RAMP_S = 40.0
# Pace this much under the configured rate: requests reach the provider with a few ms of
# jitter, and a limit enforced with no burst allowance turns that jitter into 429s.
HEADROOM = 0.02
# Accounts with no configured rate still slow down on 429s, from the rate observed.
UNLIMITED_RATE = 1_000_000.0


def limiter_key(account: str) -> str:
    return f"dr:a:{{{account}}}:limiter"


def slots_key(account: str) -> str:
    return f"dr:a:{{{account}}}:slots"


def now_ms() -> int:
    return int(time.time() * 1000)


# The limiter's half of the grant script. Expects KEYS[LIM] (limiter hash), KEYS[SLOTS]
# and locals: now, configured (0 = no rate limit), burst, max_conc (0 = none).
# Leaves `granted_tat` (nil when no rate limit) and may `return` a refusal
# {0, reason, wait_ms}.
LIMITER_CHECK = """
local lim = redis.call('HMGET', KEYS[LIM], 'rate', 'w_max', 'updated', 'tat', 'blocked_until')
local blocked = tonumber(lim[5]) or 0
if blocked > now then return {0, 'blocked', blocked - now} end
redis.call('ZREMRANGEBYSCORE', KEYS[SLOTS], '-inf', now)
if max_conc > 0 and redis.call('ZCARD', KEYS[SLOTS]) >= max_conc then
  return {0, 'busy', 0}
end
local ceiling = configured
if ceiling <= 0 then ceiling = UNLIMITED end
local rate = tonumber(lim[1])
local granted_tat = nil
if rate ~= nil then
  local w_max = tonumber(lim[2]) or ceiling
  local dt = math.max(0, now - (tonumber(lim[3]) or now)) / 1000
  if rate < w_max then
    rate = math.min(w_max, rate + w_max * (1 - DECREASE) / RECOVER_S * dt)
  else
    rate = rate + ceiling / RAMP_S * dt
  end
  if rate >= ceiling then
    rate = ceiling
  end
  redis.call('HSET', KEYS[LIM], 'rate', rate, 'updated', now)
  if configured <= 0 and rate >= ceiling then
    -- Recovered all the way: an unlimited account is unlimited again.
    redis.call('HDEL', KEYS[LIM], 'rate', 'w_max', 'tat')
    rate = nil
  end
elseif configured > 0 then
  rate = configured
end
if rate ~= nil then
  local interval = 1000 / (rate * (1 - HEADROOM))
  local tat = math.max(tonumber(lim[4]) or now, now)
  local tau = (burst - 1) * interval
  if tat - now > tau then return {0, 'rate', math.ceil(tat - tau - now)} end
  granted_tat = tat + interval
end
"""

# After a job was picked: take the token and the slot.
LIMITER_COMMIT = """
if granted_tat ~= nil then redis.call('HSET', KEYS[LIM], 'tat', granted_tat) end
redis.call('ZADD', KEYS[SLOTS], now + lease, job)
redis.call('HINCRBY', KEYS[LIM], 'grants', 1)
-- Grants per 1-s window: where an account with no configured rate starts after a 429.
local window = redis.call('HMGET', KEYS[LIM], 'win', 'win_n')
if now - (tonumber(window[1]) or 0) >= 1000 then
  redis.call('HSET', KEYS[LIM], 'win', now, 'win_prev', tonumber(window[2]) or 0, 'win_n', 1)
else
  redis.call('HINCRBY', KEYS[LIM], 'win_n', 1)
end
"""


def limiter_lua(lim: int, slots: int) -> tuple[str, str]:
    """The two fragments with their key positions and constants filled in."""
    constants = {
        "KEYS[LIM]": f"KEYS[{lim}]",
        "KEYS[SLOTS]": f"KEYS[{slots}]",
        "UNLIMITED": repr(UNLIMITED_RATE),
        "DECREASE": repr(DECREASE),
        "RECOVER_S": repr(RECOVER_S),
        "RAMP_S": repr(RAMP_S),
        "HEADROOM": repr(HEADROOM),
    }
    check, commit = LIMITER_CHECK, LIMITER_COMMIT
    for name, value in constants.items():
        check = check.replace(name, value)
        commit = commit.replace(name, value)
    return check, commit


# KEYS: limiter. ARGV: now, sent_at (ms), configured rate (0 = none), hint ms (0 = none).
# Returns the new effective rate (as a string) or "" when unchanged.
_RATE_LIMITED = f"""
local now = tonumber(ARGV[1])
local sent_at = tonumber(ARGV[2])
local configured = tonumber(ARGV[3])
local hint = tonumber(ARGV[4])
local lim = redis.call('HMGET', KEYS[1], 'rate', 'last_cut', 'blocked_until', 'win_prev',
  'win_n')
local result = ''
if sent_at >= (tonumber(lim[2]) or 0) then
  local rate = tonumber(lim[1])
  if rate == nil then
    if configured > 0 then
      rate = configured
    else
      rate = math.max(tonumber(lim[4]) or 0, tonumber(lim[5]) or 0, 1)
    end
  end
  local new_rate = math.max(rate * {DECREASE}, 0.05)
  redis.call('HSET', KEYS[1], 'w_max', rate, 'rate', new_rate, 'updated', now, 'last_cut', now,
    'tat', now + 1000 / new_rate)
  redis.call('HINCRBY', KEYS[1], 'cuts', 1)
  result = tostring(new_rate)
end
if hint > 0 then
  local until_ms = now + hint
  if until_ms > (tonumber(lim[3]) or 0) then
    redis.call('HSET', KEYS[1], 'blocked_until', until_ms)
  end
end
redis.call('HINCRBY', KEYS[1], 'rate_limited', 1)
return result
"""

# KEYS: limiter, slots. ARGV: now, configured rate, job id. A grant whose request was
# never sent (the job turned out to be finished, cancelled or over budget) gives its
# token and slot back.
_REFUND = f"""
local now = tonumber(ARGV[1])
local lim = redis.call('HMGET', KEYS[1], 'rate', 'tat')
local rate = tonumber(lim[1]) or tonumber(ARGV[2])
local tat = tonumber(lim[2])
if rate ~= nil and rate > 0 and tat ~= nil then
  -- The interval a grant took (see LIMITER_CHECK).
  redis.call('HSET', KEYS[1], 'tat', math.max(now, tat - 1000 / (rate * (1 - {HEADROOM}))))
end
redis.call('ZREM', KEYS[2], ARGV[3])
return 1
"""


@dataclass(frozen=True)
class LimiterSnapshot:
    """What an account's limiter looks like now (for logs, benchmarks and tests)."""

    effective_rate: float | None
    in_flight: int
    blocked_for_s: float
    grants: int
    rate_limited: int
    cuts: int


class AccountLimiter:
    """The calls a worker makes about one account after a grant."""

    def __init__(self, redis: Redis, account: str, limits: Limits) -> None:
        self.redis = redis
        self.account = account
        self.limits = limits
        self._limiter = limiter_key(account)
        self._slots = slots_key(account)
        self._rate_limited = redis.register_script(_RATE_LIMITED)
        self._refund = redis.register_script(_REFUND)

    async def release(self, job_id: str) -> None:
        """The generation finished (or never started): its slot is free at once."""
        await self.redis.zrem(self._slots, job_id)

    async def renew(self, job_id: str, lease_s: float) -> None:
        """Hold (or take back, after Redis lost it) the slot of a generation still
        running at the provider; a running generation counts whatever the limit says."""
        await self.redis.zadd(self._slots, {job_id: now_ms() + int(lease_s * 1000)})

    async def refund(self, job_id: str) -> None:
        await self._refund(
            keys=[self._limiter, self._slots],
            args=[now_ms(), self.limits.rate_per_s or 0, job_id],
        )

    async def rate_limited(self, *, sent_at_ms: int, retry_after_s: float | None) -> float | None:
        """A 429: cut the rate (once per round of requests) and honour the hint.
        Returns the new effective rate when this call cut it."""
        hint_ms = int((retry_after_s or 0) * 1000)
        result = await self._rate_limited(
            keys=[self._limiter],
            args=[now_ms(), sent_at_ms, self.limits.rate_per_s or 0, hint_ms],
        )
        text = result.decode() if isinstance(result, bytes) else str(result)
        return float(text) if text else None

    async def snapshot(self) -> LimiterSnapshot:
        fields = await cast(Awaitable[dict[bytes, bytes]], self.redis.hgetall(self._limiter))
        values = {k.decode(): v.decode() for k, v in fields.items()}
        now = now_ms()
        in_flight = await self.redis.zcount(self._slots, now, "+inf")
        rate = values.get("rate")
        return LimiterSnapshot(
            effective_rate=float(rate) if rate else self.limits.rate_per_s,
            in_flight=int(in_flight),
            blocked_for_s=max(0.0, (float(values.get("blocked_until", 0)) - now) / 1000),
            grants=int(values.get("grants", 0)),
            rate_limited=int(values.get("rate_limited", 0)),
            cuts=int(values.get("cuts", 0)),
        )
