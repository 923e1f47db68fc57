"""Strapi (v4 and v5) webhooks.

Strapi signs nothing: the admin adds a static header to the webhook (Settings > Webhooks
> Headers, or `webhooks.defaultHeaders` in config/server), typically
`Authorization: Bearer <token>`. The integration names that header and its value, and the
value is compared in constant time.

The body is `{"event", "createdAt", "model", "uid", "entry"}`; `entry` is the entry as the
Content API would show it (v5 adds `documentId`, and populates relations). The header
`X-Strapi-Event` repeats `event`.

Events: `entry.publish` makes a job by default. Every other event is the CMS's own name
and makes a job only when the integration lists it:
- `entry.update` is both a draft being saved (`entry.publishedAt` null) and, in Strapi v4
  or a content type without Draft & Publish, an edit of a live entry. Listing it accepts
  both; the `status` variable ("draft" or "published") tells a template which it was.
- a content type without Draft & Publish never sends `entry.publish`: list `entry.create`.
Strapi sends one webhook for every content type; the write-back refuses an entry of
another model than its `ref`, so a webhook limited to the article type costs least.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from service.integrations.kinds import register
from service.integrations.kinds._common import (
    first_text,
    first_texts,
    names_in,
    only_fields,
    required_object,
    required_str,
)
from service.integrations.kinds.base import (
    Article,
    InboundRequest,
    KindOptions,
    PayloadError,
    SignatureError,
)

# RFC 9110 field-name: a token.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,100}$")
# Headers every request carries or Strapi sets itself: naming one would authenticate
# anyone.
_NOT_SECRET = frozenset(
    {
        "accept",
        "accept-encoding",
        "connection",
        "content-length",
        "content-type",
        "host",
        "transfer-encoding",
        "user-agent",
        "x-strapi-event",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-real-ip",
    }
)
MIN_VALUE_CHARS = 16
MAX_VALUE_CHARS = 4096
EXCERPT_FIELDS = ("excerpt", "description", "summary", "subtitle")
TITLE_FIELDS = ("title", "name", "headline")


def _digest(value: str) -> bytes:
    # Comparing digests keeps the comparison constant-time in the value's length too.
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


class StrapiKind:
    name: ClassVar[str] = "strapi"
    default_events: ClassVar[tuple[str, ...]] = ("entry.publish",)

    def check_inbound(self, inbound: Mapping[str, Any]) -> dict[str, Any]:
        only_fields(inbound, self.name, "header", "value")
        header = inbound.get("header")
        value = inbound.get("value")
        if not isinstance(header, str) or not _HEADER_NAME.match(header):
            raise ValueError("inbound.header: required, a header name such as Authorization")
        if header.lower() in _NOT_SECRET:
            raise ValueError(f"inbound.header: {header} is sent by every client, not a secret")
        if not isinstance(value, str) or not value.strip():
            raise ValueError("inbound.value: required, the header's value as Strapi sends it")
        value = value.strip()
        if len(value) < MIN_VALUE_CHARS or len(value) > MAX_VALUE_CHARS:
            raise ValueError(
                f"inbound.value: must be {MIN_VALUE_CHARS} to {MAX_VALUE_CHARS} characters "
                "(e.g. 'Bearer ' and a long random token)"
            )
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise ValueError("inbound.value: control characters cannot be sent in a header")
        return {"header": header, "value": value}

    def verify(self, request: InboundRequest, inbound: Mapping[str, Any], now_ms: int) -> None:
        header = str(inbound["header"])
        received = request.headers.get(header.lower())
        if received is None:
            raise SignatureError(f"missing {header} header")
        # Strapi sends the value as typed; surrounding blanks are not part of it.
        if not hmac.compare_digest(_digest(received.strip()), _digest(str(inbound["value"]))):
            raise SignatureError(f"{header} header does not match")

    def read(self, request: InboundRequest, payload: Any, options: KindOptions) -> Article:
        if not isinstance(payload, Mapping):
            raise PayloadError("", "the body is not a JSON object")
        event = required_str(payload, "event", "event", "missing event (e.g. entry.publish)")
        entry = required_object(
            payload, "entry", "entry", f"missing entry: a {event} event without an entry"
        )
        row_id = entry.get("id")
        if not isinstance(row_id, int | str) or isinstance(row_id, bool) or row_id == "":
            raise PayloadError("entry.id", "missing entry.id")
        document_id = entry.get("documentId")
        updated_at = entry.get("updatedAt", entry.get("updated_at"))
        if not isinstance(updated_at, str) or not updated_at:
            raise PayloadError("entry.updatedAt", "missing entry.updatedAt")
        uid = payload.get("uid") if isinstance(payload.get("uid"), str) else None
        model = payload.get("model") if isinstance(payload.get("model"), str) else None
        if uid is None and model is None:
            raise PayloadError("model", "missing model and uid: which content type is this?")
        locale = entry.get("locale") if isinstance(entry.get("locale"), str) else None
        identity = str(document_id) if isinstance(document_id, str) and document_id else str(row_id)
        return Article(
            event_type=event,
            # Retries repeat all of these; another event about the same revision (v5 sends
            # entry.update and entry.publish for one save-and-publish) does not collide.
            dedupe_key=":".join((event, uid or model or "", identity, locale or "", updated_at)),
            ref={
                "id": row_id,  # the row id: what the upload API's refId links to
                "documentId": document_id,
                "uid": uid,
                "model": model,
                "locale": locale,
                "updatedAt": updated_at,
            },
            variables=self._variables(entry, identity, locale, dict(payload)),
        )

    def _variables(
        self, entry: Mapping[str, Any], identity: str, locale: str | None, raw: dict[str, Any]
    ) -> dict[str, Any]:
        """Present when the entry has them (a template using an absent one fails with the
        variable's name); excerpt, tags and authors default to empty."""
        published = entry.get("publishedAt", "absent")  # absent: no Draft & Publish
        variables: dict[str, Any] = {
            "excerpt": first_text(entry, EXCERPT_FIELDS) or "",
            "tags": names_in(entry.get("tags"), ("name", "title", "slug")),
            "authors": names_in(
                entry.get("authors", entry.get("author")),
                ("name", "username", "fullName", "firstname", "email"),
            ),
            "id": identity,
            "status": "draft" if published is None else "published",
            "raw": raw,
        }
        variables |= first_texts(entry, {"title": TITLE_FIELDS, "slug": ("slug",), "url": ("url",)})
        if locale is not None:
            variables["language"] = locale
        return variables


register(StrapiKind())
