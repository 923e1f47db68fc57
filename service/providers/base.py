"""The interface every provider sits behind, whatever it makes (images, videos).

Providers come in two shapes, each with its own base:
- `SyncProvider` (OpenAI images, the built-in `local` renderer, a CLI): `generate` answers
  with the `Output` itself.
- `AsyncProvider` (Replicate, fal, Atlas Cloud, ComfyUI): `submit` answers with a
  `RemoteHandle` that is stored at once; the output arrives later by `poll` or by the
  provider's callback, and no worker waits for it meanwhile.

A `GenerationRequest` is media-neutral: prompt and size, plus what a video needs, the
images a job feeds in (`inputs`) and the model-specific `options` the model allows.

Errors are classified here once, for every provider: `ProviderRateLimited` (slow the
account down, never count it against the job), `ProviderRetryableError` (5xx, timeouts,
connection errors: back off and try again) and `ProviderPermanentError` (invalid input,
content policy, auth: fail at once with the provider's message).
"""

from __future__ import annotations

import base64
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

MediaKind = Literal["image", "video"]
OutputFormat = Literal["png", "jpeg", "webp", "mp4", "webm"]
InputRole = Literal["reference", "mask"]
RemoteStatus = Literal["pending", "succeeded", "failed", "canceled"]

IMAGE_FORMATS: tuple[OutputFormat, ...] = ("png", "jpeg", "webp")
VIDEO_FORMATS: tuple[OutputFormat, ...] = ("mp4", "webm")
MEDIA_OF_FORMAT: dict[str, MediaKind] = {
    **dict.fromkeys(IMAGE_FORMATS, "image"),
    **dict.fromkeys(VIDEO_FORMATS, "video"),
}
CONTENT_TYPES: dict[str, str] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "mp4": "video/mp4",
    "webm": "video/webm",
}
EXTENSIONS: dict[str, str] = {
    "png": "png",
    "jpeg": "jpg",
    "webp": "webp",
    "mp4": "mp4",
    "webm": "webm",
}
DEFAULT_FORMAT: dict[MediaKind, OutputFormat] = {"image": "png", "video": "mp4"}


@dataclass(frozen=True)
class InputImage:
    """An image a job feeds in: a reference image, a mask, or a parent job's output
    (role "reference"). The bytes are always there, already checked to be an image;
    `url` is set when the provider may fetch it itself (a public storage URL)."""

    role: InputRole
    data: bytes
    content_type: str
    url: str | None = None

    def data_uri(self) -> str:
        return f"data:{self.content_type};base64,{base64.b64encode(self.data).decode()}"


@dataclass(frozen=True)
class GenerationRequest:
    """What a job asks a provider for; built from the job row, never from a request body.

    `job_id` lets a provider tag its own records; `callback_url` is where an
    asynchronous provider should report completion (None: poll only). `inject` is the
    model's map of where each field goes (ComfyUI workflows), empty elsewhere."""

    prompt: str
    model_ref: str
    width: int
    height: int
    format: OutputFormat
    seed: int
    media: MediaKind = "image"
    negative_prompt: str | None = None
    duration_s: float | None = None
    fps: int | None = None
    # The aspect ratio the job's size was mapped to, for a model that takes ratios rather
    # than sizes (service.catalog.fit): send this, not width and height.
    aspect_ratio: str | None = None
    inputs: tuple[InputImage, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    inject: Mapping[str, str] = field(default_factory=dict)
    job_id: str = ""
    callback_url: str | None = None

    def input(self, role: InputRole) -> InputImage | None:
        return next((item for item in self.inputs if item.role == role), None)

    def references(self) -> tuple[InputImage, ...]:
        return tuple(item for item in self.inputs if item.role == "reference")


@dataclass(frozen=True)
class Output:
    """What a generation made, checked: the bytes decode as `media` of this size (and, for
    a video, this duration and frame count)."""

    data: bytes
    format: OutputFormat
    width: int
    height: int
    media: MediaKind = "image"
    duration_s: float | None = None
    frames: int | None = None
    cost_usd: Decimal = Decimal(0)
    # What the provider reported it used (tokens, seconds), kept on the attempt.
    usage: dict[str, Any] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


@dataclass(frozen=True)
class RemoteHandle:
    """An asynchronous provider's view of one generation (a Replicate prediction, a fal
    request, a ComfyUI prompt).

    `data` is the provider's own data about it: what `submit` returns is stored with the
    job and handed back to `poll` and `cancel` (status URLs, the model path); what a poll
    or callback returns holds the result, kept so that a finished generation can be turned
    into an output (`fetch_result`) without asking again. It must be JSON. `error` is set
    when status is failed or canceled. `queue_position` is shown on the job while it
    waits in the provider's queue."""

    id: str
    status: RemoteStatus = "pending"
    data: Mapping[str, Any] = field(default_factory=dict)
    error: ProviderError | None = None
    queue_position: int | None = None

    @property
    def finished(self) -> bool:
        return self.status != "pending"

    def to_json(self) -> dict[str, Any]:
        """For a trip through Redis (an early callback, an arq task)."""
        error = None
        if self.error is not None:
            error = {
                "code": self.error.code,
                "message": self.error.message,
                "retryable": self.error.retryable,
                "http_status": self.error.http_status,
                "billable": self.error.billable,
                "usage": self.error.usage,
            }
        return {"id": self.id, "status": self.status, "data": dict(self.data), "error": error}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> RemoteHandle:
        raw = value.get("error")
        error: ProviderError | None = None
        if isinstance(raw, Mapping):
            kind = ProviderRetryableError if raw.get("retryable") else ProviderPermanentError
            error = kind(
                str(raw["code"]),
                str(raw["message"]),
                http_status=raw.get("http_status"),
                billable=bool(raw.get("billable")),
                usage=raw.get("usage") if isinstance(raw.get("usage"), Mapping) else None,
            )
        return cls(str(value["id"]), value["status"], dict(value.get("data") or {}), error)


@dataclass(frozen=True)
class Capabilities:
    media: frozenset[MediaKind] = frozenset({"image"})
    formats: frozenset[str] = frozenset(IMAGE_FORMATS)
    # Input images the provider can take (a model may narrow this: Provider.model_inputs).
    inputs: frozenset[InputRole] = frozenset()
    # Completion callbacks that come back into /v1/callbacks/{account}.
    callbacks: bool = False
    cancel: bool = False


class ProviderError(Exception):
    """A generation that did not produce an output.

    `retryable` decides whether another attempt may help."""

    retryable: bool = False

    def __init__(
        self,
        code: str,
        message: str,
        *,
        http_status: int | None = None,
        billable: bool = False,
        usage: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status
        # The generation ran at the provider and failed there (not refused, not aborted):
        # a provider may bill it (ModelConfig.charged_on_failure). `usage` is what it used.
        self.billable = billable
        self.usage: dict[str, Any] = dict(usage or {})


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


class Provider(ABC):
    """One provider account. `name` is the account's key in the configuration, `kind`
    the API it speaks (its module registers it: service.providers.catalogue)."""

    kind: ClassVar[str]
    capabilities: ClassVar[Capabilities] = Capabilities()
    name: str

    def model_inputs(self, inject: Mapping[str, str]) -> frozenset[InputRole]:
        """The input images a model of this account takes (ComfyUI: those its workflow
        says where to inject)."""
        return self.capabilities.inputs

    async def aclose(self) -> None:  # noqa: B027 - most providers hold nothing to close
        """Release connections."""


class SyncProvider(Provider):
    """A provider that answers a request with the output itself."""

    @abstractmethod
    async def generate(self, request: GenerationRequest) -> Output: ...


class AsyncProvider(Provider):
    """A provider that answers a request with a handle; the output comes later."""

    @abstractmethod
    async def submit(self, request: GenerationRequest) -> RemoteHandle:
        """Start a generation; the handle (normally pending) is stored before anything
        else happens."""

    @abstractmethod
    async def poll(self, handle: RemoteHandle) -> RemoteHandle:
        """How the generation is doing, given the handle `submit` returned."""

    @abstractmethod
    async def fetch_result(self, handle: RemoteHandle, request: GenerationRequest) -> Output:
        """Download and check the output of a succeeded generation (output URLs expire)."""

    async def cancel(self, handle: RemoteHandle) -> None:
        """Stop a generation at the provider, where it can be stopped (best effort)."""
        raise ProviderPermanentError(
            "cancel_unsupported", f"{self.name}: {self.kind} cannot cancel a generation"
        )

    async def parse_callback(self, headers: Mapping[str, str], body: bytes) -> RemoteHandle:
        """Verify and parse a completion callback; raises CallbackRejected."""
        raise CallbackRejected(f"{self.kind} sends no completion callbacks")


@runtime_checkable
class CompletionWatch(Protocol):
    """An asynchronous provider that can tell the engine a generation finished sooner
    than a poll would (ComfyUI's websocket). Polls stay the safety net."""

    def watch(self, handle: RemoteHandle, wake: Callable[[], None]) -> bool:
        """Call `wake` (in the event loop) when the generation finishes; False when this
        process cannot watch it."""
        ...


@runtime_checkable
class SubmissionLookup(Protocol):
    """An asynchronous provider that can find a generation it was asked for, when the
    answer to the request was lost (a reset, a timeout, a 5xx after the body went out).

    Providers cannot deduplicate a create, so without this a retry may pay twice; with
    it, the next attempt looks first and resumes what it finds."""

    async def find_submitted(
        self, request: GenerationRequest, since: datetime, *, exclude: frozenset[str]
    ) -> RemoteHandle | None:
        """The newest generation created at or after `since` for exactly this request,
        other than those in `exclude` (handles earlier attempts already own); None when
        there is none. Raises ProviderError when the provider cannot be asked."""
        ...
