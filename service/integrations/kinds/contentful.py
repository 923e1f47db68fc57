"""Contentful webhooks: request verification, and an entry read into template variables.

Verification follows Contentful's own library (@contentful/node-apps-toolkit,
`verifyRequest`): the signature is the hex HMAC-SHA256, under the space's signing secret,
of the canonical request

    METHOD \\n path \\n name:value;name:value... \\n body

where the headers are those named in `x-contentful-signed-headers` (names lower-cased,
values trimmed, sorted by name), `x-contentful-signed-headers` and `x-contentful-timestamp`
always among them, and the path is the request's path and query as sent, escaped the way
the library escapes it. Contentful's library allows 30 s of age by default; Darkroom allows
REPLAY_WINDOW_MS either way, like every other kind, and requires the timestamp to be signed
(an unsigned timestamp could be moved forward by anyone replaying the request).

A body is the entry as the Content Management API shows it: `sys` (id, version, space,
environment, contentType, ...) and `fields` as {name: {locale: value}}. The integration's
locale (KindOptions.locale, default en-US) picks which value of each field is read.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

from service.integrations.kinds import register
from service.integrations.kinds._common import (
    inbound_secret,
    only_fields,
    required_object,
    required_str,
    same,
)
from service.integrations.kinds.base import (
    REPLAY_WINDOW_MS,
    Article,
    InboundRequest,
    KindOptions,
    PayloadError,
    SignatureError,
)

SIGNATURE = "x-contentful-signature"
SIGNED_HEADERS = "x-contentful-signed-headers"
TIMESTAMP = "x-contentful-timestamp"
TOPIC = "x-contentful-topic"
TOPIC_PREFIX = "ContentManagement."
DEFAULT_LOCALE = "en-US"
# Contentful's rule for a webhook signing secret: exactly 64 characters of this alphabet.
_SECRET = re.compile(r"^[0-9a-zA-Z+/=_-]{64}$")
# What JavaScript's encodeURI and querystring.escape leave as they are (besides A-Za-z0-9).
_ENCODE_URI_SAFE = ";,/?:@&=+$-_.!~*'()#"
_ESCAPE_SAFE = "-_.!~*'()"
# The action of a topic, as the article's status.
_STATUS = {
    "publish": "published",
    "unpublish": "unpublished",
    "archive": "archived",
    "unarchive": "draft",
    "delete": "deleted",
    "create": "draft",
    "save": "draft",
    "auto_save": "draft",
}


def canonical_path(path: str) -> str:
    """The path as the toolkit signs it: the query (if any) escaped as one component, then
    the whole encoded as JavaScript's encodeURI does (so a '%' already there becomes %25)."""
    pathname, _, search = path.partition("?")
    if search:
        return quote(f"{pathname}?{quote(search, safe=_ESCAPE_SAFE)}", safe=_ENCODE_URI_SAFE)
    return quote(pathname, safe=_ENCODE_URI_SAFE)


def canonical_request(
    method: str, path: str, headers: Mapping[str, str], body: bytes, timestamp_ms: int
) -> bytes:
    """The bytes Contentful signs, from the headers it names (names lower-case, values
    trimmed); the signed-headers and timestamp headers are always in, with the values the
    toolkit gives them (the sorted list of names, and the timestamp as an integer)."""
    picked = {name.strip().lower(): value.strip() for name, value in headers.items()}
    names = sorted({*picked, SIGNED_HEADERS, TIMESTAMP})
    picked[SIGNED_HEADERS] = ",".join(names)
    picked[TIMESTAMP] = str(timestamp_ms)
    signed = ";".join(f"{name}:{picked[name]}" for name in names)
    head = f"{method.upper()}\n{canonical_path(path)}\n{signed}\n"
    return head.encode() + body


def sign(secret: str, canonical: bytes) -> str:
    return hmac.new(secret.encode(), canonical, hashlib.sha256).hexdigest()


def _path_as_sent(request: InboundRequest) -> str:
    """The ingest endpoint passes the raw path; a query, if it came apart, is put back."""
    if "?" in request.path or not request.query:
        return request.path
    return f"{request.path}?{urlencode(dict(request.query))}"


class ContentfulKind:
    name: ClassVar[str] = "contentful"
    default_events: ClassVar[tuple[str, ...]] = ("Entry.publish",)

    def check_inbound(self, inbound: Mapping[str, Any]) -> dict[str, Any]:
        only_fields(inbound, self.name, "secret")
        secret = inbound.get("secret")
        if not isinstance(secret, str) or not _SECRET.match(secret):
            raise ValueError(
                "inbound.secret: the webhook signing secret from Contentful's webhook settings"
                " (64 characters of A-Z, a-z, 0-9, + / = _ -)"
            )
        return {"secret": secret}

    def verify(self, request: InboundRequest, inbound: Mapping[str, Any], now_ms: int) -> None:
        headers = request.headers
        signature = headers.get(SIGNATURE, "").strip().lower()
        listed = headers.get(SIGNED_HEADERS, "")
        stamp = headers.get(TIMESTAMP, "").strip()
        if not signature or not listed or not stamp:
            raise SignatureError(f"missing {SIGNATURE}, {SIGNED_HEADERS} or {TIMESTAMP}")
        if not (stamp.isascii() and stamp.isdigit()):
            raise SignatureError(f"{TIMESTAMP} is not a time in milliseconds")
        timestamp_ms = int(stamp)
        if abs(now_ms - timestamp_ms) > REPLAY_WINDOW_MS:
            raise SignatureError(f"{TIMESTAMP} is outside the {REPLAY_WINDOW_MS // 1000} s window")
        names = {name.strip().lower() for name in listed.split(",") if name.strip()}
        if TIMESTAMP not in names:
            raise SignatureError(f"{TIMESTAMP} is not among the signed headers")
        missing = sorted(name for name in names if name not in headers)
        if missing:
            raise SignatureError(f"signed header {missing[0]} is not in the request")
        picked = {name: headers[name] for name in names}
        canonical = canonical_request(
            request.method, _path_as_sent(request), picked, request.body, timestamp_ms
        )
        if not same(sign(inbound_secret(inbound), canonical), signature):
            raise SignatureError(f"{SIGNATURE} does not match")

    def read(self, request: InboundRequest, payload: Any, options: KindOptions) -> Article:
        topic = request.headers.get(TOPIC, "").strip()
        if not topic.startswith(TOPIC_PREFIX):
            raise PayloadError(TOPIC, f"{TOPIC} must be a ContentManagement.<Type>.<action> topic")
        event_type = topic[len(TOPIC_PREFIX) :]
        if not isinstance(payload, dict):
            raise PayloadError("sys", "the body must be a Contentful entity (a JSON object)")
        sys = required_object(payload, "sys", "sys")
        entity_id = required_str(sys, "id", "sys.id")
        version = sys.get("version", sys.get("revision"))
        if isinstance(version, bool) or not isinstance(version, int):
            raise PayloadError("sys.version", "sys.version must be the entity's version number")
        locale = options.locale or DEFAULT_LOCALE
        ref: dict[str, Any] = {
            "entry_id": entity_id,
            "space_id": _link_id(sys, "space"),
            "environment_id": _link_id(sys, "environment") or "master",
            "content_type": _link_id(sys, "contentType"),
            "version": sys.get("version"),
            "published_version": sys.get("publishedVersion"),
        }
        variables: dict[str, Any] = {
            "id": entity_id,
            "language": locale,
            "status": _STATUS.get(event_type.rpartition(".")[2], event_type),
            "raw": payload,
        }
        # Only an entry has the fields a template reads; an unpublish or delete sends a
        # DeletedEntry without them, and is ignored by default.
        if sys.get("type") == "Entry":
            variables.update(_entry_variables(payload, locale, entity_id))
        return Article(
            event_type=event_type,
            dedupe_key=f"{entity_id}:{version}",
            ref=ref,
            variables=variables,
        )


def _entry_variables(payload: Mapping[str, Any], locale: str, entity_id: str) -> dict[str, Any]:
    fields = required_object(payload, "fields", "fields")

    def value(*names: str) -> Any:
        for name in names:
            localised = fields.get(name)
            if isinstance(localised, dict) and localised.get(locale) is not None:
                return localised[locale]
        return None

    title = value("title", "name", "headline")
    if not isinstance(title, str) or not title.strip():
        raise PayloadError(f"fields.title.{locale}", f"fields.title.{locale} is missing or empty")
    slug = value("slug")
    metadata = payload.get("metadata")
    tag_links = metadata.get("tags", []) if isinstance(metadata, dict) else []
    return {
        "title": title,
        "excerpt": _plain(value("excerpt", "description", "summary")),
        "slug": slug if isinstance(slug, str) and slug else _slugify(title) or entity_id,
        "url": _plain(value("url")),
        "tags": _names(value("tags")) + _names(tag_links),
        "authors": _names(value("authors", "author")),
    }


def _link_id(sys: Mapping[str, Any], key: str) -> str | None:
    link = sys.get(key)
    inner = link.get("sys") if isinstance(link, dict) else None
    found = inner.get("id") if isinstance(inner, dict) else None
    return found if isinstance(found, str) else None


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _names(value: Any) -> list[str]:
    """Strings as they are; links (to tags, to author entries) as the linked id."""
    items = value if isinstance(value, list) else [value] if value is not None else []
    names: list[str] = []
    for item in items:
        if isinstance(item, str) and item:
            names.append(item)
        elif isinstance(item, dict):
            linked = _link_id({"link": item}, "link")
            if linked:
                names.append(linked)
    return names


def _slugify(text: str) -> str:
    """A slug for an entry without one: "Nachtzüge Europas" -> "nachtzuge-europas"."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", plain.lower()).strip("-")[:80]


register(ContentfulKind())
