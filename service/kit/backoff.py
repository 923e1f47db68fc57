"""Exponential backoff with jitter, for every retry schedule in the service."""

from __future__ import annotations

import random


def exponential_backoff(
    attempt: int, *, base_s: float, cap_s: float, factor: float = 2.0, full_jitter: bool = True
) -> float:
    """The delay before retry number `attempt` (1 for the first retry).

    Full jitter (0 .. ceiling) spreads retries of jobs that failed together the most;
    the alternative draws from the upper half, for schedules that must not come back
    too early (webhook receivers that are down)."""
    ceiling = min(cap_s, base_s * factor ** max(attempt - 1, 0))
    return random.uniform(0 if full_jitter else ceiling / 2, ceiling)
