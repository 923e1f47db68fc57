"""One case per CMS kind for the end-to-end and refusal tests: its simulator, the article
it seeds, the integration body that points at it, its signed publish webhook (made by the
simulator's own `signed_webhook`), bodies that lack a field, and where the written-back
image shows in the simulator's state.

`sign_raw` signs arbitrary bytes as the CMS would (written here from the issue's
description of each scheme), for the malformed bodies a simulator would never send.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
from starlette.applications import Starlette

from simulators.cms import catalogue, contentful, ghost, sanity, strapi, wordpress
from tests.integrations.helpers import signed as standard_signed

TEMPLATE = {
    "prompt": "Editorial illustration for {{ title }}",
    "model": "local/procedural",
    "width": 64,
    "height": 64,
    "format": "png",
    "output_name": "{{ slug }}-cover",
}
TITLE = "Moths of the city"
SLUG = "moths-of-the-city"
STALE_MS = 10 * 60 * 1000


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Delivery:
    """A webhook as the CMS sends it."""

    headers: dict[str, str]
    body: bytes


async def sim_call(base: str, method: str, path: str, body: Any = None) -> Any:
    """A simulator's control route (or API route, unauthenticated)."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        response = await http.request(method, path, json=body)
    response.raise_for_status()
    return response.json()


def hook_path(integration: dict[str, Any]) -> str:
    return f"/v1/hooks/{integration['id']}"


class Case:
    kind: ClassVar[str]
    build: ClassVar[Callable[[dict[str, Any] | None], Starlette]]
    signature_headers: ClassVar[tuple[str, ...]]  # what a delivery without a signature lacks
    has_timestamp: ClassVar[bool] = True
    signs_body: ClassVar[bool] = True
    credential: ClassVar[str]  # the write-back credential, read from env_name
    secret: ClassVar[str] = ""

    @property
    def env_name(self) -> str:
        return f"E2E_{self.kind.upper()}_CREDENTIAL"

    def inbound(self) -> dict[str, Any]:
        return {"secret": self.secret}

    def writeback(self, base: str) -> dict[str, Any]:
        raise NotImplementedError

    def integration_body(self, base: str | None, callback_url: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": f"{self.kind} covers",
            "kind": self.kind,
            "inbound": self.inbound(),
            "template": TEMPLATE,
            "writeback": self.writeback(base) if base else None,
        }
        if callback_url:
            body["callback_url"] = callback_url
        return body

    async def seed(self, base: str) -> dict[str, Any]:
        """Add the article to the running simulator; returns it as the CMS has it."""
        raise NotImplementedError

    def offline_article(self) -> dict[str, Any]:
        """The article as the CMS would have it, without a simulator."""
        raise NotImplementedError

    def webhook(
        self,
        article: dict[str, Any],
        integration: dict[str, Any],
        *,
        secret: str | None = None,
        timestamp_ms: int | None = None,
    ) -> Delivery:
        raise NotImplementedError

    def sign_raw(self, raw: bytes, integration: dict[str, Any]) -> Delivery:
        raise NotImplementedError

    missing: ClassVar[tuple[str, str]]  # (a key of the article the kind needs, its name)

    def without_a_field(
        self, article: dict[str, Any], integration: dict[str, Any]
    ) -> tuple[Delivery, str]:
        """A signed webhook whose article lacks a field the kind cannot do without, and
        the name the answer gives that field."""
        key, name = self.missing
        changed = {k: v for k, v in article.items() if k != key}
        return self.webhook(changed, integration), name

    def untitled(self, article: dict[str, Any]) -> dict[str, Any]:
        """The article without the title the template needs."""
        raise NotImplementedError

    def image_on(self, state: Any, article: dict[str, Any]) -> Any:
        """The image the write-back left on the article (None if there is none), checked
        against what the simulator stored."""
        raise NotImplementedError


def _hmac(secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


class GhostCase(Case):
    kind = "ghost"
    build = staticmethod(ghost.build_app)
    signature_headers = ("x-ghost-signature",)
    credential = ghost.DEFAULT_ADMIN_KEY
    secret = ghost.DEFAULT_WEBHOOK_SECRET
    missing = ("updated_at", "post.current.updated_at")

    def writeback(self, base: str) -> dict[str, Any]:
        return {"base_url": base, "admin_key_env": self.env_name}

    async def seed(self, base: str) -> dict[str, Any]:
        answer = await sim_call(base, "POST", "/_sim/posts", self._fields())
        return dict(answer["posts"][0])

    def offline_article(self) -> dict[str, Any]:
        return ghost.make_post(**self._fields())

    @staticmethod
    def _fields() -> dict[str, Any]:
        return {
            "id": "6650aa0000000000000000e2",
            "title": TITLE,
            "slug": SLUG,
            "status": "published",
            "custom_excerpt": "Night walks with a lamp.",
        }

    def webhook(
        self,
        article: dict[str, Any],
        integration: dict[str, Any],
        *,
        secret: str | None = None,
        timestamp_ms: int | None = None,
    ) -> Delivery:
        headers, body = ghost.signed_webhook(
            secret or self.secret, article, "post.published", timestamp_ms=timestamp_ms
        )
        return Delivery(headers, body)

    def sign_raw(self, raw: bytes, integration: dict[str, Any]) -> Delivery:
        stamp = now_ms()
        digest = _hmac(self.secret, raw + str(stamp).encode()).hex()
        return Delivery({"x-ghost-signature": f"sha256={digest}, t={stamp}"}, raw)

    def untitled(self, article: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in article.items() if k != "title"}

    def image_on(self, state: Any, article: dict[str, Any]) -> Any:
        image = state["posts"][article["id"]]["feature_image"]
        assert [u["url"] for u in state["uploads"]] == ([image] if image else [])
        return image


class WordPressCase(Case):
    kind = "wordpress"
    build = staticmethod(wordpress.build_app)
    signature_headers = ("x-wp-webhook-signature",)
    has_timestamp = False
    credential = wordpress.DEFAULT_APP_PASSWORD
    secret = wordpress.DEFAULT_WEBHOOK_SECRET
    missing = ("post_modified", "post.post_modified")

    def writeback(self, base: str) -> dict[str, Any]:
        return {
            "base_url": base,
            "username": wordpress.DEFAULT_USERNAME,
            "app_password_env": self.env_name,
        }

    async def seed(self, base: str) -> dict[str, Any]:
        answer = await sim_call(base, "POST", "/_sim/posts", self._fields())
        return dict(answer["posts"][0]["post"])

    def offline_article(self) -> dict[str, Any]:
        return wordpress.make_post(7, "http://wordpress.local", self._fields())

    @staticmethod
    def _fields() -> dict[str, Any]:
        return {
            "post_title": TITLE,
            "post_name": SLUG,
            "post_status": "publish",
            "post_excerpt": "Night walks with a lamp.",
        }

    def webhook(
        self,
        article: dict[str, Any],
        integration: dict[str, Any],
        *,
        secret: str | None = None,
        timestamp_ms: int | None = None,
    ) -> Delivery:
        before = {**article, "post_status": "draft"}
        headers, body = wordpress.signed_webhook(
            secret or self.secret, article, "post_update", post_before=before
        )
        return Delivery(headers, body)

    def sign_raw(self, raw: bytes, integration: dict[str, Any]) -> Delivery:
        signature = base64.b64encode(_hmac(self.secret, raw)).decode()
        return Delivery({"x-wp-webhook-signature": signature}, raw)

    def untitled(self, article: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in article.items() if k != "post_title"}

    def image_on(self, state: Any, article: dict[str, Any]) -> Any:
        media_id = state["posts"][str(article["ID"])]["featured_media"]
        assert [m["id"] for m in state["media"]] == ([media_id] if media_id else [])
        return media_id or None


class StrapiCase(Case):
    kind = "strapi"
    build = staticmethod(strapi.build_app)
    signature_headers = ("authorization",)
    has_timestamp = False
    signs_body = False
    credential = strapi.DEFAULT_CONFIG["token"]
    value = strapi.DEFAULT_CONFIG["webhook_value"]
    missing = ("updatedAt", "entry.updatedAt")

    def inbound(self) -> dict[str, Any]:
        return {"header": "Authorization", "value": self.value}

    def writeback(self, base: str) -> dict[str, Any]:
        return {
            "base_url": base,
            "token_env": self.env_name,
            "ref": strapi.DEFAULT_UID,
            "field": "cover",
        }

    async def seed(self, base: str) -> dict[str, Any]:
        return dict(await sim_call(base, "POST", "/_sim/entries", self._fields()))

    def offline_article(self) -> dict[str, Any]:
        return strapi.StrapiSim().add_entry(self._fields())

    @staticmethod
    def _fields() -> dict[str, Any]:
        return {"title": TITLE, "slug": SLUG, "description": "Night walks with a lamp."}

    def webhook(
        self,
        article: dict[str, Any],
        integration: dict[str, Any],
        *,
        secret: str | None = None,
        timestamp_ms: int | None = None,
    ) -> Delivery:
        headers, body = strapi.signed_webhook(
            "entry.publish", article, header="Authorization", value=secret or self.value
        )
        return Delivery(headers, body)

    def sign_raw(self, raw: bytes, integration: dict[str, Any]) -> Delivery:
        return Delivery({"authorization": self.value}, raw)

    def untitled(self, article: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in article.items() if k != "title"}

    def image_on(self, state: Any, article: dict[str, Any]) -> Any:
        cover = state["entries"][strapi.DEFAULT_UID][str(article["id"])].get("cover")
        assert [f["id"] for f in state["files"]] == ([cover["id"]] if cover else [])
        return cover["url"] if cover else None


class SanityCase(Case):
    kind = "sanity"
    build = staticmethod(sanity.build_app)
    signature_headers = ("sanity-webhook-signature",)
    credential = sanity.DEFAULT_CONFIG["token"]
    secret = sanity.DEFAULT_CONFIG["secret"]
    missing = ("_rev", "_rev")

    def writeback(self, base: str) -> dict[str, Any]:
        return {
            "base_url": base,
            "dataset": sanity.DEFAULT_CONFIG["dataset"],
            "token_env": self.env_name,
            "field": "mainImage",
        }

    async def seed(self, base: str) -> dict[str, Any]:
        return dict(await sim_call(base, "POST", "/_sim/documents", self._fields()))

    def offline_article(self) -> dict[str, Any]:
        return sanity.SanitySim().add_document(self._fields())

    @staticmethod
    def _fields() -> dict[str, Any]:
        return {
            "_id": "post-moths",
            "_type": "post",
            "title": TITLE,
            "slug": {"_type": "slug", "current": SLUG},
        }

    def webhook(
        self,
        article: dict[str, Any],
        integration: dict[str, Any],
        *,
        secret: str | None = None,
        timestamp_ms: int | None = None,
    ) -> Delivery:
        headers, body = sanity.signed_webhook(
            article, secret=secret or self.secret, operation="create", timestamp_ms=timestamp_ms
        )
        return Delivery(headers, body)

    def sign_raw(self, raw: bytes, integration: dict[str, Any]) -> Delivery:
        stamp = now_ms()
        mac = base64.urlsafe_b64encode(_hmac(self.secret, b"%d." % stamp + raw)).rstrip(b"=")
        header = f"t={stamp},v1={mac.decode()}"
        return Delivery({"sanity-webhook-signature": header, "sanity-operation": "create"}, raw)

    def untitled(self, article: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in article.items() if k != "title"}

    def image_on(self, state: Any, article: dict[str, Any]) -> Any:
        image = state["documents"][article["_id"]].get("mainImage")
        if image is None:
            return None
        assert image["asset"]["_ref"] in state["assets"]
        return image["asset"]["_ref"]


class ContentfulCase(Case):
    kind = "contentful"
    build = staticmethod(contentful.build_app)
    signature_headers = ("x-contentful-signature",)
    credential = contentful.DEFAULTS["token"]
    secret = contentful.DEFAULTS["signing_secret"]
    topic = "ContentManagement.Entry.publish"

    def writeback(self, base: str) -> dict[str, Any]:
        return {
            "base_url": base,
            "upload_url": base,
            "space_id": contentful.DEFAULTS["space_id"],
            "environment": "master",
            "token_env": self.env_name,
            "field": "coverImage",
            "locale": "en-US",
        }

    async def seed(self, base: str) -> dict[str, Any]:
        return dict(await sim_call(base, "POST", "/_sim/entries", self._fields()))

    def offline_article(self) -> dict[str, Any]:
        return contentful.ContentfulSim().add_entry(self._fields())

    @staticmethod
    def _fields() -> dict[str, Any]:
        fields = {"title": {"en-US": TITLE}, "slug": {"en-US": SLUG}}
        return {"id": "mothsEntry", "fields": fields}

    def webhook(
        self,
        article: dict[str, Any],
        integration: dict[str, Any],
        *,
        secret: str | None = None,
        timestamp_ms: int | None = None,
    ) -> Delivery:
        headers, body = contentful.signed_webhook(
            secret or self.secret,
            article,
            self.topic,
            hook_path(integration),
            timestamp_ms=timestamp_ms,
        )
        return Delivery(headers, body)

    def sign_raw(self, raw: bytes, integration: dict[str, Any]) -> Delivery:
        headers = {"x-contentful-topic": self.topic, "x-contentful-timestamp": str(now_ms())}
        names = sorted([*headers, "x-contentful-signed-headers"])
        headers["x-contentful-signed-headers"] = ",".join(names)
        signed = ";".join(f"{name}:{headers[name]}" for name in names)
        message = f"POST\n{hook_path(integration)}\n{signed}\n".encode() + raw
        headers["x-contentful-signature"] = _hmac(self.secret, message).hex()
        return Delivery(headers, raw)

    def without_a_field(
        self, article: dict[str, Any], integration: dict[str, Any]
    ) -> tuple[Delivery, str]:
        changed = copy.deepcopy(article)
        del changed["sys"]["version"]
        return self.webhook(changed, integration), "sys.version"

    def untitled(self, article: dict[str, Any]) -> dict[str, Any]:
        changed = copy.deepcopy(article)
        del changed["fields"]["title"]
        return changed

    def image_on(self, state: Any, article: dict[str, Any]) -> Any:
        linked = state["entries"][article["sys"]["id"]]["fields"].get("coverImage")
        if linked is None:
            return None
        asset = state["assets"][linked["en-US"]["sys"]["id"]]
        assert asset["sys"].get("publishedVersion") is not None
        assert asset["fields"]["file"]["en-US"]["url"].startswith("//images.ctfassets.net/")
        return asset["fields"]["file"]["en-US"]["url"]


class GenericCase(Case):
    """Any CMS that signs Standard Webhooks; the catalogue simulator takes the
    write-back ("PATCH the product with its image URL")."""

    kind = "generic"
    build = staticmethod(catalogue.build_app)
    signature_headers = ("webhook-signature",)
    credential = "Bearer " + catalogue.DEFAULTS["token"]

    def inbound(self) -> dict[str, Any]:
        return {}

    def writeback(self, base: str) -> dict[str, Any]:
        return {
            "method": "PATCH",
            "url": base + "/products/{{ id }}",
            "headers": {"Authorization": {"env": self.env_name}},
            "body": {"image_url": "{{ output.url }}", "image_alt": "{{ title }}"},
        }

    async def seed(self, base: str) -> dict[str, Any]:
        await sim_call(base, "POST", "/_sim/products", {"id": "sku-7", "name": TITLE})
        return self.offline_article()

    def offline_article(self) -> dict[str, Any]:
        return {"id": "sku-7", "title": TITLE, "slug": SLUG, "excerpt": "A shelf of moths."}

    def webhook(
        self,
        article: dict[str, Any],
        integration: dict[str, Any],
        *,
        secret: str | None = None,
        timestamp_ms: int | None = None,
    ) -> Delivery:
        body = {"type": "article.published", "timestamp": "2026-12-01T10:00:00Z", "data": article}
        stamp = None if timestamp_ms is None else timestamp_ms // 1000
        raw, headers = standard_signed(secret or integration["secret"], body, timestamp=stamp)
        return Delivery(headers, raw)

    def sign_raw(self, raw: bytes, integration: dict[str, Any]) -> Delivery:
        body, headers = standard_signed(integration["secret"], raw)
        return Delivery(headers, body)

    def without_a_field(
        self, article: dict[str, Any], integration: dict[str, Any]
    ) -> tuple[Delivery, str]:
        raw, headers = standard_signed(integration["secret"], {"type": "article.published"})
        return Delivery(headers, raw), "data"

    def untitled(self, article: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in article.items() if k != "title"}

    def image_on(self, state: Any, article: dict[str, Any]) -> Any:
        return state["products"][article["id"]].get("image_url")


CASES: dict[str, Case] = {
    case.kind: case
    for case in (
        GhostCase(),
        WordPressCase(),
        StrapiCase(),
        SanityCase(),
        ContentfulCase(),
        GenericCase(),
    )
}
FORGED_SECRETS = {
    "ghost": "not-the-ghost-secret",
    "wordpress": "not-the-trigger-secret",
    "strapi": "Bearer not-the-token",
    "sanity": "not-the-sanity-secret",
    "contentful": "f" * 64,
    "generic": "whsec_" + base64.b64encode(b"another sender's key!!!!").decode(),
}
