"""Where finished images live: the protocol both backends (local.py, s3.py) implement.

Keys are relative paths ("<batch_id>/<file name>"); a backend may place them under a prefix of
its own. Bodies stream both ways (a put takes bytes or an async iterable of chunks, `open`
yields chunks), so an output is never held whole in memory by the storage layer, and the
size and SHA-256 recorded on the job are computed from exactly the bytes that were written.

Errors a caller may act on:
- `FileNotFoundError`: no object under that key (get, open);
- `ValueError`: a key that could name something outside the storage (never "cleaned");
- `StorageUnavailable`: the backend failed (5xx, connection refused, timeout): worth a retry;
- `StorageConfigError`: the backend cannot work as configured (a missing bucket): a startup
  error, said in one line naming the bucket and endpoint.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Protocol

Body = bytes | AsyncIterable[bytes]

# One path segment: no leading dot (so no ".", "..", hidden files), no separators, no spaces.
_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}")


@dataclass(frozen=True)
class StoredObject:
    key: str
    bytes: int
    sha256: str


class StorageError(Exception):
    """The storage backend, not the job's input, is at fault."""


class StorageUnavailable(StorageError):
    """The backend failed to answer or answered with an error: another attempt may work.
    The message names the operation, bucket and endpoint, never a credential."""


class StorageConfigError(StorageError):
    """The backend cannot work as configured (no such bucket, no access): found once at
    startup so that a process refuses to start instead of failing every job."""


class Storage(Protocol):
    async def put(
        self, key: str, data: Body, content_type: str, *, cache_control: str | None = None
    ) -> StoredObject:
        """Store the whole body under `key`, atomically: readers see the old object or the
        new one, never a part. `cache_control` None means the backend's default."""
        ...

    async def get(self, key: str) -> bytes:
        """The whole object, for small reads."""
        ...

    def open(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes in chunks, from the start (FileNotFoundError on first read if
        it is missing)."""
        ...

    def url(self, key: str) -> str | None:
        """Where a caller can fetch the object directly, or None: the API serves it."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def check(self) -> None:
        """Raise StorageConfigError unless the backend is usable: run once at startup."""
        ...

    async def aclose(self) -> None:
        """Let go of what the backend holds, when the process stops."""
        ...


def key_segments(key: str) -> list[str]:
    """The key's path segments, after refusing anything that is not a plain relative path
    of safe names. Raises ValueError."""
    segments = key.split("/")
    if not key or not all(_SEGMENT.fullmatch(segment) for segment in segments):
        raise ValueError(
            f"invalid storage key {key!r}: expected '/'-separated names of "
            "[A-Za-z0-9._-] that do not start with a dot"
        )
    return segments


class Digest:
    """Size and SHA-256 of a body, fed as its chunks go by."""

    def __init__(self) -> None:
        self._sha256 = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self._sha256.update(chunk)
        self.size += len(chunk)

    def stored(self, key: str) -> StoredObject:
        return StoredObject(key=key, bytes=self.size, sha256=self._sha256.hexdigest())


async def digested(chunks: AsyncIterable[bytes], digest: Digest) -> AsyncIterator[bytes]:
    """Pass `chunks` through, feeding each to `digest` (empty chunks dropped)."""
    async for chunk in chunks:
        if chunk:
            digest.update(chunk)
            yield chunk
