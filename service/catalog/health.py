"""Each model's recent error rate and latency, shared by every process (Redis), and its
cooldown: a model failing `health.threshold` of its last `health.window` attempts is
cooled down for `health.cooldown_s`, and routes skip it (LiteLLM's cooldown, per model).

Per model, a capped list holds the outcomes of its last attempts, newest first ("1:<ms>"
a success and its latency, "0:" a failure). Recording an outcome is one script: push,
trim, and, once the window holds `min_attempts` outcomes of which `threshold` failed,
set the cooldown key (it expires by itself) and clear the window, so that the model comes
back with a clean slate. Outcomes that arrive while the model cools down (attempts that
were already under way) are not recorded, for the same reason.

Health is advice: when Redis is away, every model counts as healthy and nothing is
recorded; a warning says so.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from service.catalog.config import Health
from service.logging import get_logger
from service.providers.base import ProviderError, ProviderRateLimited

log = get_logger(__name__)

# A model nobody has used for this long starts again with no history.
KEEP_MS = 7 * 24 * 3600 * 1000

# KEYS: window list, cooldown. ARGV: entry, window, min_attempts, threshold, cooldown ms,
# keep ms. Returns -1 (cooling down: not recorded), 0 (recorded), 1 (now cooled down).
_RECORD = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('PEXPIRE', KEYS[1], ARGV[6])
local entries = redis.call('LRANGE', KEYS[1], 0, -1)
if #entries < tonumber(ARGV[3]) then return 0 end
local failures = 0
for _, entry in ipairs(entries) do
  if string.sub(entry, 1, 1) == '0' then failures = failures + 1 end
end
if failures >= tonumber(ARGV[4]) * #entries - 1e-9 then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[5])
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


# Failures that say nothing about the model: the job's own (its inputs, its parent, its
# batch's budget or cancellation, a prompt the model's content policy refused, input the
# model rejected: one caller's bad prompts must not cool a model down for everyone), the
# account's (credentials, quota) or Darkroom's (its output store). A 429 is the account
# being busy, also not the model.
NOT_THE_MODELS = frozenset(
    {
        "budget_exceeded",
        "cancelled",
        "parent_failed",
        "auth",
        "insufficient_quota",
        "content_policy",
        "invalid_input",
    }
)
NOT_THE_MODELS_PREFIXES = ("input_", "storage_")


def blames_model(error: ProviderError) -> bool:
    """Whether this failure counts against its model's health."""
    if isinstance(error, ProviderRateLimited):
        return False
    return error.code not in NOT_THE_MODELS and not error.code.startswith(NOT_THE_MODELS_PREFIXES)


def window_key(model: str) -> str:
    return f"dr:m:{{{model}}}:health"


def cooldown_key(model: str) -> str:
    return f"dr:m:{{{model}}}:cooldown"


@dataclass(frozen=True)
class ModelHealth:
    """A model's last attempts (at most `health.window` of them). Latencies are those of
    its successes: a fast refusal says nothing of how long an image takes."""

    attempts: int = 0
    failures: int = 0
    # None: no attempt recorded yet.
    error_rate: float | None = None
    latency_ms_mean: float | None = None
    latency_ms_p50: int | None = None
    latency_ms_p95: int | None = None
    # 0 when the model is not cooling down.
    cooled_down_for_s: float = 0.0

    @property
    def cooled_down(self) -> bool:
        return self.cooled_down_for_s > 0


async def record(
    redis: Redis, health: Health, model: str, *, ok: bool, latency_ms: int | None
) -> bool:
    """Count one attempt's outcome. Returns whether this outcome cooled the model down;
    False also when Redis is away (logged)."""
    entry = f"1:{latency_ms}" if ok and latency_ms is not None else ("1:" if ok else "0:")
    script = _record_script(redis)
    args: list[str | int] = [
        entry,
        health.window,
        health.min_attempts,
        repr(float(health.threshold)),
        max(1, round(health.cooldown_s * 1000)),
        KEEP_MS,
    ]
    try:
        result = await script(keys=[window_key(model), cooldown_key(model)], args=args)
    except (RedisError, OSError) as exc:
        log.warning("model_health_not_recorded", model=model, error=repr(exc))
        return False
    if result == 1:
        log.warning("model_cooled_down", model=model, cooldown_s=health.cooldown_s)
        return True
    return False


_SCRIPTS: weakref.WeakKeyDictionary[Redis, AsyncScript] = weakref.WeakKeyDictionary()


def _record_script(redis: Redis) -> AsyncScript:
    """The record script of this client, registered once (its SHA is hashed then), not
    on every outcome."""
    script = _SCRIPTS.get(redis)
    if script is None:
        script = _SCRIPTS[redis] = redis.register_script(_RECORD)
    return script


async def cooled_down(redis: Redis, models: Iterable[str]) -> dict[str, float]:
    """The models among these that are cooling down, with the seconds they have left.
    One round trip; {} when Redis is away (every model counts as healthy)."""
    names = list(dict.fromkeys(models))
    ttls = await _read(redis, names, lambda pipe, name: pipe.pttl(cooldown_key(name)))
    if ttls is None:
        return {}
    return {name: ttl / 1000 for name, ttl in zip(names, ttls, strict=True) if ttl > 0}


async def snapshot(redis: Redis, health: Health, models: Iterable[str]) -> dict[str, ModelHealth]:
    """Every model's health, read in one round trip. When Redis is away, every model
    shows no history and no cooldown (logged)."""
    names = list(dict.fromkeys(models))

    def window_and_cooldown(pipe: Pipeline, name: str) -> None:
        pipe.lrange(window_key(name), 0, health.window - 1)
        pipe.pttl(cooldown_key(name))

    replies = await _read(redis, names, window_and_cooldown)
    if replies is None:
        return {name: ModelHealth() for name in names}
    return {name: _health_of(replies[2 * n], replies[2 * n + 1]) for n, name in enumerate(names)}


async def _read(
    redis: Redis, names: Sequence[str], commands: Callable[[Pipeline, str], object]
) -> list[Any] | None:
    """The replies to `commands` queued for each model, in one round trip (none when
    there is no model); None when Redis is away (logged)."""
    if not names:
        return []
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for name in names:
                commands(pipe, name)
            return await pipe.execute()
    except (RedisError, OSError) as exc:
        log.warning("model_health_unavailable", error=repr(exc))
        return None


def _health_of(entries: Sequence[bytes | str], ttl_ms: int) -> ModelHealth:
    outcomes = [e.decode() if isinstance(e, bytes) else e for e in entries]
    failures = sum(1 for e in outcomes if e.startswith("0"))
    latencies = sorted(int(e[2:]) for e in outcomes if e.startswith("1:") and e[2:].isdigit())
    return ModelHealth(
        attempts=len(outcomes),
        failures=failures,
        error_rate=round(failures / len(outcomes), 4) if outcomes else None,
        latency_ms_mean=round(sum(latencies) / len(latencies), 1) if latencies else None,
        latency_ms_p50=_quantile(latencies, 0.5),
        latency_ms_p95=_quantile(latencies, 0.95),
        cooled_down_for_s=round(ttl_ms / 1000, 3) if ttl_ms > 0 else 0.0,
    )


def _quantile(ordered: Sequence[int], q: float) -> int | None:
    """Nearest rank: a latency some attempt really took."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
