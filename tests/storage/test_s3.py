"""S3Storage against a real S3 API server (moto in server mode, over HTTP on loopback)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from service.storage.base import (
    Storage,
    StorageConfigError,
    StorageUnavailable,
    StoredObject,
)
from service.storage.s3 import PART_SIZE
from tests.s3_server import AWS_ENV, S3Server, free_port, make_public
from tests.storage.conftest import s3_storage
from tests.storage.test_local import UNSAFE_KEYS

KEY = "b_01HZX/cover-1.png"
pytestmark = pytest.mark.usefixtures("aws_env")


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def digest_of(key: str, data: bytes) -> StoredObject:
    return StoredObject(key=key, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


async def test_satisfies_the_storage_protocol(s3_server: S3Server, bucket: str) -> None:
    storage: Storage = s3_storage(s3_server.endpoint, bucket)
    await storage.check()


async def test_put_bytes_then_get_exists_and_fetch_with_headers(
    s3_server: S3Server, bucket: str
) -> None:
    storage = s3_storage(s3_server.endpoint, bucket, prefix="darkroom/")
    data = os.urandom(50_000)
    assert not await storage.exists(KEY)

    stored = await storage.put(KEY, data, "image/png")

    assert stored == digest_of(KEY, data)
    assert await storage.get(KEY) == data
    assert await storage.exists(KEY)
    assert not await storage.exists("b_01HZX/other.png")
    # The prefix is part of the bucket key, and nothing else is.
    unprefixed = s3_storage(s3_server.endpoint, bucket)
    assert await unprefixed.exists(f"darkroom/{KEY}")
    assert not await unprefixed.exists(KEY)
    fetched = httpx.get(storage.url(KEY))
    assert fetched.status_code == 200
    assert fetched.content == data
    assert fetched.headers["content-type"] == "image/png"
    assert fetched.headers["cache-control"] == "public, max-age=31536000, immutable"


async def test_cache_control_per_put(s3_server: S3Server, bucket: str) -> None:
    storage = s3_storage(s3_server.endpoint, bucket)
    await storage.put(KEY, b"x", "image/webp", cache_control="no-cache")
    fetched = httpx.get(storage.url(KEY))
    assert fetched.headers["content-type"] == "image/webp"
    assert fetched.headers["cache-control"] == "no-cache"


async def test_streamed_put_larger_than_a_part_is_a_multipart_upload(
    s3_server: S3Server, bucket: str
) -> None:
    storage = s3_storage(s3_server.endpoint, bucket, prefix="p-")
    data = os.urandom(2 * PART_SIZE + 123_456)

    stored = await storage.put(KEY, chunks_of(data, 256 * 1024), "image/png")

    assert stored == digest_of(KEY, data)
    fetched = httpx.get(storage.url(KEY))
    assert fetched.content == data
    assert fetched.headers["content-type"] == "image/png"
    assert fetched.headers["cache-control"] == "public, max-age=31536000, immutable"
    # A multipart object's ETag is "<md5 of the part md5s>-<number of parts>".
    assert fetched.headers["etag"].strip('"').endswith("-3")


async def test_a_failing_source_stores_nothing(s3_server: S3Server, bucket: str) -> None:
    storage = s3_storage(s3_server.endpoint, bucket)

    async def broken() -> AsyncIterator[bytes]:
        yield os.urandom(PART_SIZE + 1)
        raise OSError("source went away")

    with pytest.raises(Exception, match="source went away"):
        await storage.put(KEY, broken(), "image/png")
    assert not await storage.exists(KEY)


async def test_open_streams_the_object(s3_server: S3Server, bucket: str) -> None:
    storage = s3_storage(s3_server.endpoint, bucket)
    data = os.urandom(3 * 1024 * 1024 + 5)
    await storage.put(KEY, data, "image/png")

    chunks = [chunk async for chunk in storage.open(KEY)]

    assert b"".join(chunks) == data
    assert all(isinstance(chunk, bytes) for chunk in chunks)


async def test_missing_objects(s3_server: S3Server, bucket: str) -> None:
    storage = s3_storage(s3_server.endpoint, bucket)
    with pytest.raises(FileNotFoundError, match=bucket):
        await storage.get("b_missing/nothing.png")
    with pytest.raises(FileNotFoundError):
        async for _ in storage.open("b_missing/nothing.png"):
            pass
    assert not await storage.exists("b_missing/nothing.png")


async def test_presigned_url(s3_server: S3Server, bucket: str) -> None:
    storage = s3_storage(s3_server.endpoint, bucket, prefix="out/", presign_expires_s=900)
    await storage.put(KEY, b"image bytes", "image/png")

    url = storage.url(KEY)

    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == s3_server.endpoint
    assert parts.path == f"/{bucket}/out/{KEY}"
    query = parse_qs(parts.query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == ["900"]
    assert query["X-Amz-Credential"][0].startswith(AWS_ENV["AWS_ACCESS_KEY_ID"] + "/")
    assert "X-Amz-Signature" in query
    assert AWS_ENV["AWS_SECRET_ACCESS_KEY"] not in url
    # Fetchable by anyone holding it, with no credentials of their own. (moto does not check
    # presigned signatures or their expiry, so their refusal cannot be tested here.)
    async with httpx.AsyncClient() as plain:
        fetched = await plain.get(url)
    assert (fetched.status_code, fetched.content) == (200, b"image bytes")


async def test_public_base_url(s3_server: S3Server, bucket: str) -> None:
    cdn = s3_storage(
        s3_server.endpoint, bucket, prefix="covers-", public_url="https://cdn.example.com/img/"
    )
    assert cdn.url(KEY) == f"https://cdn.example.com/img/covers-{KEY}"
    # A public bucket as the base: base + key is the object's address.
    public = s3_storage(
        s3_server.endpoint, bucket, prefix="covers-", public_url=f"{s3_server.endpoint}/{bucket}"
    )
    await public.put(KEY, b"served publicly", "image/png")
    assert httpx.get(public.url(KEY)).status_code == 403  # private until the policy says so
    make_public(s3_server, bucket)
    fetched = httpx.get(public.url(KEY))
    assert (fetched.status_code, fetched.content) == (200, b"served publicly")


@pytest.mark.parametrize("key", UNSAFE_KEYS)
async def test_unsafe_keys_are_refused(s3_server: S3Server, bucket: str, key: str) -> None:
    storage = s3_storage(s3_server.endpoint, bucket)
    with pytest.raises(ValueError, match="invalid storage key"):
        await storage.put(key, b"x", "image/png")
    with pytest.raises(ValueError, match="invalid storage key"):
        await storage.get(key)
    with pytest.raises(ValueError, match="invalid storage key"):
        await storage.exists(key)
    with pytest.raises(ValueError, match="invalid storage key"):
        storage.url(key)


async def test_unreachable_store_is_a_retryable_error_naming_bucket_and_endpoint() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    storage = s3_storage(endpoint, "covers")
    began = time.monotonic()

    with pytest.raises(StorageUnavailable) as failed:
        await storage.put(KEY, b"x", "image/png")

    assert time.monotonic() - began < 30  # bounded retries, not obstore's three minutes
    message = str(failed.value)
    assert f"S3 PUT s3://covers/{KEY} at {endpoint} failed" in message
    assert "\n" not in message
    assert AWS_ENV["AWS_SECRET_ACCESS_KEY"] not in message
    with pytest.raises(StorageUnavailable):
        await storage.get(KEY)
    with pytest.raises(StorageUnavailable):
        await storage.exists(KEY)
    with pytest.raises(StorageConfigError, match=f"S3 bucket 'covers' at {endpoint}"):
        await storage.check()


async def test_store_that_goes_down_mid_test_fails_retryably_then_recovers() -> None:
    server = S3Server()
    server.start()
    try:
        bucket = server.create_bucket()
        storage = s3_storage(server.endpoint, bucket)
        await storage.put(KEY, b"before", "image/png")

        server.stop()
        with pytest.raises(StorageUnavailable, match=bucket):
            await storage.put(KEY, b"during", "image/png")
        with pytest.raises(StorageUnavailable):
            await storage.get(KEY)

        server.start()  # same port; moto's state is gone with its process
        server.create_bucket(bucket)
        await storage.put(KEY, b"after", "image/png")
        assert await storage.get(KEY) == b"after"
    finally:
        server.stop()


async def test_missing_bucket_is_a_clear_startup_error(s3_server: S3Server) -> None:
    storage = s3_storage(s3_server.endpoint, "no-such-bucket-here")

    with pytest.raises(StorageConfigError) as failed:
        await storage.check()

    message = str(failed.value)
    assert message.startswith(
        f"S3 bucket 'no-such-bucket-here' at {s3_server.endpoint} is not usable: NoSuchBucket"
    )
    assert "\n" not in message
    assert AWS_ENV["AWS_SECRET_ACCESS_KEY"] not in message
