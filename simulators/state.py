"""Limits, counters and predictions of one simulator: everything `POST /_sim/reset` clears.

Everything here runs on the server's event loop only, so nothing needs a lock.

`GET /_sim/stats` returns `SimState.stats()`, counted since the last reset (or start);
control routes (`/_sim/...`) are never counted:

- `since_reset_s`: seconds since the last reset.
- `requests_total`: provider requests received (every route but `/_sim/...`).
- `requests_by_route`: the same, keyed by `"METHOD /route/{template}"`
  (`"METHOD (unmatched)"` for unknown paths).
- `status_codes`: responses sent, keyed by status code as a string; a `reset` or a `hang`
  sends no status and is not counted here (see `faults`).
- `creation_requests`: requests on the creation routes (Replicate's two POST predictions
  routes, OpenAI's POST images/generations), whatever their outcome, 401s included.
- `creations_accepted`: creations that passed auth, validation and the limits and were
  not answered with an injected 5xx: the provider did (or, for OpenAI, started) the work.
- `creations_by_provider`: `creations_accepted` split into `replicate` and `openai`.
- `creates_per_second`: accepted creations, by whole second since reset (index 0 is the
  first second); the list is as long as the last second anything was counted in.
- `rate_limited`: 429s sent (rate and concurrency limits together).
- `rate_limited_by_cause`: `{"rate": n, "concurrency": n}`.
- `rate_limited_per_second`: 429s by whole second since reset.
- `concurrency_current` / `concurrency_peak`: `{"replicate": n, "openai": n}`; Replicate
  counts predictions in starting/processing, OpenAI counts generation requests in flight
  (accepted and not yet answered, hanging ones included).
- `duplicate_submissions`: accepted creations whose (provider, model or version, input)
  had already been accepted since reset: the same job submitted twice.
- `predictions`: Replicate predictions held (created since reset).
- `predictions_by_status`: those predictions by current status (starting, processing,
  succeeded, failed, canceled, aborted).
- `cancels`: cancel requests on a known prediction (whether or not it was still running).
- `completions_per_second`: generations finished, by whole second since reset: Replicate
  predictions reaching succeeded/failed/canceled, OpenAI 200 responses sent.
- `webhooks_sent` / `webhooks_failed` / `webhook_attempts`: webhook deliveries that got a
  2xx, deliveries given up after every retry, and HTTP attempts (retries included).
- `faults`: injected faults applied, by kind (`error_500`, `error_502`, `error_503`,
  `reset`, `hang`, `malformed_json`, `huge_body`, `not_image`, and `failed_transient` /
  `failed_permanent`: predictions made to fail, see `SimConfig.prediction_failed`).
  `reset` and `hang` on a Replicate create hit after the prediction was made: it runs
  and is billed although its id never reached the client.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from simulators.config import FAULT_KINDS, SimConfig

if TYPE_CHECKING:
    from simulators.predictions import Prediction

Provider = Literal["replicate", "openai"]
PROVIDERS: tuple[Provider, ...] = ("replicate", "openai")
STATUSES = ("starting", "processing", "succeeded", "failed", "canceled", "aborted")
EPSILON = 1e-9
# Faults drawn per prediction rather than per response.
OUTCOME_FAULTS = ("not_image", "failed_transient", "failed_permanent")


@dataclass(frozen=True, slots=True)
class Rejection:
    cause: Literal["rate", "concurrency"]
    wait_s: float


@dataclass(slots=True)
class ProviderLimits:
    """One provider account: a GCRA rate limiter and the work it has in flight.

    `active` maps a work token (prediction id, or a request's token) to the monotonic
    time it is expected to finish, which is what a concurrency 429 hints at."""

    tat: float = 0.0
    active: dict[object, float] = field(default_factory=dict)
    peak: int = 0

    def rate_wait(self, now: float, config: SimConfig) -> float:
        """Seconds until a request would conform (0: it conforms now)."""
        if config.rate_per_s is None:
            return 0.0
        interval = 1.0 / config.rate_per_s
        wait = max(self.tat, now) - now - (config.burst - 1) * interval
        return wait if wait > EPSILON else 0.0

    def commit_rate(self, now: float, config: SimConfig) -> None:
        if config.rate_per_s is not None:
            self.tat = max(self.tat, now) + 1.0 / config.rate_per_s

    def start(self, token: object, deadline: float) -> None:
        self.active[token] = deadline
        self.peak = max(self.peak, len(self.active))

    def finish(self, token: object) -> None:
        self.active.pop(token, None)


class PerSecond:
    """Counts by whole second since a start time, as a list that grows on demand."""

    __slots__ = ("counts", "t0")

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.counts: list[int] = []

    def add(self, now: float) -> None:
        index = int(now - self.t0)
        if index >= len(self.counts):
            self.counts.extend([0] * (index + 1 - len(self.counts)))
        self.counts[index] += 1


class SimState:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.predictions: dict[str, Prediction] = {}
        self.reset()

    def reset(self) -> None:
        for prediction in self.predictions.values():
            prediction.cancel_timers()
        self.predictions.clear()
        # Creation order, oldest first: what GET /v1/predictions lists (newest first).
        self.created: list[Prediction] = []
        self.rng = random.Random(self.config.seed)
        self.t0 = time.monotonic()
        self.limits = {provider: ProviderLimits() for provider in PROVIDERS}
        self.seen: set[int] = set()
        self.requests: Counter[str] = Counter()
        self.status_codes: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.by_provider: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.creates = PerSecond(self.t0)
        self.throttled = PerSecond(self.t0)
        self.completions = PerSecond(self.t0)

    def configure(self, changes: dict[str, object]) -> SimConfig:
        self.config = self.config.patched(changes)
        return self.config

    # -- admission -------------------------------------------------------------------

    def admit(self, provider: Provider) -> Rejection | None:
        """Apply the rate and concurrency limits to one creation; a rejected request
        leaves the limiter as it was (strict GCRA)."""
        now = time.monotonic()
        limits, config = self.limits[provider], self.config
        wait = limits.rate_wait(now, config)
        rejection: Rejection | None = None
        if wait > 0:
            rejection = Rejection("rate", wait)
        elif config.max_concurrent is not None and len(limits.active) >= config.max_concurrent:
            soonest = min(limits.active.values(), default=now + 1.0)
            rejection = Rejection("concurrency", max(soonest - now, 0.001))
        if rejection is None:
            limits.commit_rate(now, config)
            return None
        self.counts["rate_limited"] += 1
        self.counts[f"rate_limited_{rejection.cause}"] += 1
        self.throttled.add(now)
        return rejection

    def draw_fault(self) -> str | None:
        """At most one response fault per creation, each kind drawn in turn."""
        config = self.config
        for kind in FAULT_KINDS:
            probability: float = getattr(config, kind)
            if probability > 0 and self.rng.random() < probability:
                self.faults[kind] += 1
                return kind
        return None

    def draw_not_image(self) -> bool:
        if self.config.not_image > 0 and self.rng.random() < self.config.not_image:
            self.faults["not_image"] += 1
            return True
        return False

    def draw_failure(self, transient: tuple[str, ...], permanent: tuple[str, ...]) -> str | None:
        """The error text a new prediction will fail with ("": a null error), or None."""
        config = self.config
        first = self.counts["predictions_made"] < config.failed_first
        self.counts["predictions_made"] += 1
        if not first and not (
            config.prediction_failed > 0 and self.rng.random() < config.prediction_failed
        ):
            return None
        lasting = config.failed_permanent > 0 and self.rng.random() < config.failed_permanent
        self.faults["failed_permanent" if lasting else "failed_transient"] += 1
        return self.rng.choice(permanent if lasting else transient)

    def sample_latency(self) -> float:
        return max(0.0, self.config.latency.sample(self.rng))

    # -- counting --------------------------------------------------------------------

    def count_request(self, route: str, status: int | None) -> None:
        self.requests[route] += 1
        if status is not None:
            self.status_codes[str(status)] += 1

    def count_creation_request(self) -> None:
        self.counts["creation_requests"] += 1

    def record_accepted(self, provider: Provider, model: str, payload: object) -> None:
        """Count an accepted creation and whether the same job was accepted before."""
        key = hash((provider, model, json.dumps(payload, sort_keys=True, default=str)))
        if key in self.seen:
            self.counts["duplicate_submissions"] += 1
        else:
            self.seen.add(key)
        self.counts["creations_accepted"] += 1
        self.by_provider[provider] += 1
        self.creates.add(time.monotonic())

    def record_completion(self) -> None:
        self.completions.add(time.monotonic())

    def move_status(self, old: str | None, new: str) -> None:
        if old is not None:
            self.by_status[old] -= 1
        self.by_status[new] += 1

    def stats(self) -> dict[str, Any]:
        counts = self.counts
        return {
            "since_reset_s": round(time.monotonic() - self.t0, 3),
            "requests_total": sum(self.requests.values()),
            "requests_by_route": dict(self.requests),
            "status_codes": dict(self.status_codes),
            "creation_requests": counts["creation_requests"],
            "creations_accepted": counts["creations_accepted"],
            "creations_by_provider": {p: self.by_provider[p] for p in PROVIDERS},
            "creates_per_second": list(self.creates.counts),
            "rate_limited": counts["rate_limited"],
            "rate_limited_by_cause": {
                "rate": counts["rate_limited_rate"],
                "concurrency": counts["rate_limited_concurrency"],
            },
            "rate_limited_per_second": list(self.throttled.counts),
            "concurrency_current": {p: len(self.limits[p].active) for p in PROVIDERS},
            "concurrency_peak": {p: self.limits[p].peak for p in PROVIDERS},
            "duplicate_submissions": counts["duplicate_submissions"],
            "predictions": len(self.predictions),
            "predictions_by_status": {s: self.by_status[s] for s in STATUSES},
            "cancels": counts["cancels"],
            "completions_per_second": list(self.completions.counts),
            "webhooks_sent": counts["webhooks_sent"],
            "webhooks_failed": counts["webhooks_failed"],
            "webhook_attempts": counts["webhook_attempts"],
            "faults": {kind: self.faults[kind] for kind in (*FAULT_KINDS, *OUTCOME_FAULTS)},
        }
