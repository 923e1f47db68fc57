"""All settings, from the environment (prefix DARKROOM_) or a .env file.

Production refuses to start with a placeholder secret key or database password: a
default forgotten there is a default every reader of this repository knows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Self
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.kit.ssrf import parse_cidrs

PLACEHOLDER_SECRET = "dev-insecure-change-me"
# Apprise schemes a batch's `notify` may use unless DARKROOM_NOTIFY_SCHEMES says otherwise:
# chat, mail and push services, and plain JSON/form/XML POSTs. Not the ones that act on
# the worker's own machine (syslog, dbus, desktop notifications, scripts).
DEFAULT_NOTIFY_SCHEMES = (
    "slack", "discord", "msteams", "mailto", "mailtos", "tgram", "json", "jsons", "form",
    "forms", "xml", "xmls", "ntfy", "ntfys", "gotify", "gotifys", "matrix", "matrixs",
    "mmost", "mmosts", "rocket", "rockets", "gchat", "pover", "pbul", "signal", "signals",
    "zulip", "webex", "opsgenie", "pagerduty", "whatsapp", "lark", "feishu", "dingtalk",
)  # fmt: skip
PLACEHOLDER_PASSWORDS = frozenset({"postgres", "password", "changeme", "secret", "darkroom"})


class Environment(StrEnum):
    development = "development"
    production = "production"


class StorageKind(StrEnum):
    local = "local"
    s3 = "s3"


# An S3 key prefix: safe names joined by "/", no leading "/", no "." or ".." segment. It is
# prepended as is, so it may end with "/" ("darkroom/") or not ("covers-").
_S3_PREFIX = re.compile(r"(?:[A-Za-z0-9_-][A-Za-z0-9._-]*/)*(?:[A-Za-z0-9_-][A-Za-z0-9._-]*)?")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DARKROOM_", env_file=".env", extra="ignore")

    env: Environment = Environment.development
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/darkroom"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # When false, `darkroom up` and the tests do not try 127.0.0.1:5432/6379 and
    # start embedded servers unless the URLs above answer.
    local_defaults: bool = True
    data_dir: Path = Path(".data")
    storage_dir: Path = Path(".data/outputs")
    # Where outputs are served from (the base of every output URL handed to callers).
    public_url: str = "http://127.0.0.1:8000"
    # Where providers can reach this service: asynchronous providers are asked to call
    # back to callback_url + /v1/callbacks/<account> when a generation finishes. Unset: no
    # callbacks are requested. It is not derived from public_url, which callers reach but
    # a provider often cannot (a private network, a firewall); polls finish jobs either way.
    callback_url: str | None = None
    config: Path | None = None
    # Peppers the stored hashes of API keys: a leaked database alone cannot check guesses.
    # Changing it invalidates every key.
    secret_key: str = PLACEHOLDER_SECRET

    log_level: str = "INFO"
    # GET /metrics is open on the API port (Prometheus' usual way) unless this is set:
    # then a scrape must send `Authorization: Bearer <token>`.
    metrics_token: str | None = Field(default=None, min_length=16, repr=False)
    # 10,000 jobs with long prompts fit; past this a request gets 413 before it is parsed.
    max_request_bytes: int = Field(default=128 * 1024 * 1024, ge=1024)
    default_model: str = "local/procedural"
    default_width: int = 1024
    default_height: int = 1024
    default_format: str = "png"

    # Worker
    # Provider requests in flight per worker process (a synchronous generation holds one
    # for its whole duration; an asynchronous submission only while it is sent).
    worker_concurrency: int = Field(default=16, ge=1)
    # arq refills free slots once per poll, so a worker runs at most
    # concurrency / poll_delay jobs per second: 0.05 s leaves the CPU as the limit.
    worker_poll_delay_s: float = Field(default=0.05, gt=0)
    # How long the reconciler cron and other arq tasks may run before arq gives up on them.
    job_timeout_s: int = Field(default=60, ge=1)
    # A failed attempt's job is tried again after a full-jitter exponential backoff: up to
    # this long before the second attempt, doubling each time, at most 120 s.
    job_retry_base_s: float = Field(default=2.0, gt=0, le=120)
    reconcile_interval_s: int = Field(default=15, ge=1)
    # A queued or running job untouched this long is checked against Redis and re-enqueued if lost.
    reconcile_stale_after_s: int = Field(default=30, ge=1)
    # Schedules: how often a worker looks for due schedules, and how late a due time may
    # be run by a schedule that skips missed runs (catch_up "skip").
    schedule_interval_s: int = Field(default=20, ge=1)
    schedule_grace_s: int = Field(default=300, ge=0)
    # On SIGTERM a worker stops taking work and gives what runs (provider requests, polls,
    # deliveries) this long to finish; `darkroom serve` gives in-flight HTTP requests the same.
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    queue_name: str = "darkroom:jobs"
    webhook_queue_name: str = "darkroom:webhooks"

    # Outbound webhooks and write-backs (the outbox)
    # The total deadline of one attempt: connect, send and the whole answer, however
    # slowly a receiver trickles it (not a per-read timeout).
    webhook_timeout_s: float = Field(default=15.0, gt=0)
    # The same for a write-back into a CMS: several requests (upload, create, process,
    # link, publish) against an API that may be slow.
    writeback_timeout_s: float = Field(default=60.0, gt=0)
    # A write-back block names the environment variable holding its CMS credential; only
    # variables whose names start with this are handed to write-backs, so an API caller
    # cannot name DARKROOM_SECRET_KEY, a provider's token or AWS keys and send them to a
    # URL of its choosing.
    writeback_env_prefix: str = Field(default="CMS_", min_length=1)
    # Deprecated (use ssrf_allow_cidrs): false refuses loopback in development too; true
    # is refused in production, where only the allowlist opens non-public addresses.
    webhook_allow_private_networks: bool | None = None
    # Multiplies every step of the retry schedule (0 s, 5 s, 5 min, 30 min, 2 h, 5 h,
    # 10 h, 10 h, jittered): 1 in production, small in tests so they need not wait.
    webhook_schedule_scale: float = Field(default=1.0, gt=0)
    # Deliveries one endpoint may have in flight at once, across every worker; a failing
    # endpoint (no success since its last failure) gets fewer, so its backlog waits.
    webhook_endpoint_slots: int = Field(default=4, ge=1)
    webhook_failing_endpoint_slots: int = Field(default=1, ge=1)
    # An endpoint failing without a single success for this long is disabled.
    webhook_disable_after_s: float = Field(default=5 * 86400.0, gt=0)

    # Notifications (a batch's `notify` Apprise URLs): one attempt's deadline, and the
    # schemes a caller may use (a JSON list or comma-separated; empty: any Apprise knows).
    notify_timeout_s: float = Field(default=30.0, gt=0)
    notify_schemes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_NOTIFY_SCHEMES)
    )

    # Outbound URLs that someone else chose (callback_urls, provider outputs, write-backs)
    # never reach non-public addresses (service/kit/ssrf.py) except these CIDRs: a JSON
    # list or comma-separated, e.g. `10.20.0.0/16,fd00:1::/64`. Loopback is open in
    # development only.
    ssrf_allow_cidrs: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # The OpenAI-compatible door (/openai/v1/images/*) waits this long for its images, then
    # answers a timeout error naming the Darkroom batch, which goes on.
    openai_wait_timeout_s: float = Field(default=120.0, gt=0)

    # Output storage: "local" (storage_dir) or "s3". S3 credentials come from the standard
    # AWS environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, roles),
    # never from these settings, and are never logged.
    storage: StorageKind = StorageKind.local
    s3_bucket: str | None = None
    # Prepended to every key as is: "<prefix><batch id>/<name>".
    s3_prefix: str = ""
    # Unset: AWS_REGION / AWS_DEFAULT_REGION.
    s3_region: str | None = None
    # Any S3-compatible store (MinIO, R2, ...). Unset: AWS.
    s3_endpoint_url: str | None = None
    # A CDN or public bucket in front of the store: output URLs are this + "/" + key. Unset:
    # presigned GET URLs valid for s3_presign_expires_s (SigV4 allows at most 7 days).
    storage_public_url: str | None = None
    s3_presign_expires_s: int = Field(default=3600, ge=1, le=7 * 24 * 3600)
    # Names are unique per batch, so an output never changes under its URL.
    storage_cache_control: str = "public, max-age=31536000, immutable"

    # Live events (GET /v1/batches/{id}/events, service/events/)
    # A comment line this often keeps proxies from closing a quiet stream.
    events_heartbeat_s: float = Field(default=15.0, gt=0)
    # A batch's counts are published at most once per this long per process.
    events_coalesce_s: float = Field(default=0.2, ge=0)
    # Each batch's Redis stream keeps about this many events (Last-Event-ID can resume
    # within them), for this long after its last event.
    events_stream_maxlen: int = Field(default=5000, ge=100)
    events_stream_ttl_s: int = Field(default=86400, ge=60)
    # Events one listener may have waiting; a listener further behind is dropped (its
    # client reconnects with Last-Event-ID), never the others.
    events_listener_buffer: int = Field(default=2000, ge=10)
    # After the final batch event, the stream stays open this long for events another
    # process published late, then ends.
    events_final_linger_s: float = Field(default=1.0, ge=0)
    # A stream ends after this long (an EventSource reconnects with Last-Event-ID and
    # resumes exactly), so connections rebalance across API replicas.
    events_max_stream_s: float = Field(default=1800.0, gt=0)

    @property
    def is_production(self) -> bool:
        return self.env is Environment.production

    @property
    def provider_callback_base(self) -> str | None:
        return self.callback_url.rstrip("/") if self.callback_url else None

    @property
    def ssrf_allows_loopback(self) -> bool:
        """Local receivers and simulators in development; never in production."""
        return not self.is_production and self.webhook_allow_private_networks is not False

    @field_validator("ssrf_allow_cidrs", mode="before")
    @classmethod
    def _split_cidrs(cls, value: Any) -> Any:
        return _env_list(value, "DARKROOM_SSRF_ALLOW_CIDRS")

    @field_validator("notify_schemes", mode="before")
    @classmethod
    def _split_schemes(cls, value: Any) -> Any:
        # "Slack://" is "slack".
        return _env_list(
            value, "DARKROOM_NOTIFY_SCHEMES", lambda item: item.lower().removesuffix("://")
        )

    @field_validator("ssrf_allow_cidrs")
    @classmethod
    def _check_cidrs(cls, value: list[str]) -> list[str]:
        try:
            return [str(network) for network in parse_cidrs(value)]
        except ValueError as exc:
            raise ValueError(f"DARKROOM_SSRF_ALLOW_CIDRS: {exc}") from None

    @model_validator(mode="after")
    def _check_storage(self) -> Self:
        """A storage setting that cannot work stops the process at once, naming the setting."""
        if self.storage is StorageKind.s3 and not self.s3_bucket:
            raise ValueError("DARKROOM_STORAGE=s3 needs DARKROOM_S3_BUCKET (the bucket name)")
        if not _S3_PREFIX.fullmatch(self.s3_prefix):
            raise ValueError(
                "DARKROOM_S3_PREFIX must be names of [A-Za-z0-9._-] joined by '/', with no "
                "leading '/' and no '.' or '..' part"
            )
        for name, url in (
            ("DARKROOM_S3_ENDPOINT_URL", self.s3_endpoint_url),
            ("DARKROOM_STORAGE_PUBLIC_URL", self.storage_public_url),
        ):
            if url is not None and (
                urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc
            ):
                raise ValueError(f"{name} must be an http(s) URL")
        return self

    @model_validator(mode="after")
    def _refuse_placeholders_in_production(self) -> Self:
        if not self.is_production:
            return self
        if self.webhook_allow_private_networks:
            raise ValueError(
                "DARKROOM_WEBHOOK_ALLOW_PRIVATE_NETWORKS is no longer honoured in production; "
                "list the networks receivers may use in DARKROOM_SSRF_ALLOW_CIDRS"
            )
        if self.secret_key == PLACEHOLDER_SECRET or len(self.secret_key) < 32:
            raise ValueError(
                "DARKROOM_SECRET_KEY must be set to a random value of at least 32 characters "
                "in production"
            )
        password = urlsplit(self.database_url).password
        if password is not None and password.lower() in PLACEHOLDER_PASSWORDS:
            raise ValueError(
                "DARKROOM_DATABASE_URL uses a placeholder password; set a real one in production"
            )
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()


def _env_list(value: Any, name: str, clean: Callable[[str], str] = str) -> Any:
    """A list setting as the environment gives it, a string: a JSON list, or items
    separated by commas (each stripped, then `clean`ed; empty ones dropped). Anything else
    (a list from code) is left to the field's validation."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{name} is not a JSON list: {exc}") from None
    items = (clean(part.strip()) for part in text.split(","))
    return [item for item in items if item]
