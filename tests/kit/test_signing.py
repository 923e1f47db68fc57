"""Inbound Standard Webhooks verification, checked against the reference implementation."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from service.kit.signing import (
    SignatureMismatch,
    WebhookVerificationError,
    new_webhook_secret,
    sign,
    verify_webhook,
)

NOW = 1_700_000_000
BODY = json.dumps({"id": "p1", "status": "succeeded"}).encode()


def reference_headers(secret: str, body: bytes = BODY, *, at: int = NOW) -> dict[str, str]:
    """Headers as the `standardwebhooks` package signs them."""
    signature = Webhook(secret).sign("msg_1", datetime.fromtimestamp(at, UTC), body.decode())
    return {"webhook-id": "msg_1", "webhook-timestamp": str(at), "webhook-signature": signature}


def test_accepts_what_the_reference_library_signs() -> None:
    secret = new_webhook_secret()
    assert verify_webhook(secret, reference_headers(secret), BODY, now=NOW) == "msg_1"


def test_reference_library_accepts_what_sign_produces() -> None:
    secret = new_webhook_secret()
    headers = {
        "webhook-id": "msg_2",
        "webhook-timestamp": str(NOW),
        "webhook-signature": sign(secret, "msg_2", NOW, BODY),
    }
    wh = Webhook(secret)
    # The reference checks against the clock; give it a fresh timestamp.
    fresh = int(datetime.now(UTC).timestamp())
    headers["webhook-timestamp"] = str(fresh)
    headers["webhook-signature"] = sign(secret, "msg_2", fresh, BODY)
    assert wh.verify(BODY, headers) == {"id": "p1", "status": "succeeded"}


def test_header_names_are_case_insensitive_and_any_of_several_signatures_may_match() -> None:
    secret, other = new_webhook_secret(), new_webhook_secret()
    headers = reference_headers(secret)
    wrong = sign(other, "msg_1", NOW, BODY)
    mixed = {
        "Webhook-Id": headers["webhook-id"],
        "WEBHOOK-TIMESTAMP": headers["webhook-timestamp"],
        "Webhook-Signature": f"v1a,ignored {wrong} {headers['webhook-signature']}",
    }
    assert verify_webhook(secret, mixed, BODY, now=NOW) == "msg_1"


def test_tampered_body_or_wrong_secret_is_a_signature_mismatch() -> None:
    secret = new_webhook_secret()
    headers = reference_headers(secret)
    with pytest.raises(SignatureMismatch):
        verify_webhook(secret, headers, BODY.replace(b"succeeded", b"failed"), now=NOW)
    with pytest.raises(SignatureMismatch):
        verify_webhook(new_webhook_secret(), headers, BODY, now=NOW)
    with pytest.raises(SignatureMismatch):
        verify_webhook(secret, headers | {"webhook-id": "msg_other"}, BODY, now=NOW)


@pytest.mark.parametrize(("offset", "word"), [(-301, "old"), (301, "future")])
def test_timestamp_outside_tolerance(offset: int, word: str) -> None:
    secret = new_webhook_secret()
    headers = reference_headers(secret, at=NOW + offset)
    with pytest.raises(WebhookVerificationError, match=word):
        verify_webhook(secret, headers, BODY, now=NOW)
    assert verify_webhook(secret, headers, BODY, now=NOW, tolerance_s=400) == "msg_1"


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_headers_are_named(missing: str) -> None:
    secret = new_webhook_secret()
    headers = reference_headers(secret)
    del headers[missing]
    with pytest.raises(WebhookVerificationError, match=missing):
        verify_webhook(secret, headers, BODY, now=NOW)


def test_non_integer_timestamp() -> None:
    secret = new_webhook_secret()
    headers = reference_headers(secret) | {"webhook-timestamp": "12.5"}
    with pytest.raises(WebhookVerificationError, match="not an integer"):
        verify_webhook(secret, headers, BODY, now=NOW)


def test_secret_that_is_not_base64() -> None:
    headers = reference_headers(new_webhook_secret())
    with pytest.raises(WebhookVerificationError, match="base64"):
        verify_webhook("whsec_%%%", headers, BODY, now=NOW)
