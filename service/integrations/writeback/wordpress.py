"""The cover image onto a WordPress post, through the REST API (wp/v2).

Auth: HTTP Basic with the user's name and an Application Password (Users → Profile →
Application Passwords) read from the environment variable the config names. WordPress
ignores the spaces it shows the password with, so it is sent as given.

Steps:
1. GET the post (context=edit: drafts too): a post that is gone fails before anything is
   uploaded, and its featured_media tells whether there is anything left to do.
2. Look for our file in the media library: `GET /media?search=<stem>` and match on the
   file name (`upload_name(image)`: the output name plus a digest of its bytes, so a hit is
   these very bytes; WordPress may have stored it as "-scaled" or with "-1" on a clash).
3. Otherwise POST the raw bytes to /media, streamed from storage, with
   `Content-Disposition: attachment; filename=...` and the image's Content-Type.
4. POST /posts/{id} `{"featured_media": <media id>}` unless it is already that.
Errors come as `{"code", "message", "data": {"status"}}`.
"""

from __future__ import annotations

import posixpath
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator

from service.integrations.kinds.base import Article, ImageSource, WritebackError
from service.integrations.writeback import register
from service.integrations.writeback.http import (
    checked,
    content_disposition,
    env_secret,
    json_body,
    json_object,
    own_config,
    raw_upload,
    send,
    upload_name,
)

ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
SEARCH_PAGE = 100


class WordPressConfig(BaseModel):
    """The integration's "writeback" block for kind wordpress (a contract: keys as written)."""

    model_config = ConfigDict(extra="forbid")

    base_url: HttpUrl  # the site's root, e.g. https://example.com (REST at /wp-json/)
    username: str = Field(min_length=1, max_length=200)
    app_password_env: str = Field(min_length=1, max_length=200, pattern=ENV_NAME)

    @field_validator("base_url")
    @classmethod
    def _no_credentials(cls, value: HttpUrl) -> HttpUrl:
        if value.username or value.password or value.query or value.fragment:
            raise ValueError("base_url: a plain URL, without credentials, query or fragment")
        return value


def wp_message(body: Any) -> str | None:
    """WordPress's own words: `{"code", "message", "data": {"status"}}`."""
    if not isinstance(body, dict) or "code" not in body or "message" not in body:
        return None
    return f"{body['code']}: {body['message']}"


def _stored_names(media: Mapping[str, Any]) -> set[str]:
    names = set()
    source = media.get("source_url")
    if isinstance(source, str):
        names.add(urllib.parse.unquote(posixpath.basename(urllib.parse.urlsplit(source).path)))
    details = media.get("media_details")
    if isinstance(details, dict):
        for key in ("file", "original_image"):
            if isinstance(details.get(key), str):
                names.add(posixpath.basename(details[key]))
    return names


def is_our_file(media: Mapping[str, Any], name: str) -> bool:
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    suffix = re.escape("." + ext) if ext else ""
    pattern = re.compile(re.escape(stem) + r"(-\d+)?(-scaled)?" + suffix)
    return any(pattern.fullmatch(stored) for stored in _stored_names(media))


class _RestApi:
    """One write-back's conversation with WordPress: the base URL, the credentials, the client."""

    def __init__(self, http: httpx.AsyncClient, config: WordPressConfig, password: str):
        self.http = http
        self.root = str(config.base_url).rstrip("/") + "/wp-json/wp/v2"
        self.auth = httpx.BasicAuth(config.username, password)
        self.secrets = [password]

    async def _send(self, what: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        request = self.http.build_request(method, self.root + path, **kwargs)
        response = await send(self.http, request, what, secrets=self.secrets, auth=self.auth)
        return checked(response, what, wp_message, secrets=self.secrets)

    async def get_post(self, post_id: int | str) -> dict[str, Any]:
        what = f"read WordPress post {post_id}"
        response = await self._send(what, "GET", f"/posts/{post_id}", params={"context": "edit"})
        return json_object(response, what)

    async def find_media(self, name: str) -> dict[str, Any] | None:
        what = "search the WordPress media library"
        stem = name.rsplit(".", 1)[0]
        params = {"search": stem, "per_page": str(SEARCH_PAGE), "media_type": "image"}
        response = await self._send(what, "GET", "/media", params=params)
        found = json_body(response, what)
        if not isinstance(found, list):
            raise WritebackError(f"{what}: the answer is not a list", permanent=True)
        return next(
            (m for m in found if isinstance(m, dict) and is_our_file(m, name)),
            None,
        )

    async def upload(self, image: ImageSource, name: str) -> dict[str, Any]:
        what = "upload the image to WordPress"
        headers, body = raw_upload(image)
        headers["content-disposition"] = content_disposition(name)
        response = await self._send(what, "POST", "/media", headers=headers, content=body)
        media = json_object(response, what)
        if not isinstance(media.get("id"), int):
            raise WritebackError(f"{what}: the answer has no media id", permanent=True)
        return media

    async def set_featured(self, post_id: int | str, media_id: int) -> dict[str, Any]:
        what = f"set the featured image of WordPress post {post_id}"
        response = await self._send(
            what, "POST", f"/posts/{post_id}", json={"featured_media": media_id}
        )
        return json_object(response, what)


class WordPressWriteback:
    name: ClassVar[str] = "wordpress"
    config_model: ClassVar[type[BaseModel]] = WordPressConfig

    async def write_back(
        self,
        http: httpx.AsyncClient,
        config: BaseModel,
        article: Article,
        image: ImageSource,
        env: Mapping[str, str],
    ) -> dict[str, Any]:
        config = own_config(config, WordPressConfig)
        password = env_secret(env, config.app_password_env)
        post_id = article.ref.get("id")
        if not isinstance(post_id, int) and not (isinstance(post_id, str) and post_id.isdigit()):
            raise WritebackError("the event names no WordPress post id", permanent=True)
        api = _RestApi(http, config, password)
        post = await api.get_post(post_id)
        name = upload_name(image)
        media = await api.find_media(name)
        uploaded = media is None
        if media is None:
            media = await api.upload(image, name)
        if post.get("featured_media") != media["id"]:
            await api.set_featured(post_id, media["id"])
        return {
            "post_id": post_id,
            "media_id": media["id"],
            "image_url": media.get("source_url"),
            "uploaded": uploaded,
        }


register(WordPressWriteback())
