"""How long each model really takes at its provider, and the poll schedule drawn from it.

A generation waiting at an asynchronous provider holds one of its account's concurrency
slots until Darkroom learns it finished. A poll that comes late keeps the slot idle; a
callback may never come (a private network, a firewall, a webhook outage). So polls are
timed from what each model has been seen to take, whether or not a callback was asked
for: the first where the model's completions begin (p10: with a wide spread, a first poll
at the median would leave the faster half waiting), later ones close behind while the
generation is within the observed spread, then spreading out past the slowest seen.

Observations are shared by every worker process: a capped Redis list per model (and one
per account, for its status), newest first, read through a short per-process cache so
that scheduling a poll costs no round trip most of the time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from arq.connections import ArqRedis as Redis

# Recent completions kept per model (and per account).
SAMPLES = 200
# Fewer observations than this say too little: schedule as if there were none.
MIN_SAMPLES = 5
# A profile read from Redis is reused for this long by the process that read it.
CACHE_S = 2.0
# Never poll one generation more often than this, nor wait longer than CAP_S between polls.
FLOOR_S = 0.25
CAP_S = 30.0
# With nothing observed yet: poll after 1 s, then 1.5x slower each time (as polling
# always did before latencies were kept).
UNKNOWN_FIRST_S = 1.0
UNKNOWN_GROWTH = 1.5
UNKNOWN_CAP_S = 20.0
# Within the observed spread (up to p99), the next poll comes after this fraction of the
# time already waited: the detection delay stays a few percent of the generation's own time.
TAIL_STEP = 0.1
# Past the slowest generations seen, the profile no longer predicts much: back off.
BEYOND_STEP = 0.5


def model_key(account: str, model: str) -> str:
    return f"dr:a:{{{account}}}:latency:{model}"


def account_key(account: str) -> str:
    return f"dr:a:{{{account}}}:latency"


@dataclass(frozen=True)
class Profile:
    """Quantiles (seconds) of recent submission-to-completion times."""

    p10: float
    p50: float
    p90: float
    p99: float
    samples: int


def profile_of(values: Sequence[float]) -> Profile | None:
    if len(values) < MIN_SAMPLES:
        return None
    ordered = sorted(values)

    def quantile(q: float) -> float:
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]

    return Profile(quantile(0.1), quantile(0.5), quantile(0.9), quantile(0.99), len(ordered))


def first_poll_delay_s(profile: Profile | None, *, callbacks_arriving: bool) -> float:
    """When to look first. Callbacks that are known to arrive finish most jobs before the
    tail: the first poll then waits for p90, as the safety net of the slow ones."""
    if profile is None:
        return UNKNOWN_FIRST_S
    target = profile.p90 if callbacks_arriving else profile.p10
    return min(CAP_S, max(FLOOR_S, target))


def next_poll_delay_s(profile: Profile | None, *, waited_s: float, polls: int) -> float:
    """After `polls` polls found the generation unfinished, `waited_s` after it was
    submitted: when to look again."""
    if profile is None:
        return float(min(UNKNOWN_CAP_S, UNKNOWN_FIRST_S * UNKNOWN_GROWTH ** max(polls - 1, 0)))
    step = (TAIL_STEP if waited_s < profile.p99 else BEYOND_STEP) * waited_s
    if waited_s < profile.p90 < waited_s + step:
        step = profile.p90 - waited_s  # land on the tail's landmarks rather than past them
    return min(CAP_S, max(FLOOR_S, step))


def remote_duration_s(payload: Mapping[str, Any]) -> float | None:
    """The provider's own account of how long a generation took (its created_at and
    completed_at), when it gives one. Better than the time a poll found it done: that
    is later by the poll's own delay, and a schedule fed with it would drift later."""
    created = _timestamp(payload.get("created_at"))
    completed = _timestamp(payload.get("completed_at"))
    if created is None or completed is None or completed < created:
        return None
    return completed - created


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Latencies:
    """Observed latencies of every model, shared through Redis."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._cache: dict[str, tuple[float, Profile | None]] = {}

    async def observe(self, account: str, model: str, seconds: float) -> None:
        value = f"{max(0.0, seconds):.4f}"
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in (model_key(account, model), account_key(account)):
                pipe.lpush(key, value)
                pipe.ltrim(key, 0, SAMPLES - 1)
            await pipe.execute()

    async def profile(self, account: str, model: str) -> Profile | None:
        """The model's profile, as this process last read it within CACHE_S."""
        key = model_key(account, model)
        cached = self._cache.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[0] < CACHE_S:
            return cached[1]
        profile = await self._read(key)
        self._cache[key] = (now, profile)
        return profile

    async def account_profile(self, account: str) -> Profile | None:
        """Every model of the account together, read now (for its status)."""
        return await self._read(account_key(account))

    async def _read(self, key: str) -> Profile | None:
        raw: list[bytes] = await self.redis.lrange(key, 0, SAMPLES - 1)  # type: ignore[misc]
        return profile_of([float(item) for item in raw])
