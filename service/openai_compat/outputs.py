"""Output URLs an OpenAI client can fetch without a key, as OpenAI's own image URLs are.

When the storage has URLs of its own (S3: public or presigned), those are used. Otherwise
(local storage) the URL is this door's `GET /openai/v1/outputs/{job id}` with an expiry
and an HMAC of both under the server's secret key: it names one output for a while,
and no API key ever goes into a URL.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid

from service.models import Job
from service.storage.base import Storage, StorageError

IMAGE_URL_TTL_S = 3600  # as OpenAI's image URLs
BATCH_URL_TTL_S = 7 * 24 * 3600


def signature(secret_key: str, job_id: uuid.UUID, expires: int) -> str:
    message = f"openai-output:{job_id}:{expires}".encode()
    return hmac.new(secret_key.encode(), message, hashlib.sha256).hexdigest()


def signature_valid(secret_key: str, job_id: uuid.UUID, expires: int, given: str) -> bool:
    if expires < time.time():
        return False
    return hmac.compare_digest(signature(secret_key, job_id, expires).encode(), given.encode())


def output_url(job: Job, storage: Storage, *, public_url: str, secret_key: str, ttl_s: int) -> str:
    assert job.output_key is not None
    try:
        own = storage.url(job.output_key)
    except StorageError:
        own = None
    if own is not None:
        return own
    expires = int(time.time()) + ttl_s
    sig = signature(secret_key, job.id, expires)
    base = public_url.rstrip("/")
    return f"{base}/openai/v1/outputs/{job.id}?expires={expires}&signature={sig}"
