"""What one CMS kind provides: how its webhooks are verified and read, and how an image
is written back onto the article.

Inbound and write-back are separate halves: `kinds/<kind>.py` verifies and reads a
webhook (pure functions, no I/O); `writeback/<kind>.py` speaks the CMS's API. Both are
registered by kind name in `kinds/__init__.py` and `writeback/__init__.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import httpx
from pydantic import BaseModel

# How far a signed timestamp may be from now, either way.
REPLAY_WINDOW_MS = 5 * 60 * 1000


class SignatureError(Exception):
    """The request is not authentic: a bad, missing or stale signature (401). The message
    says which, and never holds the secret or the expected signature."""


class PayloadError(Exception):
    """The body cannot make a job (422): `field` names what is missing or wrong, as a
    dotted path into the body (e.g. "post.current.title")."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class InboundRequest:
    method: str
    path: str  # as received, e.g. "/v1/hooks/<id>" (Contentful signs it)
    query: Mapping[str, str]
    headers: Mapping[str, str]  # names lower-cased
    body: bytes


@dataclass(frozen=True)
class KindOptions:
    """Integration settings a kind may need to read a body."""

    locale: str | None = None  # Contentful: which locale of each field to read


@dataclass(frozen=True)
class Article:
    """What a verified webhook says, normalised across kinds."""

    event_type: str  # the CMS's own name: "post.published", "entry.publish", "Entry.publish"
    # The CMS's own event or entity id plus revision: the same delivery retried has the same
    # key, a later edit of the article does not.
    dedupe_key: str
    # Whatever a write-back needs to find the article again (id, updated_at, version, ...).
    ref: dict[str, Any]
    # Template variables: title, excerpt, slug, url, tags, authors, id, language, status, raw.
    variables: dict[str, Any] = field(default_factory=dict)


class CmsKind(Protocol):
    name: ClassVar[str]
    # Events that make a job when the integration lists none: the kind's publish events.
    default_events: ClassVar[tuple[str, ...]]

    def check_inbound(self, inbound: Mapping[str, Any]) -> dict[str, Any]:
        """Validate the integration's "inbound" block and return what is stored. Raises
        ValueError naming the field. (generic makes its whsec_ secret here.)"""
        ...

    def verify(self, request: InboundRequest, inbound: Mapping[str, Any], now_ms: int) -> None:
        """Raise SignatureError unless the request is authentic and fresh. Constant-time
        comparisons, on the raw body."""
        ...

    def read(self, request: InboundRequest, payload: Any, options: KindOptions) -> Article:
        """Normalise a verified, parsed body. Raises PayloadError naming a missing field."""
        ...


@dataclass(frozen=True)
class ImageSource:
    """The job's output, read from storage when a write-back uploads it (never held whole
    in memory by the caller)."""

    filename: str  # deterministic: the job's output name, e.g. "my-post-cover.webp"
    content_type: str
    size: int
    sha256: str
    url: str  # the output's URL (public or presigned): for CMSs that link rather than upload
    open: Callable[[], AsyncIterator[bytes]]  # the bytes, from the start, on each call


class WritebackError(Exception):
    """A write-back attempt failed. `permanent`: no retry can help (401, 403, 404, a bad
    configuration); otherwise it is retried on the delivery schedule. `message` carries the
    CMS's own words, never a credential."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        status_code: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.status_code = status_code
        self.retry_after_s = retry_after_s


class WritebackKind(Protocol):
    name: ClassVar[str]
    # The "writeback" block of an integration of this kind (a contract: keys as written).
    config_model: ClassVar[type[BaseModel]]

    async def write_back(
        self,
        http: httpx.AsyncClient,
        config: BaseModel,
        article: Article,
        image: ImageSource,
        env: Mapping[str, str],
    ) -> dict[str, Any]:
        """Put the image on the article; return what was done (e.g. {"media_id": 12,
        "image_url": ...}) for the event record. Idempotent: an image already uploaded
        under `image.filename` is reused, not uploaded again. Credentials are read from
        `env` by the names the config gives; a missing one is a permanent WritebackError."""
        ...
