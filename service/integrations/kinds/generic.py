"""generic: any CMS or app that can send a Standard Webhooks request
(https://www.standardwebhooks.com): `webhook-id`, `webhook-timestamp` (seconds) and
`webhook-signature` ("v1,<base64 HMAC-SHA256 of id.timestamp.body>", several allowed,
space-separated, so a sender can rotate its secret), signed with a whsec_ secret that
Darkroom makes when the integration is created.

The body is the spec's own envelope: {"type": "article.published", "timestamp": ...,
"data": {"title", "excerpt", "slug", "url", "tags", "authors", "id", "language",
"status"}}. Only `type` and `data` are read; the template sees `data`'s fields and the
whole body as `raw`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, ClassVar

from service.integrations.kinds import register
from service.integrations.kinds._common import (
    inbound_secret,
    only_fields,
    required_object,
    required_str,
)
from service.integrations.kinds.base import (
    REPLAY_WINDOW_MS,
    Article,
    InboundRequest,
    KindOptions,
    PayloadError,
    SignatureError,
)
from service.kit.signing import SECRET_PREFIX, WebhookVerificationError, new_webhook_secret
from service.kit.signing import verify_webhook as verify_standard_webhook

VARIABLES = ("title", "excerpt", "slug", "url", "tags", "authors", "id", "language", "status")
MIN_SECRET_BYTES = 24
MAX_WEBHOOK_ID = 255


class GenericKind:
    name: ClassVar[str] = "generic"
    # A sender names its own event types; these two are what CMSs call a publish.
    default_events: ClassVar[tuple[str, ...]] = ("article.published", "post.published")

    def check_inbound(self, inbound: Mapping[str, Any]) -> dict[str, Any]:
        """{} makes a new secret (returned once by the API); {"secret": "whsec_..."} keeps
        a sender's existing one, e.g. when an integration is moved."""
        only_fields(inbound, self.name, "secret")
        secret = inbound.get("secret")
        if secret is None:
            return {"secret": new_webhook_secret()}
        if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
            raise ValueError(f"secret: must be a {SECRET_PREFIX} secret, or leave it out")
        try:
            key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("secret: the part after whsec_ must be base64") from None
        if len(key) < MIN_SECRET_BYTES:
            raise ValueError(f"secret: must hold at least {MIN_SECRET_BYTES} random bytes")
        return {"secret": secret}

    def verify(self, request: InboundRequest, inbound: Mapping[str, Any], now_ms: int) -> None:
        try:
            verify_standard_webhook(
                inbound_secret(inbound),
                request.headers,
                request.body,
                tolerance_s=REPLAY_WINDOW_MS // 1000,
                now=now_ms / 1000,
            )
        except WebhookVerificationError as exc:
            raise SignatureError(str(exc)) from None

    def read(self, request: InboundRequest, payload: Any, options: KindOptions) -> Article:
        if not isinstance(payload, dict):
            raise PayloadError("body", "must be a JSON object with 'type' and 'data'")
        event_type = required_str(
            payload, "type", "type", "missing: the event type, e.g. 'article.published'"
        )
        data = required_object(
            payload, "data", "data", "missing: an object with the article's fields"
        )
        webhook_id = request.headers.get("webhook-id", "")
        if len(webhook_id) > MAX_WEBHOOK_ID:
            raise PayloadError("webhook-id", f"longer than {MAX_WEBHOOK_ID} characters")
        # A field that is absent or null stays undefined, so a template that needs it
        # fails naming it (`| default(...)` makes it optional).
        variables = {name: data[name] for name in VARIABLES if data.get(name) is not None}
        variables["raw"] = payload
        return Article(
            event_type=event_type,
            dedupe_key=webhook_id,
            ref={"id": data.get("id"), "webhook_id": webhook_id},
            variables=variables,
        )


generic = register(GenericKind())
