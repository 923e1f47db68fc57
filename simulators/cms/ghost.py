"""A Ghost site: the Admin API a write-back uses (posts, image uploads), with Ghost's JWT
checks, update collisions and error shapes, and webhooks signed as Ghost signs them.

Admin API (every route goes through CmsSim.intercept first: logged, faults on demand):
- `GET /ghost/api/admin/posts/{id}/` → `{"posts": [post]}`;
- `PUT /ghost/api/admin/posts/{id}/` `{"posts": [{..., "updated_at"}]}` → 409
  UpdateCollisionError unless updated_at is the post's current one;
- `POST /ghost/api/admin/images/upload/` multipart `file` (+ `ref`) → 201
  `{"images": [{"url", "ref"}]}`.
Auth: `Authorization: Ghost <jwt>`, HS256 with a configured key's hex secret, kid = key
id, aud "/admin/", iat within 5 minutes, exp not past and at most 5 minutes after iat.

Control routes, beside CmsSim's: `POST /_sim/posts` (seed posts), `POST /_sim/publish`
(change a post and POST the signed webhook to a URL; "secret" and "timestamp_ms" forge or
age it), `POST /_sim/collide` (the next PUTs of a post find it saved by someone else).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulators.cms._ghostwp import deliver, jwt_parts, now_ms
from simulators.cms.base import CmsSim, FormPart, cms_app, parse_multipart
from simulators.responses import dump, json_body, json_response

DEFAULT_ADMIN_KEY_ID = "6650f1c2a3b4c5d6e7f80912"
DEFAULT_ADMIN_KEY_SECRET = "5f" * 8 + "a1b2c3d4" * 6
DEFAULT_ADMIN_KEY = f"{DEFAULT_ADMIN_KEY_ID}:{DEFAULT_ADMIN_KEY_SECRET}"
DEFAULT_WEBHOOK_SECRET = "ghost-webhook-secret-0123456789"
GHOST_VERSION = "5.82"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".gif", ".png", ".svg", ".webp", ".ico")
MAX_TOKEN_AGE_S = 5 * 60
ADMIN = "/ghost/api/admin"


def iso(ms: int) -> str:
    """Ghost's timestamps: ISO 8601 in UTC with milliseconds."""
    stamp = datetime.fromtimestamp(ms / 1000, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def make_post(site: str = "http://ghost.local", **fields: Any) -> dict[str, Any]:
    """A post as the Admin API serialises it (the fields a webhook carries)."""
    post_id = fields.pop("id", None) or secrets.token_hex(12)
    title = fields.pop("title", "A post")
    slug = fields.pop("slug", None) or "-".join(title.lower().split())
    stamp = iso(now_ms())
    post = {
        "id": post_id,
        "uuid": fields.pop("uuid", None) or f"{secrets.token_hex(4)}-{secrets.token_hex(2)}",
        "title": title,
        "slug": slug,
        "html": f"<p>{title}: the body.</p>",
        "plaintext": f"{title}: the body.",
        "comment_id": post_id,
        "feature_image": None,
        "featured": False,
        "status": "draft",
        "visibility": "public",
        "created_at": stamp,
        "updated_at": stamp,
        "published_at": None,
        "custom_excerpt": None,
        "excerpt": f"{title}: the body.",
        "tags": [],
        "authors": [{"id": "1", "name": "Ghost Writer", "slug": "ghost-writer"}],
        "url": f"{site}/p/{post_id}/",
        "reading_time": 1,
    }
    post.update(fields)
    return post


def signed_webhook(
    secret: str,
    post: dict[str, Any],
    event: str = "post.published",
    *,
    previous: dict[str, Any] | None = None,
    timestamp_ms: int | None = None,
    include_event: bool = False,
) -> tuple[dict[str, str], bytes]:
    """The headers and body Ghost sends for `event` about `post` (the body as
    JSON.stringify writes it, signed over body + timestamp). Without `previous`, the changed
    keys Ghost would report for the event are made up from `post`."""
    if previous is None:
        previous = previous_for(event, post)
    payload: dict[str, Any] = {"post": {"current": post, "previous": previous}}
    if include_event:
        payload = {"event": event, **payload}
    body = dump(payload)
    stamp = now_ms() if timestamp_ms is None else timestamp_ms
    digest = hmac.new(secret.encode(), body + str(stamp).encode(), hashlib.sha256).hexdigest()
    headers = {
        "content-type": "application/json",
        "content-version": f"v{GHOST_VERSION}",
        "user-agent": f"Ghost/{GHOST_VERSION}.0 (https://github.com/TryGhost/Ghost)",
        "x-ghost-signature": f"sha256={digest}, t={stamp}",
    }
    return headers, body


def previous_for(event: str, post: dict[str, Any]) -> dict[str, Any]:
    earlier = post.get("created_at") or post.get("updated_at")
    if event == "post.added":
        return {}
    if event == "post.published":
        return {"status": "draft", "published_at": None, "updated_at": earlier}
    if event == "post.unpublished":
        return {"status": "published", "updated_at": earlier}
    return {"updated_at": earlier}


def ghost_error(status: int, kind: str, message: str, code: str | None = None) -> Response:
    """Ghost's error body: `{"errors": [{"message", "context", "type", ...}]}`."""
    error = {
        "message": message,
        "context": None,
        "type": kind,
        "details": None,
        "property": None,
        "help": None,
        "code": code,
        "id": secrets.token_hex(8),
        "ghostErrorCode": None,
    }
    return json_response({"errors": [error]}, status)


def token_problem(authorization: str, keys: dict[str, str], now_s: float) -> Response | None:
    """None if the Admin API JWT is good; else Ghost's answer to it."""
    scheme, _, token = authorization.partition(" ")
    if not authorization:
        return ghost_error(403, "NoPermissionError", "Authorization failed", "NO_AUTH")
    if scheme.lower() != "ghost" or not token.strip():
        message = 'Authorization header format is "Authorization: Ghost [token]"'
        return ghost_error(401, "UnauthorizedError", message, "INVALID_AUTH_HEADER")
    parts = jwt_parts(token.strip())
    if parts is None:
        return ghost_error(400, "BadRequestError", "Invalid token", "INVALID_JWT")
    header, claims, signing_input, sig = parts
    kid = header.get("kid")
    if not kid:
        return ghost_error(
            400, "BadRequestError", "Admin API kid missing.", "MISSING_ADMIN_API_KID"
        )
    if kid not in keys:
        return ghost_error(
            401, "UnauthorizedError", "Unknown Admin API Key", "UNKNOWN_ADMIN_API_KEY"
        )
    problem = claims_problem(header, claims, signing_input, sig, keys[kid], now_s)
    if problem:
        return ghost_error(401, "UnauthorizedError", f"Invalid token: {problem}", "INVALID_JWT")
    return None


def claims_problem(
    header: dict[str, Any],
    claims: dict[str, Any],
    signing_input: bytes,
    sig: bytes,
    secret_hex: str,
    now_s: float,
) -> str | None:
    """What jsonwebtoken would say about the token, with Ghost's options (HS256, maxAge
    5m, audience /admin/), plus a lifetime of at most 5 minutes."""
    if header.get("alg") != "HS256":
        return "invalid algorithm"
    expected = hmac.new(bytes.fromhex(secret_hex), signing_input, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, sig):
        return "invalid signature"
    audiences = claims.get("aud")
    audiences = audiences if isinstance(audiences, list) else [audiences]
    if not any(isinstance(a, str) and a.strip("/") == "admin" for a in audiences):
        return "jwt audience invalid. expected: /?admin/?$"
    iat, exp = claims.get("iat"), claims.get("exp")
    if not isinstance(iat, int | float) or not isinstance(exp, int | float):
        return "iat and exp required"
    if now_s >= exp:
        return "jwt expired"
    if now_s - iat > MAX_TOKEN_AGE_S:
        return "maxAge exceeded"
    if exp - iat > MAX_TOKEN_AGE_S:
        return "token lifetime exceeds 5 minutes"
    return None


class GhostSim(CmsSim):
    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__("ghost", config)
        self.config.setdefault("admin_keys", {DEFAULT_ADMIN_KEY_ID: DEFAULT_ADMIN_KEY_SECRET})
        self.config.setdefault("webhook_secret", DEFAULT_WEBHOOK_SECRET)
        self.posts: dict[str, dict[str, Any]] = {}
        self.uploads: list[dict[str, Any]] = []
        self.collisions: dict[str, int] = {}
        self.last_ms = 0
        self._seed()

    def _seed(self) -> None:
        for fields in self.config.get("posts", []):
            post = make_post(**fields)
            self.posts[post["id"]] = post

    def reset(self) -> None:
        super().reset()
        self.posts.clear()
        self.uploads.clear()
        self.collisions.clear()
        self._seed()

    def state(self) -> Any:
        return {"posts": self.posts, "uploads": self.uploads}

    def tick(self) -> str:
        """A new updated_at, strictly later than any before (Ghost stores milliseconds)."""
        self.last_ms = max(now_ms(), self.last_ms + 1)
        return iso(self.last_ms)

    def auth(self, request: Request) -> Response | None:
        keys = self.config["admin_keys"]
        return token_problem(request.headers.get("authorization", ""), keys, time.time())

    def site(self, request: Request) -> str:
        return str(self.config.get("url") or str(request.base_url)).rstrip("/")

    def change(self, post: dict[str, Any], event: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Apply what `event` means to a post; return `previous` as Ghost reports it (the
        changed keys with their old values; empty for a new post)."""
        before = dict(post)
        if event == "post.published":
            post["status"] = "published"
            post["published_at"] = post.get("published_at") or iso(now_ms())
            if "/p/" in post["url"]:  # a draft's preview URL becomes the public one
                post["url"] = post["url"].rsplit("/p/", 1)[0] + f"/{post['slug']}/"
        elif event == "post.unpublished":
            post["status"] = "draft"
        post.update(changes)
        post["updated_at"] = self.tick()
        if event == "post.added":
            return {}
        return {key: before.get(key) for key in post if post.get(key) != before.get(key)}

    def store_upload(self, site: str, form: dict[str, FormPart]) -> dict[str, Any]:
        file = form["file"]
        filename, content_type, data = file.filename or "", file.content_type, file.data
        folder = datetime.now(UTC).strftime("%Y/%m")
        taken = {u["path"] for u in self.uploads}
        stem, dot, ext = filename.rpartition(".")
        name, n = filename, 0
        while f"{folder}/{name}" in taken:
            n += 1
            name = f"{stem}-{n}{dot}{ext}"
        ref = form["ref"].text() if "ref" in form else None
        upload = {
            "path": f"{folder}/{name}",
            "filename": name,
            "original_filename": filename,
            "content_type": content_type,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "url": f"{site}/content/images/{folder}/{name}",
            "ref": ref,
        }
        self.uploads.append(upload)
        return upload


READ_ONLY = frozenset({"id", "uuid", "created_at", "updated_at", "url", "comment_id"})


def not_found() -> Response:
    return ghost_error(404, "NotFoundError", "Post not found.")


def admin_routes(sim: GhostSim) -> list[Route]:
    async def guarded(request: Request) -> Response | None:
        return await sim.intercept(request) or sim.auth(request)

    async def read_post(request: Request) -> Response:
        if (early := await guarded(request)) is not None:
            return early
        post = sim.posts.get(request.path_params["post_id"])
        return json_response({"posts": [post]}) if post else not_found()

    async def edit_post(request: Request) -> Response:
        if (early := await guarded(request)) is not None:
            return early
        post_id = request.path_params["post_id"]
        post = sim.posts.get(post_id)
        if post is None:
            return not_found()
        body = await json_body(request)
        items = body.get("posts") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items or not isinstance(items[0], dict):
            return ghost_error(422, "ValidationError", "No root key ('posts') provided.")
        change = items[0]
        if sim.collisions.get(post_id, 0) > 0:  # someone else saved it just now
            sim.collisions[post_id] -= 1
            post["updated_at"] = sim.tick()
        if "updated_at" not in change:
            return ghost_error(422, "ValidationError", "Validation error, cannot edit post.")
        if change["updated_at"] != post["updated_at"]:
            message = "Saving failed! Someone else is editing this post."
            return ghost_error(409, "UpdateCollisionError", message, "UPDATE_COLLISION")
        post.update({k: v for k, v in change.items() if k not in READ_ONLY})
        post["updated_at"] = sim.tick()
        return json_response({"posts": [post]})

    async def upload_image(request: Request) -> Response:
        if (early := await guarded(request)) is not None:
            return early
        parts = parse_multipart(request.headers.get("content-type", ""), await request.body())
        form = {part.name: part for part in parts}
        if "file" not in form:
            return ghost_error(422, "ValidationError", "Please select an image.")
        filename, content_type = form["file"].filename, form["file"].content_type
        if (
            not filename
            or not filename.lower().endswith(IMAGE_EXTENSIONS)
            or not content_type.startswith("image/")
        ):
            return ghost_error(415, "UnsupportedMediaTypeError", "Please select a valid image.")
        upload = sim.store_upload(sim.site(request), form)
        return json_response({"images": [{"url": upload["url"], "ref": upload["ref"]}]}, 201)

    return [
        Route(ADMIN + "/posts/{post_id}/", read_post, methods=["GET"]),
        Route(ADMIN + "/posts/{post_id}/", edit_post, methods=["PUT"]),
        Route(ADMIN + "/images/upload/", upload_image, methods=["POST"]),
    ]


def control_routes(sim: GhostSim) -> list[Route]:
    async def seed(request: Request) -> Response:
        spec = await json_body(request)
        items = spec if isinstance(spec, list) else [spec]
        if not all(isinstance(item, dict) for item in items):
            return json_response({"detail": "expected a post object or a list of them"}, 422)
        made = [make_post(sim.site(request), **item) for item in items]
        sim.posts.update({post["id"]: post for post in made})
        return json_response({"posts": made})

    async def collide(request: Request) -> Response:
        spec = await json_body(request)
        if not isinstance(spec, dict) or spec.get("post_id") not in sim.posts:
            return json_response({"detail": "expected {post_id (a known post), count}"}, 422)
        sim.collisions[spec["post_id"]] = int(spec.get("count", 1))
        return json_response({"collisions": sim.collisions})

    async def publish(request: Request) -> Response:
        spec = await json_body(request)
        if (
            not isinstance(spec, dict)
            or not spec.get("url")
            or spec.get("post_id") not in sim.posts
        ):
            return json_response({"detail": "expected {url, post_id (a known post), ...}"}, 422)
        post = sim.posts[spec["post_id"]]
        event = str(spec.get("event") or "post.published")
        previous = sim.change(post, event, dict(spec.get("changes") or {}))
        headers, body = signed_webhook(
            str(spec.get("secret") or sim.config["webhook_secret"]),
            post,
            event,
            previous=previous,
            timestamp_ms=spec.get("timestamp_ms"),
            include_event=bool(spec.get("include_event")),
        )
        status, answer = await deliver(str(spec["url"]), headers, body)
        sent = {"headers": headers, "body": body.decode()}
        return json_response({"status": status, "body": answer, "sent": sent})

    return [
        Route("/_sim/posts", seed, methods=["POST"]),
        Route("/_sim/collide", collide, methods=["POST"]),
        Route("/_sim/publish", publish, methods=["POST"]),
    ]


def build_app(config: dict[str, Any] | None = None) -> Starlette:
    """A Ghost simulator; `config`: admin_keys {id: hex secret}, webhook_secret, posts
    (seeded on start and on reset), url (the site's URL; default: where it is served)."""
    sim = GhostSim(config)
    return cms_app(sim, [*control_routes(sim), *admin_routes(sim)])
