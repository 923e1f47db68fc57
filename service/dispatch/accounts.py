"""The dispatch queue and limiter of every provider account, built once per process,
with what is observed about each account: its models' latencies and its callbacks."""

from __future__ import annotations

from arq.connections import ArqRedis as Redis

from service.dispatch.callbacks import CallbackHealth
from service.dispatch.latency import Latencies
from service.dispatch.queue import DispatchQueue
from service.providers.registry import ProviderRegistry
from service.ratelimit import AccountLimiter

# A granted slot outlives the request's own timeout by this much before another worker
# may presume its holder dead.
SUBMIT_LEASE_MARGIN_S = 15.0


class Dispatch:
    def __init__(self, redis: Redis, registry: ProviderRegistry) -> None:
        self.redis = redis
        self.registry = registry
        self._queues: dict[str, DispatchQueue] = {}
        self._limiters: dict[str, AccountLimiter] = {}
        self.latencies = Latencies(redis)
        self.callbacks = CallbackHealth(redis)

    def accounts(self) -> list[str]:
        return sorted(self.registry.providers)

    def queue(self, account: str) -> DispatchQueue:
        queue = self._queues.get(account)
        if queue is None:
            lease_s = self.registry.timeout_s(account) + SUBMIT_LEASE_MARGIN_S
            queue = DispatchQueue(
                self.redis, account, self.registry.limits(account), lease_s=lease_s
            )
            self._queues[account] = queue
        return queue

    def limiter(self, account: str) -> AccountLimiter:
        limiter = self._limiters.get(account)
        if limiter is None:
            limiter = AccountLimiter(self.redis, account, self.registry.limits(account))
            self._limiters[account] = limiter
        return limiter
