"""Standard Webhooks signatures (https://www.standardwebhooks.com) and key material."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"
KEY_PREFIX = "dk_"


def new_webhook_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str, pepper: str) -> str:
    """Keys are long random strings, so one keyed hash is enough (no slow KDF needed)."""
    return hmac.new(pepper.encode(), key.encode(), hashlib.sha256).hexdigest()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: "v1,<base64 HMAC-SHA256 of id.timestamp.body>"."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    to_sign = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, to_sign, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class WebhookVerificationError(ValueError):
    """An inbound webhook whose headers or signature do not check out; the message says why."""


class SignatureMismatch(WebhookVerificationError):
    """Well-formed and fresh, but signed with another secret (or the body was changed)."""


def verify_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: int = 300,
    now: float | None = None,
) -> str:
    """Check a Standard Webhooks signature and return the `webhook-id`.

    The timestamp must be within `tolerance_s` of now either way (replays of an old
    message fail), and one of the space-separated `v1,<sig>` entries must match."""
    lower = {key.lower(): value for key, value in headers.items()}
    msg_id = lower.get("webhook-id", "")
    raw_timestamp = lower.get("webhook-timestamp", "")
    signatures = lower.get("webhook-signature", "")
    missing = [
        name
        for name, value in (
            ("webhook-id", msg_id),
            ("webhook-timestamp", raw_timestamp),
            ("webhook-signature", signatures),
        )
        if not value
    ]
    if missing:
        raise WebhookVerificationError(f"missing header(s): {', '.join(missing)}")
    try:
        timestamp = int(raw_timestamp)
    except ValueError:
        raise WebhookVerificationError(
            f"webhook-timestamp is not an integer: {raw_timestamp[:40]!r}"
        ) from None
    current = time.time() if now is None else now
    if timestamp < current - tolerance_s:
        raise WebhookVerificationError(
            f"webhook-timestamp is {current - timestamp:.0f}s old (limit {tolerance_s}s)"
        )
    if timestamp > current + tolerance_s:
        raise WebhookVerificationError(
            f"webhook-timestamp is {timestamp - current:.0f}s in the future (limit {tolerance_s}s)"
        )
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        raise WebhookVerificationError("the webhook secret is not valid base64")
    expected = sign(secret, msg_id, timestamp, body).encode()
    matched = False
    for candidate in signatures.split():
        # Every entry is compared, so the time taken does not reveal which one matched.
        matched |= hmac.compare_digest(candidate.encode(), expected)
    if not matched:
        raise SignatureMismatch("no webhook-signature entry matches the body")
    return msg_id
