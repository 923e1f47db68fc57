"""Fair, prioritised queues of jobs per provider account, in Redis.

Per account:
- one list of job ids per batch (a "flow"), in submission order;
- two rings of batch ids that have jobs waiting, realtime and bulk. A grant takes the
  first job of the batch at the head of the realtime ring, else of the bulk ring, and
  rotates that batch to the ring's tail: batches share the account round-robin, so a
  10-job batch submitted behind a 50,000-job batch is served within its next 20 grants;
- a sorted set of jobs waiting out a backoff, moved to the front of their flow when due;
- a set of every job id waiting here, so enqueueing is idempotent and the reconciler
  can tell which queued jobs Redis has lost.

`take` is one Lua script: it checks the account's limits (service.ratelimit), picks the
next job fairly and takes its slot, all atomically, so any number of processes on any
number of hosts can call it. `take_many` runs it several times in one call, for a
process with room for several jobs. The rate token is taken later, right before the request
leaves (AccountLimiter.wait_turn).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import cast

from arq.connections import ArqRedis as Redis
from redis.asyncio.client import Pipeline

from service.models import Priority
from service.providers.account import Limits
from service.ratelimit import admit_lua, limiter_key, now_ms, pending_key, slots_key

ENQUEUE_CHUNK = 2_000


@dataclass(frozen=True)
class AccountKeys:
    account: str

    def _key(self, name: str) -> str:
        # The braces keep an account's keys in one Redis Cluster slot.
        return f"dr:a:{{{self.account}}}:{name}"

    @property
    def flow_prefix(self) -> str:
        return self._key("flow:")

    def flow(self, batch_id: str) -> str:
        return self.flow_prefix + batch_id

    def ring(self, priority: Priority) -> str:
        return self._key(f"ring:{priority.value}")

    @property
    def delayed(self) -> str:
        return self._key("delayed")

    @property
    def waiting(self) -> str:
        return self._key("waiting")

    @property
    def limiter(self) -> str:
        return limiter_key(self.account)

    @property
    def slots(self) -> str:
        return slots_key(self.account)

    @property
    def pending(self) -> str:
        return pending_key(self.account)


# KEYS: ring, waiting, flow. ARGV: batch id, front (1/0), job ids...
_ENQUEUE = """
local added = 0
local was_empty = redis.call('LLEN', KEYS[3]) == 0
for i = 3, #ARGV do
  if redis.call('SADD', KEYS[2], ARGV[i]) == 1 then
    if ARGV[2] == '1' then redis.call('LPUSH', KEYS[3], ARGV[i])
    else redis.call('RPUSH', KEYS[3], ARGV[i]) end
    added = added + 1
  end
end
if was_empty and added > 0 then redis.call('RPUSH', KEYS[1], ARGV[1]) end
return added
"""

# KEYS: delayed, waiting. ARGV: due ms, member "<priority>|<batch>|<job>", job id.
_DELAY = """
if redis.call('SADD', KEYS[2], ARGV[3]) == 1 then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: ring realtime, ring bulk, waiting, flow, delayed. ARGV: batch id.
_PURGE = """
local jobs = redis.call('LRANGE', KEYS[4], 0, -1)
for _, member in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
  local a = string.find(member, '|', 1, true)
  local b = string.find(member, '|', a + 1, true)
  if string.sub(member, a + 1, b - 1) == ARGV[1] then
    redis.call('ZREM', KEYS[5], member)
    table.insert(jobs, string.sub(member, b + 1))
  end
end
for i = 1, #jobs, 1000 do
  redis.call('SREM', KEYS[3], unpack(jobs, i, math.min(i + 999, #jobs)))
end
redis.call('DEL', KEYS[4])
redis.call('LREM', KEYS[1], 0, ARGV[1])
redis.call('LREM', KEYS[2], 0, ARGV[1])
return #jobs
"""

# KEYS: 1 ring realtime, 2 ring bulk, 3 delayed, 4 waiting, 5 limiter, 6 slots, 7 pending.
# ARGV: now, flow prefix, configured rate (0 = none), burst, max concurrent (0 = none),
# lease ms. Returns {1, job, priority, batch, paced} or {0, reason, wait ms}.
_TAKE_HEAD = """
local now = tonumber(ARGV[1])
local prefix = ARGV[2]
local configured = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local max_conc = tonumber(ARGV[5])
local lease = tonumber(ARGV[6])
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 500)
for _, member in ipairs(due) do
  local a = string.find(member, '|', 1, true)
  local b = string.find(member, '|', a + 1, true)
  local ring = KEYS[2]
  if string.sub(member, 1, a - 1) == 'realtime' then ring = KEYS[1] end
  local batch = string.sub(member, a + 1, b - 1)
  if redis.call('LPUSH', prefix .. batch, string.sub(member, b + 1)) == 1 then
    redis.call('RPUSH', ring, batch)
  end
  redis.call('ZREM', KEYS[3], member)
end
"""

_TAKE_PICK = """
local rings = {KEYS[1], KEYS[2]}
local names = {'realtime', 'bulk'}
for r = 1, 2 do
  while true do
    local batch = redis.call('LINDEX', rings[r], 0)
    if not batch then break end
    local flow = prefix .. batch
    local job = redis.call('LPOP', flow)
    if redis.call('LLEN', flow) == 0 then
      redis.call('LPOP', rings[r])
    else
      redis.call('LMOVE', rings[r], rings[r], 'LEFT', 'RIGHT')
    end
    if job then
      redis.call('SREM', KEYS[4], job)
      COMMIT
      return {1, job, names[r], batch, paced and 1 or 0}
    end
  end
end
return {0, 'empty', 0}
"""


# ARGV[7]: how many grants to try for. Returns a list of results of one grant each, in
# order, ending at the first refusal.
_TAKE_LOOP = """
local results = {}
for _ = 1, tonumber(ARGV[7]) do
  local result = take_one()
  table.insert(results, result)
  if result[1] == 0 then break end
end
return results
"""


# KEYS: ring realtime, ring bulk, delayed. ARGV: flow prefix. Returns {realtime, bulk}:
# jobs in line (backoffs included) per priority. Read-only, for the account's status.
_QUEUED = """
local counts = {0, 0}
for r = 1, 2 do
  for _, batch in ipairs(redis.call('LRANGE', KEYS[r], 0, -1)) do
    counts[r] = counts[r] + redis.call('LLEN', ARGV[1] .. batch)
  end
end
for _, member in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  if string.sub(member, 1, 9) == 'realtime|' then counts[1] = counts[1] + 1
  else counts[2] = counts[2] + 1 end
end
return counts
"""


def _take_script() -> str:
    check, commit = admit_lua(lim=5, slots=6, pending=7)
    take_one = _TAKE_HEAD + check + _TAKE_PICK.replace("COMMIT", commit)
    return f"local function take_one()\n{take_one}\nend\n{_TAKE_LOOP}"


_TAKE = _take_script()


@dataclass(frozen=True)
class Grant:
    """A job picked for its account, holding a concurrency slot. When `paced`, it must
    take a rate token (AccountLimiter.wait_turn) right before its request goes out."""

    job_id: str
    batch_id: str
    priority: Priority
    account: str
    granted_at_ms: int
    paced: bool = False


@dataclass(frozen=True)
class Refusal:
    """Nothing to pick now: `reason` is empty, busy (every slot taken), pending (enough
    picked jobs wait for their rate token) or blocked (a 429's hint); `wait_s` is how
    long the limiter says that lasts (0: unknown, check again soon)."""

    reason: str
    wait_s: float


class DispatchQueue:
    """One account's queues and grants."""

    def __init__(self, redis: Redis, account: str, limits: Limits, *, lease_s: float) -> None:
        self.redis = redis
        self.account = account
        self.limits = limits
        self.keys = AccountKeys(account)
        self.lease_ms = int(lease_s * 1000)
        self._enqueue = redis.register_script(_ENQUEUE)
        self._delay = redis.register_script(_DELAY)
        self._purge = redis.register_script(_PURGE)
        self._take = redis.register_script(_TAKE)
        self._queued = redis.register_script(_QUEUED)

    async def enqueue(
        self,
        batch_id: str,
        job_ids: Sequence[str],
        priority: Priority,
        *,
        front: bool = False,
    ) -> int:
        """Add jobs to their batch's flow (at the front: a job that was already in line,
        sent back by a 429). Jobs already waiting are left where they are."""
        added = 0
        keys = [self.keys.ring(priority), self.keys.waiting, self.keys.flow(batch_id)]
        for start in range(0, len(job_ids), ENQUEUE_CHUNK):
            chunk = list(job_ids[start : start + ENQUEUE_CHUNK])
            added += int(
                await self._enqueue(keys=keys, args=[batch_id, "1" if front else "0", *chunk])
            )
        return added

    async def enqueue_later(
        self, batch_id: str, job_id: str, priority: Priority, *, delay_s: float
    ) -> bool:
        """Put a job back in line once its backoff is over."""
        member = f"{priority.value}|{batch_id}|{job_id}"
        due = now_ms() + int(delay_s * 1000)
        keys = [self.keys.delayed, self.keys.waiting]
        return bool(await self._delay(keys=keys, args=[due, member, job_id]))

    async def purge(self, batch_id: str) -> int:
        """Drop a cancelled batch's waiting jobs (backoffs included), so they cost no
        grants."""
        keys = [
            self.keys.ring(Priority.realtime),
            self.keys.ring(Priority.bulk),
            self.keys.waiting,
            self.keys.flow(batch_id),
            self.keys.delayed,
        ]
        return int(await self._purge(keys=keys, args=[batch_id]))

    async def take(self) -> Grant | Refusal:
        [outcome] = await self.take_many(1)
        return outcome

    async def take_many(self, count: int) -> list[Grant | Refusal]:
        """Up to `count` grants in one round trip, each picked and admitted as `take`
        would (atomically, one after the other); the list ends at the first refusal."""
        now = now_ms()
        keys = [
            self.keys.ring(Priority.realtime),
            self.keys.ring(Priority.bulk),
            self.keys.delayed,
            self.keys.waiting,
            self.keys.limiter,
            self.keys.slots,
            self.keys.pending,
        ]
        args: list[str | int | float] = [
            now,
            self.keys.flow_prefix,
            self.limits.rate_per_s or 0,
            self.limits.burst,
            self.limits.max_concurrent or 0,
            self.lease_ms,
            count,
        ]
        return [self._outcome(result, now) for result in await self._take(keys=keys, args=args)]

    def _outcome(self, result: list[bytes | int], now: int) -> Grant | Refusal:
        if int(result[0]) == 1:
            return Grant(
                job_id=_text(result[1]),
                batch_id=_text(result[3]),
                priority=Priority(_text(result[2])),
                account=self.account,
                granted_at_ms=now,
                paced=int(result[4]) == 1,
            )
        return Refusal(_text(result[1]), int(result[2]) / 1000)

    async def waiting(self, job_ids: Sequence[str]) -> list[bool]:
        """Which of these jobs are in line here (in a flow or waiting out a backoff)."""
        if not job_ids:
            return []
        flags = await cast(
            Awaitable[list[int]], self.redis.smismember(self.keys.waiting, list(job_ids))
        )
        return [bool(flag) for flag in flags]

    async def holds_slot(self, job_ids: Sequence[str]) -> list[bool]:
        """Which of these jobs hold an unexpired concurrency slot (someone works on them)."""
        if not job_ids:
            return []
        now = now_ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.zscore(self.keys.slots, job_id)
            scores = await pipe.execute()
        return [score is not None and float(score) > now for score in scores]

    async def queued_by_priority(self) -> dict[Priority, int]:
        realtime, bulk = await self._queued(keys=self._queued_keys(), args=[self.keys.flow_prefix])
        return {Priority.realtime: int(realtime), Priority.bulk: int(bulk)}

    async def queued_by_priority_in(self, pipe: Pipeline) -> None:
        """The same count, added to `pipe` (its result there: [realtime, bulk]), so that
        a reader of many accounts (the /metrics snapshot) pays one round trip for all."""
        await self._queued(keys=self._queued_keys(), args=[self.keys.flow_prefix], client=pipe)

    def _queued_keys(self) -> list[str]:
        return [self.keys.ring(Priority.realtime), self.keys.ring(Priority.bulk), self.keys.delayed]

    async def backlog(self) -> int:
        return int(await cast(Awaitable[int], self.redis.scard(self.keys.waiting)))


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
