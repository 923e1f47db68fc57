"""The one interface every image provider sits behind.

Providers come in two shapes. Synchronous ones (OpenAI images, the built-in `local`
renderer) answer a submission with the image. Asynchronous ones (Replicate) answer with
a handle; the image arrives later by polling or by the provider's callback, and no
worker waits for it meanwhile. `submit` returns either a `GeneratedImage` or a
`RemoteJob`, and the dispatch engine handles both.

Errors are classified here once, for every provider: `ProviderRateLimited` (slow the
account down, never count it against the job), `ProviderRetryableError` (5xx, timeouts,
connection errors: back off and try again) and `ProviderPermanentError` (invalid input,
content policy, auth: fail at once with the provider's message).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Protocol, runtime_checkable

ImageFormat = Literal["png", "jpeg", "webp"]
RemoteStatus = Literal["pending", "succeeded", "failed", "canceled"]

CONTENT_TYPES: dict[str, str] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
}
EXTENSIONS: dict[str, str] = {"png": "png", "jpeg": "jpg", "webp": "webp"}


@dataclass(frozen=True)
class GenerationRequest:
    """What a job asks a provider for; built from the job row, never from a request body.

    `job_id` lets a provider tag its own records; `callback_url` is where an
    asynchronous provider should report completion (None: poll only)."""

    prompt: str
    model_ref: str
    width: int
    height: int
    format: ImageFormat
    seed: int
    job_id: str = ""
    callback_url: str | None = None


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes
    format: ImageFormat
    width: int
    height: int
    cost_usd: Decimal = Decimal(0)
    # What the provider reported it used (tokens, seconds), kept on the attempt.
    usage: dict[str, Any] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


@dataclass(frozen=True)
class RemoteJob:
    """An asynchronous provider's view of one generation (a Replicate prediction).

    `payload` is the provider's own object, kept so that a finished job can be turned
    into an image (`fetch_result`) without asking the provider again. `error` is set
    when status is failed or canceled."""

    id: str
    status: RemoteStatus
    payload: Mapping[str, Any] = field(default_factory=dict)
    error: ProviderError | None = None

    @property
    def finished(self) -> bool:
        return self.status != "pending"


@dataclass(frozen=True)
class Capabilities:
    asynchronous: bool
    formats: frozenset[str] = frozenset({"png", "jpeg", "webp"})
    # Completion callbacks (webhooks) that come back into /v1/callbacks/<kind>.
    callbacks: bool = False
    cancel: bool = False


class ProviderError(Exception):
    """A generation that did not produce an image.

    `retryable` decides whether another attempt may help."""

    retryable: bool = False

    def __init__(self, code: str, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status


class ProviderRetryableError(ProviderError):
    """5xx, timeouts, connection errors: worth another attempt after a backoff."""

    retryable = True


class ProviderRateLimited(ProviderRetryableError):
    """429: the account is over its limit. The job goes back in line without using up an
    attempt; the account slows down. `retry_after_s` is the provider's hint, if any
    (Retry-After header, or a hint in the body)."""

    def __init__(
        self, message: str, *, retry_after_s: float | None = None, http_status: int | None = 429
    ) -> None:
        super().__init__("rate_limited", message, http_status=http_status)
        self.retry_after_s = retry_after_s


class ProviderPermanentError(ProviderError):
    """Invalid input, content policy, auth: another attempt would fail the same way."""

    retryable = False


class CallbackRejected(Exception):
    """A callback whose signature, timestamp or body does not check out."""


class ImageProvider(Protocol):
    """One provider account. `name` is the account's key in the configuration, `kind`
    the API it speaks (replicate, openai, local)."""

    name: str
    kind: str
    capabilities: Capabilities

    async def submit(self, request: GenerationRequest) -> GeneratedImage | RemoteJob:
        """Start a generation. Synchronous providers return the image; asynchronous ones
        a RemoteJob (normally pending) whose id must be stored before anything else."""
        ...

    async def poll(self, remote_id: str) -> RemoteJob: ...

    async def fetch_result(self, remote: RemoteJob, request: GenerationRequest) -> GeneratedImage:
        """Download and check the output of a succeeded RemoteJob (output URLs expire)."""
        ...

    async def parse_callback(self, headers: Mapping[str, str], body: bytes) -> RemoteJob:
        """Verify and parse a completion callback; raises CallbackRejected."""
        ...

    def parse_remote(self, payload: Mapping[str, Any]) -> RemoteJob:
        """A RemoteJob from the provider's own object (RemoteJob.payload, as a callback or
        a poll returned it), so a worker can finish a job a callback reported."""
        ...

    async def cancel(self, remote_id: str) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class SubmissionLookup(Protocol):
    """An asynchronous provider that can find a generation it was asked for, when the
    answer to the request was lost (a reset, a timeout, a 5xx after the body went out).

    Providers cannot deduplicate a create, so without this a retry may pay twice; with
    it, the next attempt looks first and resumes what it finds."""

    async def find_submitted(
        self, request: GenerationRequest, since: datetime, *, exclude: frozenset[str]
    ) -> RemoteJob | None:
        """The newest generation created at or after `since` for exactly this request,
        other than those in `exclude` (handles earlier attempts already own); None when
        there is none. Raises ProviderError when the provider cannot be asked."""
        ...
