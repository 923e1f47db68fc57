"""The cover image onto a Ghost post, through the Admin API.

Auth: the Admin API key `id:secret` (secret in hex) from the environment variable the
config names, turned into a short-lived HS256 JWT per request (header kid = id; claims iat,
exp = iat + 5 min, aud "/admin/"), sent as `Authorization: Ghost <jwt>`. Made here with
hmac/hashlib: three base64url parts need no JWT library.

Steps:
1. GET the post: its updated_at (for the update) and feature_image (for idempotency). A
   post that is gone fails before anything is uploaded.
2. If feature_image already is our file (`upload_name(image)`: the output name plus a
   digest of its bytes; Ghost keeps the name and adds "-1", "-2"... on a clash), stop:
   this image is already on the post.
3. POST the image to /images/upload/ as multipart `file` (with `ref` = the upload name),
   streamed from storage.
4. PUT /posts/{id}/ with feature_image and the updated_at just read. On a 409
   UpdateCollisionError (someone saved the post in between), GET it again and retry with
   the new updated_at, at most MAX_COLLISIONS times; past that, a retryable failure.
Ghost has no way to list uploaded images, so an attempt that uploaded and then failed to
PUT uploads again on its retry (Ghost names the copy "-1"): harmless, and rare.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import posixpath
import re
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator

from service.integrations.kinds.base import Article, ImageSource, WritebackError
from service.integrations.writeback import register
from service.integrations.writeback.http import (
    checked,
    clip,
    env_secret,
    json_object,
    multipart,
    own_config,
    send,
    upload_name,
)

AUDIENCE = "/admin/"
TOKEN_LIFETIME_S = 5 * 60
MAX_COLLISIONS = 3
ACCEPT_VERSION = "v5.0"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_HEX = re.compile(r"^[0-9a-fA-F]+$")


class GhostConfig(BaseModel):
    """The integration's "writeback" block for kind ghost (a contract: keys as written)."""

    model_config = ConfigDict(extra="forbid")

    base_url: HttpUrl  # the admin domain, e.g. https://blog.example.com (a subpath is kept)
    admin_key_env: str = Field(min_length=1, max_length=200, pattern=ENV_NAME)

    @field_validator("base_url")
    @classmethod
    def _no_credentials(cls, value: HttpUrl) -> HttpUrl:
        if value.username or value.password or value.query or value.fragment:
            raise ValueError("base_url: a plain URL, without credentials, query or fragment")
        return value


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _compact(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def admin_token(
    key_id: str,
    secret_hex: str,
    *,
    now_s: int | None = None,
    lifetime_s: int = TOKEN_LIFETIME_S,
    audience: str = AUDIENCE,
) -> str:
    """An HS256 JWT for the Admin API, signed with the key's secret decoded from hex."""
    iat = int(time.time()) if now_s is None else now_s
    header = {"alg": "HS256", "typ": "JWT", "kid": key_id}
    claims = {"iat": iat, "exp": iat + lifetime_s, "aud": audience}
    signing_input = f"{_b64url(_compact(header))}.{_b64url(_compact(claims))}"
    digest = hmac.new(bytes.fromhex(secret_hex), signing_input.encode(), hashlib.sha256)
    return f"{signing_input}.{_b64url(digest.digest())}"


def parse_admin_key(raw: str, env_name: str) -> tuple[str, str]:
    """(id, hex secret) from `id:secret`; a malformed key is permanent (and never quoted)."""
    key_id, sep, secret = raw.strip().partition(":")
    if not sep or not key_id or not secret or not _HEX.match(secret) or len(secret) % 2:
        raise WritebackError(
            f"environment variable {env_name} does not hold a Ghost Admin API key "
            "of the form <id>:<hex secret>",
            permanent=True,
        )
    return key_id, secret


def ghost_message(body: Any) -> str | None:
    """Ghost's own words: `{"errors": [{"message", "context", "type"}]}`."""
    errors = body.get("errors") if isinstance(body, dict) else None
    first = errors[0] if isinstance(errors, list) and errors else None
    if not isinstance(first, dict):
        return None
    parts = [first.get("type"), first.get("message"), first.get("context")]
    return clip(" ".join(str(p) for p in parts if p)) or None


def _file_matches(feature_image: Any, name: str) -> bool:
    """Whether a feature_image URL is our upload (Ghost adds -1, -2... to a clashing name)."""
    if not isinstance(feature_image, str) or not feature_image:
        return False
    path = urllib.parse.urlsplit(feature_image).path
    got = urllib.parse.unquote(posixpath.basename(path))
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    suffix = re.escape("." + ext) if ext else ""
    return got == name or re.fullmatch(re.escape(stem) + r"-\d+" + suffix, got) is not None


class _AdminApi:
    """One write-back's conversation with Ghost: the base URL, the key, the client."""

    def __init__(self, http: httpx.AsyncClient, config: GhostConfig, key: tuple[str, str]):
        self.http = http
        self.root = str(config.base_url).rstrip("/") + "/ghost/api/admin"
        self.key = key

    def _headers(self) -> dict[str, str]:
        token = admin_token(*self.key)
        return {"authorization": f"Ghost {token}", "accept-version": ACCEPT_VERSION}

    async def _send(self, what: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = self._headers() | kwargs.pop("headers", {})
        request = self.http.build_request(method, self.root + path, headers=headers, **kwargs)
        return await send(self.http, request, what, secrets=[self.key[1]])

    def _checked(self, response: httpx.Response, what: str) -> httpx.Response:
        return checked(response, what, ghost_message, secrets=[self.key[1]])

    async def get_post(self, post_id: str) -> dict[str, Any]:
        what = f"read Ghost post {post_id}"
        response = await self._send(what, "GET", f"/posts/{urllib.parse.quote(post_id)}/")
        self._checked(response, what)
        return _first(json_object(response, what), "posts", what)

    async def upload(self, image: ImageSource, name: str) -> str:
        what = "upload the image to Ghost"
        headers, body = multipart("file", image, name, [("ref", name)])
        response = await self._send(what, "POST", "/images/upload/", headers=headers, content=body)
        self._checked(response, what)
        uploaded = _first(json_object(response, what), "images", what)
        if not isinstance(uploaded.get("url"), str):
            raise WritebackError(f"{what}: the answer has no image url", permanent=True)
        return str(uploaded["url"])

    async def put_feature_image(self, post_id: str, url: str, updated_at: Any) -> dict[str, Any]:
        """PUT, and on an update collision re-read the post and try again (bounded)."""
        what = f"set the feature image of Ghost post {post_id}"
        path = f"/posts/{urllib.parse.quote(post_id)}/"
        for _ in range(MAX_COLLISIONS):
            body = {"posts": [{"feature_image": url, "updated_at": updated_at}]}
            response = await self._send(what, "PUT", path, json=body)
            if response.status_code != 409:
                break
            updated_at = (await self.get_post(post_id)).get("updated_at")
        self._checked(response, what)
        return _first(json_object(response, what), "posts", what)


def _first(body: Mapping[str, Any], key: str, what: str) -> dict[str, Any]:
    items = body.get(key)
    if not isinstance(items, list) or not items or not isinstance(items[0], dict):
        raise WritebackError(f"{what}: the answer has no {key}", permanent=True)
    return items[0]


class GhostWriteback:
    name: ClassVar[str] = "ghost"
    config_model: ClassVar[type[BaseModel]] = GhostConfig

    async def write_back(
        self,
        http: httpx.AsyncClient,
        config: BaseModel,
        article: Article,
        image: ImageSource,
        env: Mapping[str, str],
    ) -> dict[str, Any]:
        config = own_config(config, GhostConfig)
        key = parse_admin_key(env_secret(env, config.admin_key_env), config.admin_key_env)
        post_id = article.ref.get("id")
        if not isinstance(post_id, str) or not post_id:
            raise WritebackError("the event names no Ghost post id", permanent=True)
        api = _AdminApi(http, config, key)
        post = await api.get_post(post_id)
        name = upload_name(image)
        if _file_matches(post.get("feature_image"), name):
            return {"post_id": post_id, "image_url": post["feature_image"], "uploaded": False}
        url = await api.upload(image, name)
        updated = await api.put_feature_image(post_id, url, post.get("updated_at"))
        return {
            "post_id": post_id,
            "image_url": url,
            "uploaded": True,
            "updated_at": updated.get("updated_at"),
        }


register(GhostWriteback())
