"""Fair delivery across endpoints: a few leased slots per endpoint, and a parked line
for the rest, both in Redis.

arq has one FIFO per queue and a fixed number of tasks per worker. If every event for a
slow endpoint took an arq task while it waited for its turn (or worse, while it waited
on the receiver), 1,000 events for one receiver that trickles its answer would fill
every worker slot and another key's webhook would wait minutes. So:
- a delivery first takes one of its endpoint's slots (at most `webhook_endpoint_slots`
  in flight, 1 while it is failing), a leased holder like the provider accounts' slots;
- a delivery that finds its endpoint full parks its event id in the endpoint's parked
  line and ends its arq task at once: waiting costs no worker slot;
- a delivery that finishes hands its slot straight to the head of the parked line (the
  slot is reserved for that event, so a newcomer cannot take it) and enqueues it.

Acquire-or-park and release-and-hand-over are each one script, so an event is never
parked just after the last holder looked and found the line empty. Redis may lose all
of this: the reconciler re-parks pending events it finds nowhere and pumps endpoints
whose slots were left free (`tasks.reconcile_webhooks`).

Keys share the hash tag `{<endpoint id>}` so each script touches one Cluster slot.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Literal, cast

from arq.connections import ArqRedis

Grant = Literal["granted", "parked", "running"]

# KEYS: slots, parked. ARGV: now ms, lease ms, limit, event id, due ms, handed (0|1).
# `handed`: the event was given a slot reserved by a finishing delivery.
_ACQUIRE = """
local now, lease, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local event = ARGV[4]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], event) then
  if ARGV[6] == '1' then
    redis.call('ZADD', KEYS[1], now + lease, event)
    return 'granted'
  end
  return 'running'
end
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now + lease, event)
  redis.call('ZREM', KEYS[2], event)
  return 'granted'
end
redis.call('ZADD', KEYS[2], 'NX', ARGV[5], event)
return 'parked'
"""

# KEYS: slots, parked. ARGV: now ms, lease ms, limit, event id ('' for none).
# Frees the event's slot and reserves free slots for the head of the parked line.
_RELEASE = """
local now, lease, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if ARGV[4] ~= '' then redis.call('ZREM', KEYS[1], ARGV[4]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local handed = {}
while redis.call('ZCARD', KEYS[1]) < limit do
  local head = redis.call('ZPOPMIN', KEYS[2])
  if #head == 0 then break end
  redis.call('ZADD', KEYS[1], now + lease, head[1])
  handed[#handed + 1] = head[1]
end
return handed
"""


def slots_key(endpoint_id: uuid.UUID | str) -> str:
    return f"dr:wh:{{{endpoint_id}}}:slots"


def parked_key(endpoint_id: uuid.UUID | str) -> str:
    return f"dr:wh:{{{endpoint_id}}}:parked"


def now_ms() -> int:
    return int(time.time() * 1000)


class EndpointSlots:
    """The endpoint slot calls a delivery makes; one per process (scripts are cached)."""

    def __init__(self, redis: ArqRedis, *, lease_s: float) -> None:
        self.redis = redis
        self.lease_ms = int(lease_s * 1000)
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)

    def _keys(self, endpoint_id: uuid.UUID) -> list[str]:
        return [slots_key(endpoint_id), parked_key(endpoint_id)]

    async def acquire(
        self, endpoint_id: uuid.UUID, event_id: str, *, limit: int, due_ms: int, handed: bool
    ) -> Grant:
        args: list[str | int] = [now_ms(), self.lease_ms, limit, event_id, due_ms, int(handed)]
        result = await self._acquire(keys=self._keys(endpoint_id), args=args)
        return cast(Grant, _text(result))

    async def release(
        self, endpoint_id: uuid.UUID, event_id: str | None, *, limit: int
    ) -> list[str]:
        """Free the event's slot (if any); returns the parked events now holding a slot,
        which the caller must enqueue."""
        args: list[str | int] = [now_ms(), self.lease_ms, limit, event_id or ""]
        handed = await self._release(keys=self._keys(endpoint_id), args=args)
        return [_text(item) for item in handed]

    async def park(self, endpoint_id: uuid.UUID, events: Sequence[tuple[str, int]]) -> None:
        """Put events (id, due ms) in the parked line, keeping any that already are."""
        if events:
            mapping = {event_id: due for event_id, due in events}
            await self.redis.zadd(parked_key(endpoint_id), mapping, nx=True)

    async def whereabouts(
        self, endpoint_id: uuid.UUID, event_ids: Sequence[str]
    ) -> tuple[set[str], set[str]]:
        """Which of these events are parked, and which hold a live slot."""
        now = now_ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            for event_id in event_ids:
                pipe.zscore(parked_key(endpoint_id), event_id)
                pipe.zscore(slots_key(endpoint_id), event_id)
            scores = await pipe.execute()
        parked: set[str] = set()
        held: set[str] = set()
        for i, event_id in enumerate(event_ids):
            if scores[2 * i] is not None:
                parked.add(event_id)
            lease = scores[2 * i + 1]
            if lease is not None and float(lease) > now:
                held.add(event_id)
        return parked, held

    async def in_flight(self, endpoint_id: uuid.UUID) -> int:
        return int(await self.redis.zcount(slots_key(endpoint_id), now_ms(), "+inf"))

    async def parked_count(self, endpoint_id: uuid.UUID) -> int:
        return int(await self.redis.zcard(parked_key(endpoint_id)))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
