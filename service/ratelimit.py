"""Global limits per provider account, kept in Redis and changed only by atomic Lua.

Every worker process on every host shares them:
- concurrency: a leased semaphore, a sorted set of holders (job ids) scored by lease
  expiry. A holder that died stops counting when its lease runs out; a live one renews.
  Holders are recorded even without a concurrency limit: a live lease is how the
  reconciler tells a job being worked on from one whose worker died.
- rate: GCRA. One hash per account holds the theoretical arrival time (`tat`, ms); each
  request moves it one emission interval on, and up to `burst` may go back to back.
- adaptivity (AIMD): a 429 cuts the account's effective rate (x0.7) and blocks it for
  the provider's hinted wait. A lone 429 on a request the account's own pacing sent on
  time at its configured rate, with a short hint or none, is most likely arrival jitter
  (a request a few ms early at a provider that allows no burst): it blocks for its hint
  but keeps the rate; a second within LONE_WINDOW_MS cuts, so a provider that really
  lowered its limit is followed down within its first few 429s. Below the configured
  rate (cut, climbing back) a 429 says where the limit is: it cuts at once. The rate
  then climbs back additively: slowly up to the rate that drew the 429 (probing
  carefully where the limit was), then faster, up to the configured rate. Only a request
  sent after the last cut can cut again, so one burst of 429s from requests already in
  flight counts once.

A job goes out in two steps. The grant (service.dispatch.queue.take: one script) picks
the next job fairly and takes its concurrency slot; on a rate-limited account it also
holds one of a few "picked, not yet sent" places, so grants run only just ahead of
sends and a realtime job never waits behind a pile of picked bulk jobs. Then, right
before its HTTP request, the job takes its rate token (`wait_turn`). The token is timed
by the moment the request really leaves, not by the grant: the database work between
the two varies by milliseconds, and a provider that enforces its rate with no burst
allowance turns any such jitter into 429s.

This module holds the limiter's half of the grant script and the calls a worker makes
around a request: wait_turn, release, renew, refund, rate_limited.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import cast

from arq.connections import ArqRedis as Redis

from service.kit.coalescer import Coalescer
from service.providers.account import Limits

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
# Check again at least this often while waiting for a turn (a 429 may block the account).
MAX_TURN_WAIT_S = 1.0
# A lone 429 on an account paced at its configured rate, with a hint of at most
# LONE_HINT_MS (or none), is taken as arrival jitter: its hint is honoured, the rate
# kept. Another within LONE_WINDOW_MS cuts.
LONE_HINT_MS = 1_000
LONE_WINDOW_MS = 10_000
# 429s are counted over this window for the account's status.
RECENT_MS = 60_000


def limiter_key(account: str) -> str:
    return f"dr:a:{{{account}}}:limiter"


def slots_key(account: str) -> str:
    return f"dr:a:{{{account}}}:slots"


def pending_key(account: str) -> str:
    return f"dr:a:{{{account}}}:pending"


def recent_429s_key(account: str) -> str:
    return f"dr:a:{{{account}}}:429s"


def now_ms() -> int:
    return int(time.time() * 1000)


# How long a picked job may take to be sent before its place counts as free again
# (its worker died in between).
PENDING_LEASE_MS = 30_000

# The limiter's half of the grant script. Expects KEYS[LIM] (limiter hash), KEYS[SLOTS],
# KEYS[PENDING] and locals: now, configured (0 = no rate limit), burst, max_conc
# (0 = none). Sets `paced` (the job must take a rate token before it is sent) or
# `return`s a refusal {0, reason, wait_ms}.
ADMIT_CHECK = """
local lim = redis.call('HMGET', KEYS[LIM], 'blocked_until', 'rate')
local blocked = tonumber(lim[1]) or 0
if blocked > now then return {0, 'blocked', blocked - now} end
redis.call('ZREMRANGEBYSCORE', KEYS[SLOTS], '-inf', now)
if max_conc > 0 and redis.call('ZCARD', KEYS[SLOTS]) >= max_conc then
  return {0, 'busy', 0}
end
local rate = tonumber(lim[2]) or configured
local paced = rate > 0
if paced then
  redis.call('ZREMRANGEBYSCORE', KEYS[PENDING], '-inf', now)
  local places = math.max(2, burst, math.ceil(rate * 0.1))
  if redis.call('ZCARD', KEYS[PENDING]) >= places then return {0, 'pending', 0} end
end
"""

# After a job was picked: take its slot (and its place in line for a rate token).
ADMIT_COMMIT = """
redis.call('ZADD', KEYS[SLOTS], now + lease, job)
if paced then redis.call('ZADD', KEYS[PENDING], now + PENDING_LEASE_MS, job) end
redis.call('HINCRBY', KEYS[LIM], 'grants', 1)
-- Grants per 1-s window: where an account with no configured rate starts after a 429.
local window = redis.call('HMGET', KEYS[LIM], 'win', 'win_n')
if now - (tonumber(window[1]) or 0) >= 1000 then
  redis.call('HSET', KEYS[LIM], 'win', now, 'win_prev', tonumber(window[2]) or 0, 'win_n', 1)
else
  redis.call('HINCRBY', KEYS[LIM], 'win_n', 1)
end
"""


def admit_lua(lim: int, slots: int, pending: int) -> tuple[str, str]:
    """The two fragments with their key positions and constants filled in."""
    constants = {
        "KEYS[LIM]": f"KEYS[{lim}]",
        "KEYS[SLOTS]": f"KEYS[{slots}]",
        "KEYS[PENDING]": f"KEYS[{pending}]",
        "PENDING_LEASE_MS": str(PENDING_LEASE_MS),
    }
    check, commit = ADMIT_CHECK, ADMIT_COMMIT
    for name, value in constants.items():
        check = check.replace(name, value)
        commit = commit.replace(name, value)
    return check, commit


# KEYS: limiter, pending. ARGV: now, configured rate (0 = none), burst, job id.
# Returns 0 when the job may be sent now (its token taken), else ms to wait.
_WAIT_TURN = f"""
local now = tonumber(ARGV[1])
local configured = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local lim = redis.call('HMGET', KEYS[1], 'rate', 'w_max', 'updated', 'tat', 'blocked_until')
local blocked = tonumber(lim[5]) or 0
if blocked > now then return math.ceil(blocked - now) end
local ceiling = configured
if ceiling <= 0 then ceiling = {UNLIMITED_RATE} end
local rate = tonumber(lim[1])
if rate ~= nil then
  local w_max = tonumber(lim[2]) or ceiling
  local dt = math.max(0, now - (tonumber(lim[3]) or now)) / 1000
  if rate < w_max then
    rate = math.min(w_max, rate + w_max * (1 - {DECREASE}) / {RECOVER_S} * dt)
  else
    rate = rate + ceiling / {RAMP_S} * dt
  end
  if rate >= ceiling then rate = ceiling end
  redis.call('HSET', KEYS[1], 'rate', rate, 'updated', now)
  if configured <= 0 and rate >= ceiling then
    -- Recovered all the way: an unlimited account is unlimited again.
    redis.call('HDEL', KEYS[1], 'rate', 'w_max', 'tat')
    rate = nil
  end
elseif configured > 0 then
  rate = configured
end
if rate ~= nil then
  local interval = 1000 / (rate * (1 - {HEADROOM}))
  local tat = math.max(tonumber(lim[4]) or now, now)
  local tau = (burst - 1) * interval
  if tat - now > tau then return math.ceil(tat - tau - now) end
  redis.call('HSET', KEYS[1], 'tat', tat + interval)
end
redis.call('ZREM', KEYS[2], ARGV[4])
return 0
"""

# KEYS: limiter, recent 429s. ARGV: now, sent_at (ms), configured rate (0 = none), hint
# ms (0 = none), a unique member for the recent 429s. Returns the new effective rate (as
# a string), "lone" when the 429 was forgiven, or "" when the rate is unchanged.
_RATE_LIMITED = f"""
local now = tonumber(ARGV[1])
local sent_at = tonumber(ARGV[2])
local configured = tonumber(ARGV[3])
local hint = tonumber(ARGV[4])
local lim = redis.call('HMGET', KEYS[1], 'rate', 'last_cut', 'blocked_until', 'win_prev',
  'win_n', 'lone_at')
local result = ''
if sent_at >= (tonumber(lim[2]) or 0) then
  local lone_at = tonumber(lim[6])
  local at_configured = tonumber(lim[1]) == nil or tonumber(lim[1]) >= configured
  if configured > 0 and at_configured and hint <= {LONE_HINT_MS}
      and (lone_at == nil or now - lone_at > {LONE_WINDOW_MS}) then
    redis.call('HSET', KEYS[1], 'lone_at', now)
    redis.call('HINCRBY', KEYS[1], 'forgiven', 1)
    result = 'lone'
  else
    local rate = tonumber(lim[1])
    if rate == nil then
      if configured > 0 then
        rate = configured
      else
        rate = math.max(tonumber(lim[4]) or 0, tonumber(lim[5]) or 0, 1)
      end
    end
    local new_rate = math.max(rate * {DECREASE}, 0.05)
    redis.call('HSET', KEYS[1], 'w_max', rate, 'rate', new_rate, 'updated', now,
      'last_cut', now, 'tat', now + 1000 / new_rate)
    redis.call('HINCRBY', KEYS[1], 'cuts', 1)
    result = tostring(new_rate)
  end
end
if hint > 0 then
  local until_ms = now + hint
  if until_ms > (tonumber(lim[3]) or 0) then
    redis.call('HSET', KEYS[1], 'blocked_until', until_ms)
  end
end
redis.call('HINCRBY', KEYS[1], 'rate_limited', 1)
redis.call('ZADD', KEYS[2], now, ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - {RECENT_MS})
return result
"""

# KEYS: limiter. ARGV: sent at (ms), configured rate (0 = none). The request whose turn
# was granted left at `sent at`, later than the grant by however long its process took
# to get to it: the next turn is one interval after that, not after the grant.
_SENT = f"""
local lim = redis.call('HMGET', KEYS[1], 'rate', 'tat')
local rate = tonumber(lim[1]) or tonumber(ARGV[2])
if rate == nil or rate <= 0 then return 0 end
local due = tonumber(ARGV[1]) + 1000 / (rate * (1 - {HEADROOM}))
if due > (tonumber(lim[2]) or 0) then redis.call('HSET', KEYS[1], 'tat', due) end
return 1
"""

# KEYS: slots, pending. ARGV: job id. A grant whose request was never sent (the job
# turned out to be finished, cancelled or over budget) gives its slot and place back; it
# took no rate token yet.
_REFUND = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
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
    forgiven: int = 0
    rate_limited_last_minute: int = 0


class AccountLimiter:
    """The calls a worker makes about one account after a grant."""

    def __init__(self, redis: Redis, account: str, limits: Limits) -> None:
        self.redis = redis
        self.account = account
        self.limits = limits
        self._limiter = limiter_key(account)
        self._slots = slots_key(account)
        self._pending = pending_key(account)
        self._recent_429s = recent_429s_key(account)
        self._wait_turn = redis.register_script(_WAIT_TURN)
        self._sent = redis.register_script(_SENT)
        self._rate_limited = redis.register_script(_RATE_LIMITED)
        self._refund = redis.register_script(_REFUND)
        self._releases = Coalescer(self._release_group, name=f"slot_releases:{account}")

    async def wait_turn(self, job_id: str) -> None:
        """Take the job's rate token, waiting as long as the limiter says: call it right
        before the request goes out, so the token is timed by the real send."""
        while (wait_s := await self.try_turn(job_id)) > 0:
            await asyncio.sleep(min(wait_s, MAX_TURN_WAIT_S))

    async def sent(self, sent_at_ms: int) -> None:
        """The request of a turn just left (see _SENT)."""
        await self._sent(keys=[self._limiter], args=[sent_at_ms, self.limits.rate_per_s or 0])

    async def try_turn(self, job_id: str) -> float:
        """Take the job's rate token if it is due: 0.0, else the seconds until it is."""
        wait_ms = await self._wait_turn(
            keys=[self._limiter, self._pending],
            args=[now_ms(), self.limits.rate_per_s or 0, self.limits.burst, job_id],
        )
        return int(wait_ms) / 1000

    async def release(self, job_id: str) -> None:
        """The generation finished (or never started): its slot is free at once (with
        the slots of the other generations of this process that finished meanwhile, in
        one call)."""
        await self._releases.submit(job_id)

    async def _release_group(self, job_ids: Sequence[str]) -> list[None]:
        await self.redis.zrem(self._slots, *job_ids)
        return [None] * len(job_ids)

    async def renew(self, job_id: str, lease_s: float) -> None:
        """Hold (or take back, after Redis lost it) the slot of a generation still
        running at the provider; a running generation counts whatever the limit says."""
        await self.redis.zadd(self._slots, {job_id: now_ms() + int(lease_s * 1000)})

    async def refund(self, job_id: str) -> None:
        await self._refund(keys=[self._slots, self._pending], args=[job_id])

    async def rate_limited(self, *, sent_at_ms: int, retry_after_s: float | None) -> float | None:
        """A 429: honour the hint, and cut the rate (once per round of requests) unless
        it is a lone one on a paced account. Returns the new effective rate when this
        call cut it."""
        hint_ms = int((retry_after_s or 0) * 1000)
        now = now_ms()
        result = await self._rate_limited(
            keys=[self._limiter, self._recent_429s],
            args=[now, sent_at_ms, self.limits.rate_per_s or 0, hint_ms, f"{now}:{uuid.uuid4()}"],
        )
        text = result.decode() if isinstance(result, bytes) else str(result)
        return float(text) if text and text != "lone" else None

    async def snapshot(self) -> LimiterSnapshot:
        fields = await cast(Awaitable[dict[bytes, bytes]], self.redis.hgetall(self._limiter))
        values = {k.decode(): v.decode() for k, v in fields.items()}
        now = now_ms()
        in_flight = await self.redis.zcount(self._slots, now, "+inf")
        rate = values.get("rate")
        recent = await self.redis.zcount(self._recent_429s, now - RECENT_MS, "+inf")
        return LimiterSnapshot(
            effective_rate=float(rate) if rate else self.limits.rate_per_s,
            in_flight=int(in_flight),
            blocked_for_s=max(0.0, (float(values.get("blocked_until", 0)) - now) / 1000),
            grants=int(values.get("grants", 0)),
            rate_limited=int(values.get("rate_limited", 0)),
            cuts=int(values.get("cuts", 0)),
            forgiven=int(values.get("forgiven", 0)),
            rate_limited_last_minute=int(recent),
        )
