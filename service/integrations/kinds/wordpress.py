"""WordPress webhooks, as the WP Webhooks plugin sends them: `X-WP-Webhook-Signature`
verified, its `post_create` / `post_update` trigger bodies read.

Signature: `X-WP-Webhook-Signature: <base64 HMAC-SHA256(secret, raw body)>`, sent when a
trigger secret is set in the plugin's settings. There is no timestamp, so there is no
replay window: a replayed delivery carries the same post_id and post_modified and is
deduplicated; a changed body fails the signature.

Body (JSON, the plugin's default): `post_id`, `post` (the WP_Post: post_title,
post_excerpt, post_name, post_status, post_modified, post_author, ...), `post_meta`,
`post_thumbnail`, `post_permalink`, `taxonomies` ({taxonomy: {slug: term}}), and for
`post_update` also `post_before` (the WP_Post before the save, or false).

Which event: the plugin names neither the trigger nor the event (X-WP-Webhook-Name is
the name the user gave the webhook). The trigger is the `?event=` query parameter of the
inbound URL if given, else "post_update" when the body has `post_before`, else
"post_create". Then, for these two triggers, the post's status qualifies it, so that a
draft's save is never a publish:
- published by this save: "post_create" or "post_update" (the defaults: they make a job);
- an edit of a post that was already published: "post_update.edited";
- not published: "<trigger>.<post_status>", e.g. "post_update.draft", "post_create.auto-draft".
An integration may list any of these in its `events` to widen what makes a job.

Dedupe key: `post_id` + `post.post_modified` (+ the event name, as for Ghost).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any, ClassVar

from service.integrations.kinds import register
from service.integrations.kinds._common import (
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
    Article,
    InboundRequest,
    KindOptions,
    PayloadError,
    SignatureError,
)

HEADER = "x-wp-webhook-signature"
PUBLISH = "publish"
POST_TRIGGERS = ("post_create", "post_update")


def signature(secret: bytes, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest()).decode()


def qualify(trigger: str, post: Mapping[str, Any], before: Any) -> str:
    """The event name for a trigger, given the post's status now and before the save."""
    if trigger not in POST_TRIGGERS:
        return trigger
    status = post.get("post_status")
    if status != PUBLISH:
        return f"{trigger}.{status if isinstance(status, str) and status else 'unknown'}"
    if trigger == "post_update" and isinstance(before, dict):
        if before.get("post_status") == PUBLISH:
            return "post_update.edited"
    return trigger


def terms(taxonomies: Any, taxonomy: str) -> list[str]:
    if not isinstance(taxonomies, dict):
        return []
    return names_of(taxonomies.get(taxonomy))


class WordPressKind:
    name: ClassVar[str] = "wordpress"
    default_events: ClassVar[tuple[str, ...]] = POST_TRIGGERS

    def check_inbound(self, inbound: Mapping[str, Any]) -> dict[str, Any]:
        return secret_block(inbound, self.name)

    def verify(self, request: InboundRequest, inbound: Mapping[str, Any], now_ms: int) -> None:
        given = request.headers.get(HEADER, "").strip()
        if not given:
            raise SignatureError(
                "missing X-WP-Webhook-Signature header (set a trigger secret in WP Webhooks)"
            )
        if not same(signature(inbound_secret(inbound).encode(), request.body), given):
            raise SignatureError("X-WP-Webhook-Signature does not match the body")

    def read(self, request: InboundRequest, payload: Any, options: KindOptions) -> Article:
        if not isinstance(payload, dict):
            raise PayloadError("post_id", "the body is not a JSON object with post_id and post")
        post_id = required_text(payload, "post_id", "post_id")
        post = required_object(payload, "post", "post")
        modified = required_text(post, "post_modified", "post.post_modified")
        before = payload.get("post_before")
        trigger = request.query.get("event", "").strip() or (
            "post_update" if "post_before" in payload else "post_create"
        )
        event = qualify(trigger, post, before)
        return Article(
            event_type=event,
            dedupe_key=f"{post_id}:{modified}:{event}",
            ref={
                "id": int(post_id) if post_id.isascii() and post_id.isdigit() else post_id,
                "modified": modified,
            },
            variables=self._variables(payload, post, post_id),
        )

    @staticmethod
    def _variables(
        payload: Mapping[str, Any], post: Mapping[str, Any], post_id: str
    ) -> dict[str, Any]:
        variables: dict[str, Any] = text_fields(
            post, {"title": "post_title", "slug": "post_name", "status": "post_status"}
        )
        variables |= text_fields(payload, {"url": "post_permalink"})
        excerpt = post.get("post_excerpt")
        taxonomies = payload.get("taxonomies")
        variables |= {
            "id": post_id,
            "excerpt": excerpt.strip()
            if isinstance(excerpt, str) and excerpt.strip()
            else plain_head(post.get("post_content")),
            "tags": terms(taxonomies, "post_tag"),
            "categories": terms(taxonomies, "category"),
            # The plugin sends the author's user id only (post.post_author), never a name.
            "authors": [],
            "language": None,
            "raw": payload,
        }
        return variables


register(WordPressKind())
