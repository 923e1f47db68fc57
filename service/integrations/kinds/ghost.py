"""Ghost webhooks: `X-Ghost-Signature` verified, `{"post": {"current", "previous"}}` read.

Signature (Ghost's webhook trigger): `X-Ghost-Signature: sha256=<hex>, t=<ms>` where hex is
HMAC-SHA256 keyed with the webhook's secret over the raw body followed by the decimal
timestamp. The timestamp must be within REPLAY_WINDOW_MS of now, either way.

Which event: most Ghost versions do not name the event in the body (one webhook is made
per event, each with its own URL). In order:
1. a top-level `"event"` string in the body (some Ghost versions send it);
2. the `?event=` query parameter of the inbound URL (give each Ghost webhook its own
   `.../v1/hooks/<id>?event=post.published`);
3. inferred from `current` and `previous` (which holds only the changed keys):
   - `previous` empty: "post.published" if `current` is published (Ghost sends post.added
     and post.published alike for a post created published: both dedupe to one), else
     "post.added";
   - `current` empty: "post.deleted";
   - the status changed: "post.published" (now published), "post.unpublished" (was
     published), "post.scheduled" (now scheduled), else "post.edited";
   - the status did not change: "post.published.edited" if published, else "post.edited".
Only "post.published" makes a job by default: an edit of a draft is "post.edited".

Dedupe key: `post.current.id` + `updated_at` (a retried delivery carries both unchanged; a
later save changes updated_at), plus the event name, so that a `post.edited` delivered
with the same revision as a `post.published` (Ghost fires both on publish) cannot take
the publish's place.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any, ClassVar

from service.integrations.kinds import register
from service.integrations.kinds._common import (
    first_text,
    inbound_secret,
    names_of,
    plain_head,
    required_object,
    required_text,
    same,
    secret_block,
    text_fields,
)
from service.integrations.kinds.base import (
    REPLAY_WINDOW_MS,
    Article,
    InboundRequest,
    KindOptions,
    PayloadError,
    SignatureError,
)

HEADER = "x-ghost-signature"
PUBLISHED = "published"


def signature(secret: bytes, body: bytes, timestamp_ms: int) -> str:
    """The hex digest Ghost puts after `sha256=`."""
    return hmac.new(secret, body + str(timestamp_ms).encode(), hashlib.sha256).hexdigest()


def parse_header(value: str) -> tuple[str, int]:
    """(hex signature, timestamp ms) from `sha256=<hex>, t=<ms>`."""
    parts: dict[str, str] = {}
    for item in value.split(","):
        key, sep, val = item.strip().partition("=")
        if sep:
            parts[key.strip().lower()] = val.strip()
    digest, raw_t = parts.get("sha256", ""), parts.get("t", "")
    if not digest or not raw_t:
        raise SignatureError("X-Ghost-Signature is not of the form 'sha256=<hex>, t=<ms>'")
    try:
        return digest.lower(), int(raw_t)
    except ValueError:
        raise SignatureError("X-Ghost-Signature: t is not an integer") from None


def infer_event(current: Mapping[str, Any], previous: Mapping[str, Any]) -> str:
    status = current.get("status")
    if not current:
        return "post.deleted"
    if not previous:
        return "post.published" if status == PUBLISHED else "post.added"
    before = previous.get("status", status)
    if before != status:
        if status == PUBLISHED:
            return "post.published"
        if before == PUBLISHED:
            return "post.unpublished"
        return "post.scheduled" if status == "scheduled" else "post.edited"
    return "post.published.edited" if status == PUBLISHED else "post.edited"


def excerpt_of(post: Mapping[str, Any]) -> str:
    found = first_text(post, ("custom_excerpt", "excerpt"))
    return found if found is not None else plain_head(post.get("plaintext") or post.get("html"))


class GhostKind:
    name: ClassVar[str] = "ghost"
    default_events: ClassVar[tuple[str, ...]] = ("post.published",)

    def check_inbound(self, inbound: Mapping[str, Any]) -> dict[str, Any]:
        return secret_block(inbound, self.name)

    def verify(self, request: InboundRequest, inbound: Mapping[str, Any], now_ms: int) -> None:
        header = request.headers.get(HEADER, "")
        if not header:
            raise SignatureError("missing X-Ghost-Signature header")
        given, timestamp = parse_header(header)
        expected = signature(inbound_secret(inbound).encode(), request.body, timestamp)
        if not same(expected, given):
            raise SignatureError("X-Ghost-Signature does not match the body")
        if abs(now_ms - timestamp) > REPLAY_WINDOW_MS:
            raise SignatureError("X-Ghost-Signature timestamp is outside the 5-minute window")

    def read(self, request: InboundRequest, payload: Any, options: KindOptions) -> Article:
        if not isinstance(payload, dict):
            raise PayloadError("post", "the body is not a JSON object with a post")
        post = required_object(payload, "post", "post")
        current = required_object(post, "current", "post.current")
        raw_previous = post.get("previous")
        previous: dict[str, Any] = raw_previous if isinstance(raw_previous, dict) else {}
        event = self._event(payload, request, current, previous)
        # A deleted post has an empty current and the whole post in previous.
        doc, where = (
            (previous, "post.previous") if previous and not current else (current, "post.current")
        )
        post_id = required_text(doc, "id", f"{where}.id")
        updated_at = required_text(doc, "updated_at", f"{where}.updated_at")
        return Article(
            event_type=event,
            dedupe_key=f"{post_id}:{updated_at}:{event}",
            ref={"id": post_id, "updated_at": updated_at, "uuid": doc.get("uuid")},
            variables=self._variables(doc, post_id, payload),
        )

    @staticmethod
    def _event(
        payload: Mapping[str, Any],
        request: InboundRequest,
        current: Mapping[str, Any],
        previous: Mapping[str, Any],
    ) -> str:
        named = payload.get("event")
        if isinstance(named, str) and named.strip():
            return named.strip()
        query = request.query.get("event", "").strip()
        return query or infer_event(current, previous)

    @staticmethod
    def _variables(doc: Mapping[str, Any], post_id: str, payload: Any) -> dict[str, Any]:
        variables: dict[str, Any] = text_fields(
            doc, {"title": "title", "slug": "slug", "url": "url", "status": "status"}
        )
        locale = doc.get("locale")
        variables |= {
            "id": post_id,
            "excerpt": excerpt_of(doc),
            "tags": names_of(doc.get("tags")),
            "authors": names_of(doc.get("authors")),
            "language": locale if isinstance(locale, str) and locale else None,
            "raw": payload,
        }
        return variables


register(GhostKind())
