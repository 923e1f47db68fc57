"""The metrics recorded where things happen: each call site is one line.

Label values are bounded: routes are templates ("/v1/batches/{batch_id}", never a raw
path), accounts and sinks come from the configuration, outcomes and methods from short
fixed lists. Buckets are few: every series is a line in every process's file, and a
scrape reads and sums them all (bench/metrics_scrape.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Histogram

from service.providers.base import (
    ProviderPermanentError,
    ProviderRateLimited,
    ProviderRetryableError,
)

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PROVIDER_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
WAIT_BUCKETS = (0.005, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0, 30.0)
DELIVERY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

http_requests = Histogram(
    "darkroom_http_request_duration_seconds",
    "HTTP requests served, by route template, method and status.",
    ["route", "method", "status"],
    buckets=HTTP_BUCKETS,
)
provider_requests = Histogram(
    "darkroom_provider_request_duration_seconds",
    "Requests to provider accounts (generate, submit, poll), by account, operation and "
    "outcome (ok, rate_limited, retryable, permanent, error).",
    ["account", "operation", "outcome"],
    buckets=PROVIDER_BUCKETS,
)
rate_limited = Counter(
    "darkroom_provider_rate_limited",
    "429s answered by provider accounts.",
    ["account"],
)
limiter_wait = Histogram(
    "darkroom_limiter_wait_seconds",
    "How long a granted job waited for its account's rate token before its request left.",
    ["account"],
    buckets=WAIT_BUCKETS,
)
deliveries = Histogram(
    "darkroom_delivery_duration_seconds",
    "Attempts to deliver an outbox event, by sink (webhook, writeback, ...) and outcome "
    "(delivered, failed, rejected: a failure that is not retried).",
    ["sink", "outcome"],
    buckets=DELIVERY_BUCKETS,
)


def http_request(route: str, method: str, status: int, seconds: float) -> None:
    method = method if method in METHODS else "OTHER"
    http_requests.labels(route, method, str(status)).observe(seconds)


def outcome_of(error: BaseException | None) -> str:
    if error is None:
        return "ok"
    if isinstance(error, ProviderRateLimited):
        return "rate_limited"
    if isinstance(error, ProviderRetryableError):
        return "retryable"
    if isinstance(error, ProviderPermanentError):
        return "permanent"
    return "error"


@contextmanager
def provider_request(account: str, operation: str) -> Iterator[None]:
    """Times the request inside, and counts it by how it ended (its exception, if any)."""
    began = time.perf_counter()
    error: BaseException | None = None
    try:
        yield
    except BaseException as exc:
        error = exc
        raise
    finally:
        outcome = outcome_of(error)
        provider_requests.labels(account, operation, outcome).observe(time.perf_counter() - began)
        if outcome == "rate_limited":
            rate_limited.labels(account).inc()


@contextmanager
def rate_token_wait(account: str) -> Iterator[None]:
    began = time.perf_counter()
    try:
        yield
    finally:
        limiter_wait.labels(account).observe(time.perf_counter() - began)


def delivery(sink: str, delivered: bool, permanent: bool, seconds: float) -> None:
    outcome = "delivered" if delivered else "rejected" if permanent else "failed"
    deliveries.labels(sink, outcome).observe(seconds)
