"""What is, read at scrape time: jobs by state and model and cost by model (Postgres,
one GROUP BY each), and per account the effective rate, slots in use, the block a 429
left and the queue depth by priority (Redis, one pipelined round trip for all accounts).

State is read rather than kept in multiprocess gauges: every process would have to keep
its own share up to date, a dead process's share would linger, and Postgres and Redis
already hold the truth. A source that does not answer in time is left out of the scrape
(`darkroom_metrics_source_up` says which); the recorded metrics are still served.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from service.logging import get_logger
from service.metrics import repository
from service.models import Priority
from service.ratelimit import now_ms
from service.state import State

log = get_logger(__name__)

SOURCE_TIMEOUT_S = 2.0

T = TypeVar("T")


@dataclass(frozen=True)
class AccountState:
    account: str
    configured_rate: float | None
    effective_rate: float | None
    max_concurrent: int | None
    slots_in_use: int
    blocked_for_s: float
    queued: dict[str, int]


@dataclass
class Snapshot:
    jobs: list[tuple[str, str, int]] = field(default_factory=list)
    cost: list[tuple[str, Decimal]] = field(default_factory=list)
    accounts: list[AccountState] = field(default_factory=list)
    task_queues: dict[str, int] = field(default_factory=dict)
    up: dict[str, bool] = field(default_factory=dict)


async def read(state: State) -> Snapshot:
    snapshot = Snapshot()
    postgres, redis = await asyncio.gather(
        _bounded(_read_postgres(state)), _bounded(_read_redis(state))
    )
    snapshot.up = {"postgres": postgres is not None, "redis": redis is not None}
    if postgres is not None:
        snapshot.jobs, snapshot.cost = postgres
    if redis is not None:
        snapshot.accounts, snapshot.task_queues = redis
    return snapshot


async def _bounded(work: Coroutine[Any, Any, T]) -> T | None:
    try:
        result: T = await asyncio.wait_for(work, SOURCE_TIMEOUT_S)
    except Exception as exc:  # a scrape never fails for a source that is away
        log.warning("metrics_source_unavailable", error=repr(exc))
        return None
    return result


async def _read_postgres(
    state: State,
) -> tuple[list[tuple[str, str, int]], list[tuple[str, Decimal]]]:
    async with state.sessionmaker() as session:
        jobs = await repository.jobs_by_state_and_model(session)
        cost = await repository.cost_by_model(session)
    return jobs, cost


async def _read_redis(state: State) -> tuple[list[AccountState], dict[str, int]]:
    names = state.dispatch.accounts()
    settings = state.settings
    cancel_queue = f"{settings.queue_name}:cancel"  # service.jobs.tasks.cancel_queue_name
    task_queues = [settings.queue_name, settings.webhook_queue_name, cancel_queue]
    now = now_ms()
    async with state.redis.pipeline(transaction=False) as pipe:
        for name in names:
            dispatch_queue = state.dispatch.queue(name)
            keys = dispatch_queue.keys
            pipe.hmget(keys.limiter, ["rate", "blocked_until"])
            pipe.zcount(keys.slots, now, "+inf")
            await dispatch_queue.queued_by_priority_in(pipe)
        for queue in task_queues:
            pipe.zcard(queue)
        results = await pipe.execute()
    accounts = []
    for index, name in enumerate(names):
        (rate, blocked), slots, (realtime, bulk) = results[index * 3 : index * 3 + 3]
        limits = state.registry.limits(name)
        accounts.append(
            AccountState(
                account=name,
                configured_rate=limits.rate_per_s,
                effective_rate=float(rate) if rate else limits.rate_per_s,
                max_concurrent=limits.max_concurrent,
                slots_in_use=int(slots),
                blocked_for_s=max(0.0, (float(blocked or 0) - now) / 1000),
                queued={Priority.realtime.value: int(realtime), Priority.bulk.value: int(bulk)},
            )
        )
    depths = results[len(names) * 3 :]
    return accounts, {queue: int(depth) for queue, depth in zip(task_queues, depths, strict=True)}


class SnapshotCollector(Collector):
    """Serves one snapshot to a registry's scrape."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot
        up = GaugeMetricFamily(
            "darkroom_metrics_source_up",
            "1 when the scrape could read this source (postgres, redis), else 0.",
            labels=["source"],
        )
        for source, ok in sorted(s.up.items()):
            up.add_metric([source], 1.0 if ok else 0.0)
        yield up
        yield from self._jobs()
        yield from self._accounts()
        tasks = GaugeMetricFamily(
            "darkroom_task_queue_depth",
            "arq tasks waiting or running (polls, deliveries, cancellations), by queue.",
            labels=["queue"],
        )
        for queue, depth in s.task_queues.items():
            tasks.add_metric([queue], depth)
        yield tasks

    def _jobs(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "darkroom_jobs", "Jobs in Postgres, by state and model.", labels=["state", "model"]
        )
        for status, model, count in self.snapshot.jobs:
            jobs.add_metric([status, model], count)
        yield jobs
        cost = CounterMetricFamily(
            "darkroom_cost_usd",
            "What the attempts cost, in USD, by model (the sum of job_attempts.cost_usd).",
            labels=["model"],
        )
        for model, total in self.snapshot.cost:
            cost.add_metric([model], float(total))
        yield cost

    def _accounts(self) -> Iterator[Metric]:
        def gauge(name: str, doc: str, labels: tuple[str, ...] = ("account",)) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=list(labels))

        effective = gauge(
            "darkroom_account_effective_rate",
            "Requests per second the account is paced at now (lower than configured after "
            "429s); absent for an account with no rate limit that has not been slowed.",
        )
        configured = gauge(
            "darkroom_account_configured_rate", "The account's configured rate_per_s."
        )
        slots = gauge(
            "darkroom_account_slots_in_use", "Concurrency slots held (requests in flight)."
        )
        slot_limit = gauge("darkroom_account_max_concurrent", "The account's max_concurrent.")
        blocked = gauge(
            "darkroom_account_blocked_seconds", "How long a 429's hint still blocks the account."
        )
        queued = gauge(
            "darkroom_queue_depth",
            "Jobs in line at the account (backoffs included), by priority.",
            ("account", "priority"),
        )
        for a in self.snapshot.accounts:
            if a.effective_rate is not None:
                effective.add_metric([a.account], a.effective_rate)
            if a.configured_rate is not None:
                configured.add_metric([a.account], a.configured_rate)
            if a.max_concurrent is not None:
                slot_limit.add_metric([a.account], a.max_concurrent)
            slots.add_metric([a.account], a.slots_in_use)
            blocked.add_metric([a.account], a.blocked_for_s)
            for priority, depth in a.queued.items():
                queued.add_metric([a.account, priority], depth)
        yield from (effective, configured, slots, slot_limit, blocked, queued)
