"""fal's webhook signatures: ED25519 over `request_id \\n user_id \\n timestamp \\n
sha256hex(body)`, hex in `X-Fal-Webhook-Signature`, with public keys from a JWKS.

fal's headers name no key, so a signature is checked against every key of the set; a
set that verifies nothing may be stale (fal rotated its key), so it is fetched again,
once, and no more often than `refresh_min_s`, so that forged callbacks cannot make
Darkroom hammer fal's JWKS URL. ED25519 verification does not leak through timing the
way a naive MAC comparison does; there is nothing secret to compare here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from service.providers.base import CallbackRejected, ProviderRetryableError

TOLERANCE_S = 300
# fal's own guidance: keys may be cached for up to a day.
JWKS_TTL_S = 24 * 3600.0
JWKS_REFRESH_MIN_S = 10.0
HEADERS = ("request-id", "user-id", "timestamp", "signature")


def signed_message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    return "\n".join((request_id, user_id, timestamp, hashlib.sha256(body).hexdigest())).encode()


def parse_jwks(provider: str, body: bytes) -> list[Ed25519PublicKey]:
    """The Ed25519 keys of a JWKS (others are skipped); none at all is an error."""
    try:
        data: Any = json.loads(body)
    except ValueError as exc:
        raise ProviderRetryableError("malformed_response", f"{provider}: JWKS is not JSON") from exc
    entries = data.get("keys") if isinstance(data, dict) else None
    keys: list[Ed25519PublicKey] = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or (entry.get("kty"), entry.get("crv")) != (
            "OKP",
            "Ed25519",
        ):
            continue
        x = entry.get("x")
        try:
            raw = base64.urlsafe_b64decode(str(x) + "=" * (-len(str(x)) % 4))
            keys.append(Ed25519PublicKey.from_public_bytes(raw))
        except (ValueError, binascii.Error):
            continue
    if not keys:
        raise ProviderRetryableError("malformed_response", f"{provider}: JWKS holds no Ed25519 key")
    return keys


class FalSignatureVerifier:
    """Checks one account's webhooks; `fetch` GETs the JWKS body."""

    def __init__(
        self,
        provider: str,
        fetch: Callable[[], Awaitable[bytes]],
        *,
        tolerance_s: float = TOLERANCE_S,
        refresh_min_s: float = JWKS_REFRESH_MIN_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.provider = provider
        self._fetch = fetch
        self.tolerance_s = tolerance_s
        self.refresh_min_s = refresh_min_s
        self._clock = clock
        self._keys: list[Ed25519PublicKey] = []
        self._fetched_at = -math.inf
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def verify(self, headers: Mapping[str, str], body: bytes) -> str:
        """The verified request id; CallbackRejected for anything that does not check
        out, ProviderRetryableError when the keys cannot be fetched (try later)."""
        lower = {key.lower(): value for key, value in headers.items()}
        values = [lower.get(f"x-fal-webhook-{name}", "").strip() for name in HEADERS]
        request_id, user_id, timestamp, signature_hex = values
        if not all(values):
            missing = [
                f"X-Fal-Webhook-{n.title()}" for n, v in zip(HEADERS, values, strict=True) if not v
            ]
            raise CallbackRejected(f"{self.provider} callback: missing {', '.join(missing)}")
        if not (timestamp.isascii() and timestamp.isdigit()):
            raise CallbackRejected(f"{self.provider} callback: timestamp is not a number")
        if abs(self._clock() - int(timestamp)) > self.tolerance_s:
            raise CallbackRejected(f"{self.provider} callback: timestamp outside the tolerance")
        try:
            signature = bytes.fromhex(signature_hex)
        except ValueError as exc:
            raise CallbackRejected(f"{self.provider} callback: signature is not hex") from exc
        message = signed_message(request_id, user_id, timestamp, body)
        keys = await self._cached_keys()
        if _any_verifies(keys, signature, message):
            return request_id
        fresh = await self._refetch(stale=keys)
        if fresh is not None and _any_verifies(fresh, signature, message):
            return request_id
        raise CallbackRejected(f"{self.provider} callback: signature does not verify")

    async def _cached_keys(self) -> list[Ed25519PublicKey]:
        async with self._lock:
            if not self._keys or self._clock() - self._fetched_at > JWKS_TTL_S:
                await self._load()
            return self._keys

    async def _refetch(self, *, stale: list[Ed25519PublicKey]) -> list[Ed25519PublicKey] | None:
        """Fresh keys if the set may have rotated; None if fetched too recently."""
        async with self._lock:
            if self._keys is not stale:
                return self._keys  # another callback refreshed them meanwhile
            if self._clock() - self._fetched_at < self.refresh_min_s:
                return None
            await self._load()
            return self._keys

    async def _load(self) -> None:
        body = await self._fetch()
        self.fetches += 1
        self._keys = parse_jwks(self.provider, body)
        self._fetched_at = self._clock()


def _any_verifies(keys: list[Ed25519PublicKey], signature: bytes, message: bytes) -> bool:
    for key in keys:
        try:
            key.verify(signature, message)
        except InvalidSignature:
            continue
        return True
    return False
