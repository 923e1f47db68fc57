"""Sanity GROQ-powered webhooks.

Sanity signs the raw body: `sanity-webhook-signature: t=<ms>,v1=<sig>`, where sig is the
unpadded base64url HMAC-SHA256 of `"<t>.<body>"` keyed with the webhook's secret (as
`@sanity/webhook` checks it). `t` must be within 5 minutes of now, either way.

The body is the document after the change, or whatever the webhook's GROQ projection
makes of it; `_id` and `_rev` must be in it (the default projection, the whole document,
has them). The operation comes in the `sanity-operation` header (create, update, delete);
`sanity-document-id`, `sanity-transaction-id`, `sanity-dataset`, `sanity-project-id`,
`sanity-webhook-id` and `idempotency-key` come too. Headers are not signed, so nothing
that decides identity is read from them.

Events: Sanity has no event names; the operation is the event. A published document's
first appearance (`create`) makes a job by default. `update` does not, and listing it
needs care: the write-back's own patch of the image field is an update of the same
document, so the webhook's filter should leave it out (e.g.
`!delta::changedOnly(mainImage)`), or every cover would order the next one. A draft or a
release version (`_id` "drafts.…" or "versions.…", sent only when the webhook includes
drafts) reports `draft.create`, `draft.update`, ...: never a publish unless listed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any, ClassVar

from service.integrations.kinds import register
from service.integrations.kinds._common import (
    first_text,
    first_texts,
    inbound_secret,
    names_in,
    required_str,
    same,
    secret_block,
)
from service.integrations.kinds.base import (
    REPLAY_WINDOW_MS,
    Article,
    InboundRequest,
    KindOptions,
    PayloadError,
    SignatureError,
)

SIGNATURE_HEADER = "sanity-webhook-signature"
OPERATIONS = frozenset({"create", "update", "delete"})
# Sanity sends one v1; a few are accepted (a secret being rotated), no more.
MAX_SIGNATURES = 4
MAX_EXCERPT_CHARS = 1000
PROJECT_ID_REV = "include _id and _rev in the projection"
EXCERPT_FIELDS = ("excerpt", "description", "summary", "subtitle")
BODY_FIELDS = ("body", "content", "text")


def signature(secret: str, timestamp_ms: int, body: bytes) -> str:
    """The v1 value Sanity sends for `body` at `timestamp_ms`."""
    mac = hmac.new(secret.encode(), f"{timestamp_ms}.".encode() + body, hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def parse_signature_header(value: str) -> tuple[int, list[str]]:
    """`t=<ms>,v1=<sig>[,v1=<sig>]` (commas and/or blanks between parts)."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in value.replace(",", " ").split():
        key, sep, item = part.partition("=")
        if not sep:
            raise SignatureError("malformed sanity-webhook-signature header")
        if key == "t":
            if not (item.isascii() and item.isdigit()) or timestamp is not None or len(item) > 16:
                raise SignatureError("malformed timestamp in sanity-webhook-signature")
            timestamp = int(item)
        elif key == "v1" and item:
            candidates.append(item.rstrip("="))
    if timestamp is None or not candidates:
        raise SignatureError("sanity-webhook-signature needs t= and v1=")
    if len(candidates) > MAX_SIGNATURES:
        raise SignatureError("too many signatures in sanity-webhook-signature")
    return timestamp, candidates


def _plain_text(blocks: Any) -> str:
    """The text of simple Portable Text: the spans of each block, blocks on new lines."""
    if not isinstance(blocks, list):
        return ""
    lines: list[str] = []
    for block in blocks:
        if not isinstance(block, Mapping) or block.get("_type") != "block":
            continue
        spans = block.get("children")
        if isinstance(spans, list):
            text = "".join(
                span["text"]
                for span in spans
                if isinstance(span, Mapping) and isinstance(span.get("text"), str)
            )
            if text.strip():
                lines.append(text.strip())
        if sum(len(line) for line in lines) >= MAX_EXCERPT_CHARS:
            break
    return "\n".join(lines)[:MAX_EXCERPT_CHARS]


def is_draft(document_id: str) -> bool:
    return document_id.startswith(("drafts.", "versions."))


class SanityKind:
    name: ClassVar[str] = "sanity"
    default_events: ClassVar[tuple[str, ...]] = ("create",)

    def check_inbound(self, inbound: Mapping[str, Any]) -> dict[str, Any]:
        return secret_block(
            inbound, self.name, "the secret typed into the Sanity webhook", max_chars=4096
        )

    def verify(self, request: InboundRequest, inbound: Mapping[str, Any], now_ms: int) -> None:
        header = request.headers.get(SIGNATURE_HEADER)
        if header is None:
            raise SignatureError("missing sanity-webhook-signature header")
        timestamp, candidates = parse_signature_header(header)
        if abs(now_ms - timestamp) > REPLAY_WINDOW_MS:
            raise SignatureError(
                "sanity-webhook-signature timestamp is outside the 5-minute window"
            )
        expected = signature(inbound_secret(inbound), timestamp, request.body)
        matched = False
        for candidate in candidates:  # every one compared: no early exit to time
            matched |= same(expected, candidate)
        if not matched:
            raise SignatureError("sanity-webhook-signature does not match the body")

    def read(self, request: InboundRequest, payload: Any, options: KindOptions) -> Article:
        if not isinstance(payload, Mapping):
            raise PayloadError("", "the body is not a JSON object: project the document")
        document_id = required_str(payload, "_id", "_id", f"missing _id: {PROJECT_ID_REV}")
        revision = required_str(payload, "_rev", "_rev", f"missing _rev: {PROJECT_ID_REV}")
        operation = request.headers.get("sanity-operation", "").strip().lower()
        if operation not in OPERATIONS:
            raise PayloadError(
                "sanity-operation", "missing sanity-operation header (create, update, delete)"
            )
        draft = is_draft(document_id)
        return Article(
            event_type=f"draft.{operation}" if draft else operation,
            dedupe_key=f"{document_id}:{revision}",
            ref={
                "_id": document_id,
                "_rev": revision,
                "_type": payload.get("_type"),
                "dataset": request.headers.get("sanity-dataset"),
                "project_id": request.headers.get("sanity-project-id"),
            },
            variables=self._variables(payload, document_id, draft),
        )

    def _variables(
        self, document: Mapping[str, Any], document_id: str, draft: bool
    ) -> dict[str, Any]:
        """Present when the document has them (a template using an absent one fails with
        the variable's name); excerpt, tags and authors default to empty."""
        excerpt = first_text(document, EXCERPT_FIELDS)
        if excerpt is None:
            excerpt = next(
                (t for t in (_plain_text(document.get(f)) for f in BODY_FIELDS) if t), ""
            )
        variables: dict[str, Any] = {
            "excerpt": excerpt,
            "tags": names_in(document.get("tags", document.get("categories")), ("title", "name")),
            "authors": names_in(
                document.get("authors", document.get("author")), ("name", "title", "fullName")
            ),
            "id": document_id,
            "status": "draft" if draft else "published",
            "raw": dict(document),
        }
        variables |= first_texts(
            document,
            {
                "title": ("title", "name", "headline"),
                "url": ("url",),
                "language": ("language", "locale", "__i18n_lang"),
            },
        )
        slug = document.get("slug")
        if isinstance(slug, Mapping):
            slug = slug.get("current")
        if isinstance(slug, str) and slug.strip():
            variables["slug"] = slug.strip()
        return variables


register(SanityKind())
