"""Outputs in an S3 bucket (AWS or any S3-compatible store: MinIO, R2, Ceph, moto).

Why obstore (the Rust `object_store` crate, as used by Arrow DataFusion, behind a typed Python
API) rather than aioboto3/aiobotocore:
- async-native: `put_async`/`get_async` run on its own Tokio runtime, nothing blocks the loop;
- streaming both ways: `put_async` takes an async iterable and turns it into a multipart upload
  (parts of `part_size`, a bounded number in flight), and a get is an async chunk stream;
- presigned URLs are built in (`obstore.sign`) and computed locally, with no request;
- credentials come from the standard AWS chain (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
  AWS_SESSION_TOKEN, AWS_REGION / AWS_DEFAULT_REGION, web identity, ECS, IMDS) without
  Darkroom ever reading them;
- one small wheel that depends only on typing-extensions: no botocore pin to fight with, and
  it ships type stubs (mypy strict holds);
- maintained (developmentseed/obstore, 0.12 in 2025).

Keys are `<prefix><batch id>/<name>`: the prefix is prepended here, as a plain string (not
obstore's path-segment prefix), so "darkroom/" and "covers-" both work. Objects carry
Content-Type and Cache-Control. Every failure of the store (5xx, refused connection, timeout,
access denied) becomes StorageUnavailable, whose message names the operation, the bucket and
the endpoint; a missing object is FileNotFoundError as it is for local files.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import quote

import obstore
from obstore.exceptions import BaseError, NotFoundError
from obstore.store import S3Store

from service.storage.base import (
    Body,
    Digest,
    StorageConfigError,
    StorageUnavailable,
    StoredObject,
    digested,
    key_segments,
)

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig, S3Config

    from service.config import Settings

# S3's smallest part (except the last). A streamed body is uploaded in parts of this size, at
# most PARTS_IN_FLIGHT at a time: memory stays bounded whatever the body's size.
PART_SIZE = 5 * 1024 * 1024
PARTS_IN_FLIGHT = 4
READ_CHUNK = 1024 * 1024
# A store that is down must fail a job's store in seconds (the job is retried later), not hold
# a worker for obstore's default three minutes of retries.
RETRY: RetryConfig = {
    "max_retries": 3,
    "retry_timeout": timedelta(seconds=15),
    "backoff": {
        "init_backoff": timedelta(milliseconds=100),
        "max_backoff": timedelta(seconds=2),
        "base": 2,
    },
}
CONNECT_TIMEOUT = "5s"
EXIT_GRACE_S = 0.1
REQUEST_TIMEOUT = "60s"
# The startup check lists this (almost surely empty) prefix: one cheap request that fails
# with NoSuchBucket when the bucket is missing.
_CHECK_PREFIX = "darkroom-startup-check"
_S3_CODE = re.compile(r"<Code>([A-Za-z]+)</Code>")
_MAX_REASON = 300


class S3Storage:
    """The `Storage` protocol on one bucket."""

    def __init__(
        self,
        store: S3Store,
        *,
        bucket: str,
        prefix: str = "",
        endpoint: str | None = None,
        public_url: str | None = None,
        presign_expires_s: int = 3600,
        cache_control: str = "public, max-age=31536000, immutable",
        part_size: int = PART_SIZE,
    ) -> None:
        self._store = store
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint = endpoint or "AWS S3"
        self._public_url = public_url.rstrip("/") if public_url else None
        self._presign_expires = timedelta(seconds=presign_expires_s)
        self.cache_control = cache_control
        self._part_size = part_size

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        if not settings.s3_bucket:
            raise StorageConfigError("DARKROOM_STORAGE=s3 needs DARKROOM_S3_BUCKET")
        return cls(
            make_store(settings.s3_bucket, settings.s3_region, settings.s3_endpoint_url),
            bucket=settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint=settings.s3_endpoint_url,
            public_url=settings.storage_public_url,
            presign_expires_s=settings.s3_presign_expires_s,
            cache_control=settings.storage_cache_control,
        )

    def path(self, key: str) -> str:
        """The object's key in the bucket. Raises ValueError for unsafe keys."""
        key_segments(key)
        return self.prefix + key

    async def put(
        self, key: str, data: Body, content_type: str, *, cache_control: str | None = None
    ) -> StoredObject:
        """One PUT for a small body, a multipart upload for a large or streamed one; either
        way the object appears whole or not at all."""
        path = self.path(key)
        attributes = {
            "Content-Type": content_type,
            "Cache-Control": cache_control or self.cache_control,
        }
        digest = Digest()
        body = data if isinstance(data, bytes) else digested(data, digest)
        try:
            await obstore.put_async(
                self._store,
                path,
                body,
                attributes=attributes,
                chunk_size=self._part_size,
                max_concurrency=PARTS_IN_FLIGHT,
            )
        except BaseError as exc:
            raise self._failure("PUT", path, exc) from exc
        if isinstance(data, bytes):
            digest.update(data)
        return digest.stored(key)

    async def get(self, key: str) -> bytes:
        path = self.path(key)
        try:
            result = await obstore.get_async(self._store, path)
            return bytes(await result.bytes_async())
        except (FileNotFoundError, NotFoundError) as exc:
            raise FileNotFoundError(f"no object {path} in bucket {self.bucket}") from exc
        except BaseError as exc:
            raise self._failure("GET", path, exc) from exc

    async def open(self, key: str) -> AsyncIterator[bytes]:
        path = self.path(key)
        try:
            result = await obstore.get_async(self._store, path)
            async for chunk in result.stream(min_chunk_size=READ_CHUNK):
                yield chunk
        except (FileNotFoundError, NotFoundError) as exc:
            raise FileNotFoundError(f"no object {path} in bucket {self.bucket}") from exc
        except BaseError as exc:
            raise self._failure("GET", path, exc) from exc

    def url(self, key: str) -> str:
        """The public base URL + key when one is set (a CDN, a public bucket), else a GET
        URL presigned for `presign_expires_s`, computed locally."""
        path = self.path(key)
        if self._public_url is not None:
            return f"{self._public_url}/{quote(path)}"
        try:
            return obstore.sign(self._store, "GET", path, self._presign_expires)
        except BaseError as exc:  # credentials could not be loaded
            raise self._failure("presign", path, exc) from exc

    async def exists(self, key: str) -> bool:
        path = self.path(key)
        try:
            await obstore.head_async(self._store, path)
        except (FileNotFoundError, NotFoundError):
            return False
        except BaseError as exc:
            raise self._failure("HEAD", path, exc) from exc
        return True

    async def check(self) -> None:
        """List one prefix: fails if the bucket is missing, unreachable or not ours.

        The blocking call, in a thread: the CLI exits right after this check when it fails,
        and an async obstore call completing that close to interpreter exit can race its
        finalization (a Tokio thread handing the result back to a dying interpreter aborts
        the process instead of exiting 2)."""
        try:
            await asyncio.to_thread(
                obstore.list_with_delimiter, self._store, self.prefix + _CHECK_PREFIX
            )
        except BaseError as exc:
            raise StorageConfigError(
                f"S3 bucket {self.bucket!r} at {self.endpoint} is not usable: {_reason(exc)}"
            ) from exc

    async def aclose(self) -> None:
        """A short pause before the process exits. obstore's Tokio threads hand each result
        back to Python a moment after the awaited call returns; an interpreter that starts
        finalizing within that moment can be aborted (SIGABRT, seen in about 1 exit in 10
        right after a call, never after a 50 ms pause)."""
        await asyncio.sleep(EXIT_GRACE_S)

    def _failure(self, action: str, path: str, exc: BaseException) -> StorageUnavailable:
        return StorageUnavailable(
            f"S3 {action} s3://{self.bucket}/{path} at {self.endpoint} failed: {_reason(exc)}"
        )


def make_store(bucket: str, region: str | None, endpoint: str | None) -> S3Store:
    """An S3Store on `bucket`; everything not given (credentials, the region) comes from the
    standard AWS environment, read by obstore itself."""
    config: S3Config = {}
    if region:
        config["region"] = region
    if endpoint:
        config["endpoint"] = endpoint
    client: ClientConfig = {
        "connect_timeout": CONNECT_TIMEOUT,
        "timeout": REQUEST_TIMEOUT,
        "allow_http": bool(endpoint and endpoint.startswith("http://")),
    }
    return S3Store(bucket, config=config, client_options=client, retry_config=RETRY)


def _reason(exc: BaseException) -> str:
    """One line from an obstore error: the S3 error code when the store sent one, then the
    first line of its message (which names the request, never a credential)."""
    text = str(exc)
    first_line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    code = _S3_CODE.search(text)
    reason = f"{code.group(1)}: {first_line}" if code else first_line
    return reason[:_MAX_REASON]
