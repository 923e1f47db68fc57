"""A WordPress site with the WP Webhooks plugin: the REST API a write-back uses (posts,
media), with Application Password auth and WordPress's error shape, and the plugin's
post_create / post_update triggers signed as the plugin signs them.

REST API (every route goes through CmsSim.intercept first: logged, faults on demand):
- `GET /wp-json/wp/v2/posts/{id}` and `POST` `{"featured_media": id}` → the post;
- `POST /wp-json/wp/v2/media` raw bytes + `Content-Disposition: attachment; filename=...`
  → 201 media object; `GET /wp-json/wp/v2/media?search=` → the matching media.
Errors: `{"code", "message", "data": {"status"}}`. Posts and attachments share one id
counter, as they share wp_posts.

Control routes, beside CmsSim's: `POST /_sim/posts` (seed posts: WP_Post fields plus
"tags" and "categories" as names), `POST /_sim/publish` (change a post and POST the signed
trigger to a URL; "secret" forges it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulators.cms._ghostwp import deliver
from simulators.cms.base import CmsSim, cms_app
from simulators.responses import json_body, json_response

DEFAULT_USERNAME = "editor"
DEFAULT_APP_PASSWORD = "abcd EFGH 1234 ijkl MNOP 5678"
DEFAULT_WEBHOOK_SECRET = "wp-webhooks-trigger-secret"
USER_AGENT = "WP Webhooks/6.1.4 Trigger (WordPress/6.5.3)"
REST = "/wp-json/wp/v2"
_FILENAME = re.compile(r"""filename\*?=(?:UTF-8'')?"?([^";]+)"?""", re.IGNORECASE)


def wp_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def php_json(value: Any) -> bytes:
    """What wp_json_encode writes: compact, non-ASCII as \\uXXXX, and "/" escaped as "\\/"."""
    return json.dumps(value, separators=(",", ":")).replace("/", "\\/").encode()


def make_post(post_id: int, site: str, fields: dict[str, Any]) -> dict[str, Any]:
    """A WP_Post as the plugin serialises it."""
    now = wp_time(time.time())
    title = str(fields.pop("post_title", "Hello world!"))
    post = {
        "ID": post_id,
        "post_author": "1",
        "post_date": now,
        "post_date_gmt": now,
        "post_content": f"<!-- wp:paragraph --><p>{title}: the body.</p><!-- /wp:paragraph -->",
        "post_title": title,
        "post_excerpt": "",
        "post_status": "draft",
        "comment_status": "open",
        "ping_status": "open",
        "post_password": "",
        "post_name": "-".join(title.lower().split()),
        "to_ping": "",
        "pinged": "",
        "post_modified": now,
        "post_modified_gmt": now,
        "post_content_filtered": "",
        "post_parent": 0,
        "guid": f"{site}/?p={post_id}",
        "menu_order": 0,
        "post_type": "post",
        "post_mime_type": "",
        "comment_count": "0",
        "filter": "raw",
    }
    post.update(fields)
    return post


def permalink(post: dict[str, Any], site: str) -> str:
    if post.get("post_status") == "publish":
        return f"{site}/{post['post_name']}/"
    return f"{site}/?p={post['ID']}"


def _terms(names: list[str], taxonomy: str, first_id: int) -> dict[str, Any]:
    terms = {}
    for offset, name in enumerate(names):
        slug = "-".join(name.lower().split())
        term_id = first_id + offset
        terms[slug] = {"term_id": term_id, "name": name, "slug": slug, "term_group": 0}
        terms[slug] |= {"term_taxonomy_id": term_id, "taxonomy": taxonomy, "description": ""}
        terms[slug] |= {"parent": 0, "count": 1, "filter": "raw"}
    return terms


def signed_webhook(
    secret: str,
    post: dict[str, Any],
    event: str = "post_update",
    *,
    site: str = "http://wordpress.local",
    tags: list[str] | None = None,
    categories: list[str] | None = None,
    post_before: dict[str, Any] | None = None,
    thumbnail_url: str | None = None,
    webhook_name: str = "darkroom",
) -> tuple[dict[str, str], bytes]:
    """The headers and body WP Webhooks sends for trigger `event` ("post_create" or
    "post_update") about the WP_Post `post`, signed with the trigger secret."""
    taxonomies = {
        "category": _terms(categories or ["Uncategorized"], "category", 1),
        "post_tag": _terms(tags or [], "post_tag", 100),
    }
    data: dict[str, Any] = {
        "post_id": post["ID"],
        "post": post,
        "post_meta": {"_edit_lock": [f"{int(time.time())}:1"]},
    }
    if event == "post_update":
        data["post_before"] = post_before if post_before is not None else False
        data["post_permalink_before"] = permalink(post_before or post, site)
        data["post_meta_before"] = data["post_meta"]
    data |= {
        "post_thumbnail": thumbnail_url or False,
        "post_permalink": permalink(post, site),
        "taxonomies": {k: v or [] for k, v in taxonomies.items()},
    }
    body = php_json(data)
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    headers = {
        "content-type": "application/json; charset=UTF-8",
        "user-agent": USER_AGENT,
        "x-wp-webhook-source": site + "/",
        "x-wp-webhook-name": webhook_name,
        "x-wp-webhook-signature": base64.b64encode(digest).decode(),
    }
    return headers, body


def wp_error(status: int, code: str, message: str) -> Response:
    return json_response({"code": code, "message": message, "data": {"status": status}}, status)


def credentials_problem(authorization: str, username: str, password: str) -> Response | None:
    """None if the Basic credentials are the configured user's application password
    (WordPress ignores the spaces it displays it with); else WordPress's 401."""
    scheme, _, encoded = authorization.partition(" ")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        decoded = ""
    user, sep, given = decoded.partition(":")
    if scheme.lower() != "basic" or not sep:
        return wp_error(401, "rest_not_logged_in", "You are not currently logged in.")
    if not hmac.compare_digest(user.encode(), username.encode()):
        message = "Unknown username. Check again or try your email address."
        return wp_error(401, "invalid_username", message)
    if not hmac.compare_digest(given.replace(" ", "").encode(), password.replace(" ", "").encode()):
        message = "The provided password is an invalid application password."
        return wp_error(401, "incorrect_password", message)
    return None


class WordPressSim(CmsSim):
    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__("wordpress", config)
        self.config.setdefault("username", DEFAULT_USERNAME)
        self.config.setdefault("app_password", DEFAULT_APP_PASSWORD)
        self.config.setdefault("webhook_secret", DEFAULT_WEBHOOK_SECRET)
        self.posts: dict[int, dict[str, Any]] = {}  # id -> {"post", "tags", "categories", ...}
        self.media: dict[int, dict[str, Any]] = {}
        self.last_id = 0
        self.last_s = 0
        self._seed()

    def _seed(self) -> None:
        site = str(self.config.get("url") or "http://wordpress.local")
        for fields in self.config.get("posts", []):
            self.add_post(site, dict(fields))

    def reset(self) -> None:
        super().reset()
        self.posts.clear()
        self.media.clear()
        self._seed()

    def state(self) -> Any:
        return {"posts": self.posts, "media": list(self.media.values())}

    def next_id(self) -> int:
        self.last_id += 1
        return self.last_id

    def tick(self) -> str:
        """A new post_modified, strictly later than any before (WordPress keeps seconds)."""
        self.last_s = max(int(time.time()), self.last_s + 1)
        return wp_time(self.last_s)

    def site(self, request: Request) -> str:
        return str(self.config.get("url") or str(request.base_url)).rstrip("/")

    def add_post(self, site: str, fields: dict[str, Any]) -> dict[str, Any]:
        tags, categories = fields.pop("tags", []), fields.pop("categories", ["Uncategorized"])
        post_id = int(fields.pop("ID", 0)) or self.next_id()
        self.last_id = max(self.last_id, post_id)
        record = {
            "post": make_post(post_id, site, fields),
            "tags": list(tags),
            "categories": list(categories),
            "featured_media": 0,
        }
        self.posts[post_id] = record
        return record

    def auth(self, request: Request, required: bool) -> Response | None:
        header = request.headers.get("authorization", "")
        if not header and not required:
            return None
        return credentials_problem(header, self.config["username"], self.config["app_password"])

    def rest_post(self, record: dict[str, Any], site: str) -> dict[str, Any]:
        """The post as /wp/v2/posts shows it (context=edit)."""
        post = record["post"]
        return {
            "id": post["ID"],
            "date": post["post_date"].replace(" ", "T"),
            "modified": post["post_modified"].replace(" ", "T"),
            "slug": post["post_name"],
            "status": post["post_status"],
            "type": post["post_type"],
            "link": permalink(post, site),
            "title": {"raw": post["post_title"], "rendered": post["post_title"]},
            "excerpt": {"raw": post["post_excerpt"], "rendered": post["post_excerpt"]},
            "author": int(post["post_author"]),
            "featured_media": record["featured_media"],
        }

    def store_media(self, site: str, filename: str, content_type: str, data: bytes) -> Any:
        folder = datetime.now(UTC).strftime("%Y/%m")
        taken = {m["media_details"]["file"] for m in self.media.values()}
        stem, dot, ext = filename.rpartition(".")
        name, n = filename, 0
        while f"{folder}/{name}" in taken:
            n += 1
            name = f"{stem}-{n}{dot}{ext}"
        media_id, now = self.next_id(), self.tick()
        title = name.rpartition(".")[0] or name
        media = {
            "id": media_id,
            "date": now.replace(" ", "T"),
            "slug": title.lower(),
            "status": "inherit",
            "type": "attachment",
            "link": f"{site}/{title.lower()}/",
            "title": {"raw": title, "rendered": title},
            "author": 1,
            "media_type": "image",
            "mime_type": content_type,
            "source_url": f"{site}/wp-content/uploads/{folder}/{name}",
            "media_details": {"filesize": len(data), "file": f"{folder}/{name}", "sizes": {}},
            "post": None,
            # Not in WordPress's answer: what the simulator checks uploads by.
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        self.media[media_id] = media
        return media


def public_media(media: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in media.items() if k != "sha256"}


def rest_routes(sim: WordPressSim) -> list[Route]:
    async def guarded(request: Request, required: bool = True) -> Response | None:
        return await sim.intercept(request) or sim.auth(request, required)

    def record_of(request: Request) -> dict[str, Any] | None:
        return sim.posts.get(int(request.path_params["post_id"]))

    async def read_post(request: Request) -> Response:
        if (early := await guarded(request)) is not None:
            return early
        record = record_of(request)
        if record is None:
            return wp_error(404, "rest_post_invalid_id", "Invalid post ID.")
        return json_response(sim.rest_post(record, sim.site(request)))

    async def edit_post(request: Request) -> Response:
        if (early := await guarded(request)) is not None:
            return early
        record = record_of(request)
        if record is None:
            return wp_error(404, "rest_post_invalid_id", "Invalid post ID.")
        body = await json_body(request)
        if not isinstance(body, dict):
            return wp_error(400, "rest_invalid_json", "Invalid JSON body passed.")
        if "featured_media" in body:
            media_id = body["featured_media"]
            if media_id != 0 and media_id not in sim.media:
                return wp_error(400, "rest_invalid_featured_media", "Invalid featured media ID.")
            record["featured_media"] = media_id
        record["post"]["post_modified"] = record["post"]["post_modified_gmt"] = sim.tick()
        return json_response(sim.rest_post(record, sim.site(request)))

    async def upload(request: Request) -> Response:
        if (early := await guarded(request)) is not None:
            return early
        disposition = request.headers.get("content-disposition", "")
        match = _FILENAME.search(disposition)
        if not match:
            return wp_error(
                400, "rest_upload_no_content_disposition", "No Content-Disposition supplied."
            )
        data = await request.body()
        if not data:
            return wp_error(400, "rest_upload_no_data", "No data supplied.")
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("image/"):
            message = "Sorry, you are not allowed to upload this file type."
            return wp_error(500, "rest_upload_sideload_error", message)
        media = sim.store_media(sim.site(request), match.group(1), content_type, data)
        return json_response(public_media(media), 201)

    async def search_media(request: Request) -> Response:
        if (early := await guarded(request, required=False)) is not None:
            return early
        term = request.query_params.get("search", "").lower()
        per_page = int(request.query_params.get("per_page", "10") or 10)
        if not 1 <= per_page <= 100:
            message = "Invalid parameter(s): per_page"
            return wp_error(400, "rest_invalid_param", message)
        found = [m for m in sim.media.values() if term in m["title"]["raw"].lower()]
        found.sort(key=lambda m: m["id"], reverse=True)
        return json_response([public_media(m) for m in found[:per_page]])

    return [
        Route(REST + "/posts/{post_id:int}", read_post, methods=["GET"]),
        Route(REST + "/posts/{post_id:int}", edit_post, methods=["POST", "PUT", "PATCH"]),
        Route(REST + "/media", upload, methods=["POST"]),
        Route(REST + "/media", search_media, methods=["GET"]),
    ]


def control_routes(sim: WordPressSim) -> list[Route]:
    async def seed(request: Request) -> Response:
        spec = await json_body(request)
        items = spec if isinstance(spec, list) else [spec]
        if not all(isinstance(item, dict) for item in items):
            return json_response({"detail": "expected a post object or a list of them"}, 422)
        made = [sim.add_post(sim.site(request), dict(item)) for item in items]
        return json_response({"posts": made})

    async def publish(request: Request) -> Response:
        spec = await json_body(request)
        spec = spec if isinstance(spec, dict) else {}
        record = sim.posts.get(int(spec.get("post_id") or 0))
        if record is None or not spec.get("url"):
            return json_response({"detail": "expected {url, post_id (a known post), ...}"}, 422)
        post = record["post"]
        before = dict(post)
        post["post_status"] = str(spec.get("status") or "publish")
        post.update(spec.get("changes") or {})
        post["post_modified"] = post["post_modified_gmt"] = sim.tick()
        featured = sim.media.get(record["featured_media"])
        headers, body = signed_webhook(
            str(spec.get("secret") or sim.config["webhook_secret"]),
            post,
            str(spec.get("trigger") or "post_update"),
            site=sim.site(request),
            tags=record["tags"],
            categories=record["categories"],
            post_before=before,
            thumbnail_url=featured["source_url"] if featured else None,
        )
        status, answer = await deliver(str(spec["url"]), headers, body)
        sent = {"headers": headers, "body": body.decode()}
        return json_response({"status": status, "body": answer, "sent": sent})

    return [
        Route("/_sim/posts", seed, methods=["POST"]),
        Route("/_sim/publish", publish, methods=["POST"]),
    ]


def build_app(config: dict[str, Any] | None = None) -> Starlette:
    """A WordPress simulator; `config`: username, app_password, webhook_secret, posts
    (seeded on start and on reset), url (the site's URL; default: where it is served)."""
    sim = WordPressSim(config)
    return cms_app(sim, [*control_routes(sim), *rest_routes(sim)])
