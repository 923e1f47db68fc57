"""fal's completion webhooks: ED25519-signed, keys published as a JWKS, retried.

The signed message is `request_id \\n user_id \\n timestamp \\n sha256hex(body)`; the
signature travels hex-encoded in `X-Fal-Webhook-Signature`, beside
`X-Fal-Webhook-Request-Id`, `-User-Id` and `-Timestamp`. fal's headers name no key: a
receiver tries each key of the JWKS. Keys rotate (`rotate`): the new key signs from then
on, and the JWKS lists both until the old one is retired.

Forgeries for tests (`signature` mode): "forged" signs with a key the JWKS never lists,
"stale" signs correctly ten minutes in the past, "tampered" signs another body,
"unsigned" sends no signature header.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from simulators.webhooks import BackgroundPoster

SignatureMode = Literal["valid", "forged", "stale", "tampered", "unsigned"]
STALE_S = 600


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class SigningKey:
    kid: str
    private: Ed25519PrivateKey

    def jwk(self) -> dict[str, str]:
        raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw), "kid": self.kid, "use": "sig"}


def new_key() -> SigningKey:
    return SigningKey("fal-sim-" + secrets.token_hex(4), Ed25519PrivateKey.generate())


def signed_message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join((request_id, user_id, timestamp, digest)).encode()


@dataclass
class SigningKeys:
    """The keys in the JWKS, newest last; the newest signs."""

    published: list[SigningKey] = field(default_factory=lambda: [new_key()])

    @property
    def current(self) -> SigningKey:
        return self.published[-1]

    def rotate(self, *, retire_old: bool = False) -> SigningKey:
        key = new_key()
        self.published = [key] if retire_old else [*self.published, key]
        return key

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.jwk() for key in self.published]}

    def headers(
        self, request_id: str, user_id: str, body: bytes, mode: SignatureMode = "valid"
    ) -> dict[str, str]:
        timestamp = int(time.time()) - (STALE_S if mode == "stale" else 0)
        signer = new_key().private if mode == "forged" else self.current.private
        signed_body = body + b" " if mode == "tampered" else body
        message = signed_message(request_id, user_id, str(timestamp), signed_body)
        headers = {
            "content-type": "application/json",
            "x-fal-webhook-request-id": request_id,
            "x-fal-webhook-user-id": user_id,
            "x-fal-webhook-timestamp": str(timestamp),
        }
        if mode != "unsigned":
            headers["x-fal-webhook-signature"] = signer.sign(message).hex()
        return headers


@dataclass
class WebhookPolicy:
    user_id: str
    signature: SignatureMode
    retries: int
    backoff_s: float
    timeout_s: float


class WebhookSender(BackgroundPoster):
    """Deliveries run as background tasks: a slow receiver never delays the queue."""

    def __init__(self, keys: SigningKeys, counts: Counter[str]) -> None:
        super().__init__(httpx.Limits(max_connections=100))
        self.keys = keys
        self.counts = counts

    def send(self, url: str, request_id: str, body: bytes, policy: WebhookPolicy) -> None:
        self.spawn(self._deliver(url, request_id, body, policy))

    async def _deliver(self, url: str, request_id: str, body: bytes, policy: WebhookPolicy) -> None:
        for attempt in range(policy.retries + 1):
            if attempt:
                await asyncio.sleep(policy.backoff_s * 2 ** (attempt - 1))
            headers = self.keys.headers(request_id, policy.user_id, body, policy.signature)
            if await self.post(url, body, headers, policy.timeout_s, self.counts):
                return
        self.counts["webhooks_failed"] += 1
