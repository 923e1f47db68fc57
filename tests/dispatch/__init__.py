"""Tests of the dispatch queue, the account limiter and the dispatcher loop, on a real Redis.

`Clock` stands in for the wall clock that the queue and limiter read (`now_ms`), so the
GCRA and AIMD arithmetic can be checked exactly, without sleeping or timing anything.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import cast

import pytest
from arq.connections import ArqRedis

import service.dispatch.queue as queue_module
import service.ratelimit as ratelimit_module
from service.dispatch.queue import DispatchQueue, Grant, Refusal


@dataclass
class Clock:
    ms: int

    def __call__(self) -> int:
        return self.ms

    def advance(self, seconds: float) -> None:
        self.ms += round(seconds * 1000)


def install_clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Freeze the time both modules read; tests move it on with `advance`."""
    clock = Clock(ratelimit_module.now_ms())
    monkeypatch.setattr(queue_module, "now_ms", clock)
    monkeypatch.setattr(ratelimit_module, "now_ms", clock)
    return clock


def granted(outcome: Grant | Refusal) -> Grant:
    assert isinstance(outcome, Grant), outcome
    return outcome


def refused(outcome: Grant | Refusal, reason: str) -> Refusal:
    assert isinstance(outcome, Refusal), outcome
    assert outcome.reason == reason, outcome
    return outcome


async def take_all(queue: DispatchQueue) -> list[Grant]:
    """Take until the queue says it is empty (no limits expected to refuse)."""
    grants: list[Grant] = []
    while True:
        outcome = await queue.take()
        if isinstance(outcome, Refusal):
            assert outcome.reason == "empty", outcome
            return grants
        grants.append(outcome)


async def ring_of(redis: ArqRedis, key: str) -> list[str]:
    """The batch ids in a ring, head first."""
    items = await cast(Awaitable[list[bytes]], redis.lrange(key, 0, -1))
    return [item.decode() for item in items]


async def hash_float(redis: ArqRedis, key: str, name: str) -> float | None:
    value = await cast(Awaitable[bytes | None], redis.hget(key, name))
    return None if value is None else float(value)
