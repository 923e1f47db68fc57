"""The six CMS kinds as test cases (see cms_case.py): Ghost, WordPress, Strapi, Sanity,
Contentful, and generic with the catalogue simulator taking its write-back."""

from __future__ import annotations

import base64
import copy
from typing import Any

from simulators.cms import catalogue, contentful, ghost, sanity, strapi, wordpress
from tests.integrations.cms_case import (
    SLUG,
    TITLE,
    Case,
    Delivery,
    hmac_sha256,
    hook_path,
    now_ms,
    sim_call,
)
from tests.integrations.helpers import signed as standard_signed


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
        digest = hmac_sha256(self.secret, raw + str(stamp).encode()).hex()
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
        signature = base64.b64encode(hmac_sha256(self.secret, raw)).decode()
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
        mac = base64.urlsafe_b64encode(hmac_sha256(self.secret, b"%d." % stamp + raw)).rstrip(b"=")
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
        headers["x-contentful-signature"] = hmac_sha256(self.secret, message).hex()
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
