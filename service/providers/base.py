"""The one interface every image provider sits behind.

Issue #2 only needs synchronous generation (the built-in `local` renderer); the
submit/poll/callback shape of asynchronous providers arrives with #3 and extends
this module rather than replacing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, Protocol

ImageFormat = Literal["png", "jpeg", "webp"]

CONTENT_TYPES: dict[str, str] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
}
EXTENSIONS: dict[str, str] = {"png": "png", "jpeg": "jpg", "webp": "webp"}


@dataclass(frozen=True)
class GenerationRequest:
    """What a job asks a provider for; built from the job row, never from a request body."""

    prompt: str
    model_ref: str
    width: int
    height: int
    format: ImageFormat
    seed: int


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes
    format: ImageFormat
    width: int
    height: int
    cost_usd: Decimal = Decimal(0)
    usage: dict[str, object] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


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


class ProviderPermanentError(ProviderError):
    """Invalid input, content policy, auth: another attempt would fail the same way."""

    retryable = False


class ImageProvider(Protocol):
    name: str

    async def generate(self, request: GenerationRequest) -> GeneratedImage: ...
