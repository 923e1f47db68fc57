"""Contentful write-back through the Content Management API: the image becomes a published
asset, linked from the entry's media field.

Steps, each safe to repeat (a retried write-back picks up where the last one stopped):
1. The asset id is derived from the image (file name and sha256), so the same image always
   lands on the same asset. An asset that is already published with a file is reused as is.
2. Otherwise the bytes are streamed to the upload API, the asset is created (or updated)
   from the upload, processed (polled until its file has a URL) and published.
3. The entry's field (in the configured locale) is set to a link to the asset, with
   X-Contentful-Version; on a version conflict the entry is read again and the change
   applied again, a few times. An entry that already links the asset is left alone.
4. Re-publishing: an article whose publish started the job is expected to show its cover,
   so the entry is published again, but only when the link is the one change since the
   publish the webhook announced (the published version is the webhook's, and the entry is
   exactly one version past it). An entry with an editor's unpublished changes is never
   published: the link waits in the draft, and the result says so.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import re
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.integrations.kinds.base import Article, ImageSource, WritebackError
from service.integrations.writeback import register
from service.integrations.writeback.http import (
    checked,
    env_secret,
    json_object,
    own_config,
    raw_upload,
    send,
)

JSON_TYPE = "application/vnd.contentful.management.v1+json"
RATE_LIMIT_RESET = "x-contentful-ratelimit-reset"
# How often the entry is read again after a version conflict before the attempt gives up
# (the outbox retries it later).
LINK_ATTEMPTS = 5
# Waits between polls of an asset being processed: about 30 s in all.
PROCESS_POLLS_S = (0.1, 0.2, 0.4, 0.8, *([1.0] * 28))
_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ContentfulWriteback(BaseModel):
    """The integration's "writeback" block (a contract: keys as written)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = "https://api.contentful.com"
    upload_url: str = "https://upload.contentful.com"
    space_id: str = Field(min_length=1, max_length=64)
    environment: str = Field(default="master", min_length=1, max_length=64)
    token_env: str = Field(min_length=1, max_length=128)
    field: str = Field(default="coverImage", min_length=1, max_length=64)
    locale: str = Field(default="en-US", min_length=1, max_length=35)

    @field_validator("base_url", "upload_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @field_validator("space_id", "environment")
    @classmethod
    def _contentful_id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError("must be a Contentful id (A-Z, a-z, 0-9, '.', '_', '-')")
        return value

    @field_validator("token_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not _ENV_NAME.match(value):
            raise ValueError("must be an environment variable name")
        return value


def asset_id_for(image: ImageSource) -> str:
    """The same image (name and bytes) always makes the same asset id, so a retried
    write-back finds the asset its last attempt made."""
    digest = hashlib.sha256(f"{image.filename}\n{image.sha256}".encode()).hexdigest()
    return f"darkroom-{digest[:40]}"


def asset_link(asset_id: str) -> dict[str, Any]:
    return {"sys": {"type": "Link", "linkType": "Asset", "id": asset_id}}


class _Cma:
    """The few Content Management API calls a write-back makes, each turned into a
    WritebackError with Contentful's own error id and message when it fails."""

    def __init__(self, http: httpx.AsyncClient, config: ContentfulWriteback, token: str) -> None:
        self.http = http
        self.config = config
        self.token = token
        env = f"/spaces/{config.space_id}/environments/{config.environment}"
        self.root = f"{config.base_url}{env}"

    async def send(
        self, method: str, path: str, doing: str, *, version: int | None = None, body: Any = None
    ) -> httpx.Response:
        """One request, whatever it answers; no answer at all is a retryable error."""
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": JSON_TYPE}
        if version is not None:
            headers["X-Contentful-Version"] = str(version)
        request = self.http.build_request(method, f"{self.root}{path}", headers=headers, json=body)
        return await send(self.http, request, f"Contentful: {doing}", secrets=[self.token])

    async def call(
        self, method: str, path: str, doing: str, *, version: int | None = None, body: Any = None
    ) -> dict[str, Any]:
        """One request that must succeed; its JSON answer (empty for a 204)."""
        response = await self.send(method, path, doing, version=version, body=body)
        return self.result(response, doing)

    def result(self, response: httpx.Response, doing: str) -> dict[str, Any]:
        """The answer's JSON object (empty for a 204), or its WritebackError."""
        action = f"Contentful: {doing}"
        checked(
            response,
            action,
            contentful_message,
            secrets=[self.token],
            wait_headers=[RATE_LIMIT_RESET],
        )
        return {} if response.status_code == 204 else json_object(response, action)

    async def upload(self, image: ImageSource) -> str:
        """Stream the bytes to the upload API (never held whole); returns the upload id."""
        url = f"{self.config.upload_url}/spaces/{self.config.space_id}/uploads"
        headers, content = raw_upload(image)
        headers |= {"Authorization": f"Bearer {self.token}"}
        headers["content-type"] = "application/octet-stream"
        doing = "uploading the image"
        request = self.http.build_request("POST", url, headers=headers, content=content)
        response = await send(self.http, request, f"Contentful: {doing}", secrets=[self.token])
        upload_id = _sys(self.result(response, doing)).get("id")
        if not isinstance(upload_id, str):
            raise WritebackError("Contentful's upload answer has no sys.id", permanent=False)
        return upload_id


def contentful_message(body: Any) -> str | None:
    """Contentful's own words: the error's `sys.id` and its `message`."""
    if not isinstance(body, dict):
        return None
    sys = body.get("sys")
    error_id = sys.get("id") if isinstance(sys, dict) else None
    said = body.get("message")
    return " ".join(str(part) for part in (error_id, said) if part) or None


class ContentfulWritebackKind:
    name: ClassVar[str] = "contentful"
    config_model: ClassVar[type[BaseModel]] = ContentfulWriteback

    async def write_back(
        self,
        http: httpx.AsyncClient,
        config: BaseModel,
        article: Article,
        image: ImageSource,
        env: Mapping[str, str],
    ) -> dict[str, Any]:
        config = own_config(config, ContentfulWriteback)
        entry_id = article.ref.get("entry_id")
        if not isinstance(entry_id, str) or not entry_id:
            raise WritebackError("the event names no Contentful entry", permanent=True)
        cma = _Cma(http, config, env_secret(env, config.token_env))
        asset_id = asset_id_for(image)
        asset, uploaded = await _published_asset(cma, asset_id, article, image)
        linked, entry, published = await _link(cma, entry_id, asset_id, article)
        return {
            "entry_id": entry_id,
            "asset_id": asset_id,
            "image_url": _file_url(asset, config.locale),
            "uploaded": uploaded,
            "linked": linked,
            "entry_version": _sys(entry).get("version"),
            "published": published,
        }


async def _published_asset(
    cma: _Cma, asset_id: str, article: Article, image: ImageSource
) -> tuple[dict[str, Any], bool]:
    """The asset, published with a processed file; (asset, whether bytes were uploaded)."""
    path = f"/assets/{asset_id}"
    found = await cma.send("GET", path, f"reading asset {asset_id}")
    asset = None if found.status_code == 404 else cma.result(found, f"reading asset {asset_id}")
    uploaded = False
    if asset is None or not _file_url(asset, cma.config.locale):
        asset = await _create_from_upload(cma, asset_id, asset, article, image)
        uploaded = True
    sys = _sys(asset)
    if sys.get("publishedVersion") is None or sys.get("version") != sys["publishedVersion"] + 1:
        asset = await cma.call(
            "PUT", f"{path}/published", f"publishing asset {asset_id}", version=sys.get("version")
        )
    return asset, uploaded


async def _create_from_upload(
    cma: _Cma,
    asset_id: str,
    existing: dict[str, Any] | None,
    article: Article,
    image: ImageSource,
) -> dict[str, Any]:
    """Upload the bytes, point the asset's file at the upload (creating the asset with its
    deterministic id, or updating one left unprocessed), process it and wait for its URL."""
    locale = cma.config.locale
    upload_id = await cma.upload(image)
    title = article.variables.get("title") or image.filename
    fields = copy.deepcopy(existing.get("fields", {})) if existing else {}
    fields.setdefault("title", {})[locale] = str(title)
    fields.setdefault("file", {})[locale] = {
        "contentType": image.content_type,
        "fileName": image.filename,
        "uploadFrom": {"sys": {"type": "Link", "linkType": "Upload", "id": upload_id}},
    }
    path = f"/assets/{asset_id}"
    doing = f"creating asset {asset_id}"
    version = _sys(existing).get("version") if existing else None
    response = await cma.send("PUT", path, doing, version=version, body={"fields": fields})
    if response.status_code == 409:  # made meanwhile (a concurrent attempt): update that one
        current = await cma.call("GET", path, f"reading asset {asset_id}")
        version = _sys(current).get("version")
        response = await cma.send("PUT", path, doing, version=version, body={"fields": fields})
    asset = cma.result(response, doing)
    await cma.call(
        "PUT",
        f"{path}/files/{locale}/process",
        f"processing asset {asset_id}",
        version=_sys(asset).get("version"),
    )
    return await _processed(cma, asset_id)


async def _processed(cma: _Cma, asset_id: str) -> dict[str, Any]:
    """Poll the asset until processing has given its file a URL (Contentful processes
    asynchronously). Not done in time: retryable, and the next attempt starts over."""
    for wait in (0.0, *PROCESS_POLLS_S):
        await asyncio.sleep(wait)
        asset = await cma.call("GET", f"/assets/{asset_id}", f"reading asset {asset_id}")
        if _file_url(asset, cma.config.locale):
            return asset
    raise WritebackError(f"Contentful did not finish processing asset {asset_id}", permanent=False)


async def _link(
    cma: _Cma, entry_id: str, asset_id: str, article: Article
) -> tuple[bool, dict[str, Any], bool]:
    """Set the entry's field to the asset, retrying version conflicts; then publish it when
    the link is the only change since the webhook's publish. (linked now, entry, published)."""
    config = cma.config
    path = f"/entries/{entry_id}"
    doing = f"updating entry {entry_id}"
    for _ in range(LINK_ATTEMPTS):
        entry = await cma.call("GET", path, f"reading entry {entry_id}")
        if _links(entry, config.field, config.locale, asset_id):
            return False, entry, await _republish(cma, entry, article, linked_now=False)
        body = {"fields": copy.deepcopy(entry.get("fields") or {})}
        body["fields"].setdefault(config.field, {})[config.locale] = asset_link(asset_id)
        if "metadata" in entry:
            body["metadata"] = entry["metadata"]
        version = _sys(entry).get("version")
        response = await cma.send("PUT", path, doing, version=version, body=body)
        if response.status_code != 409:  # a conflict: read the entry again
            updated = cma.result(response, doing)
            return True, updated, await _republish(cma, updated, article, linked_now=True)
    raise WritebackError(
        f"Contentful entry {entry_id} kept changing (version conflict {LINK_ATTEMPTS} times)",
        permanent=False,
        status_code=409,
    )


async def _republish(
    cma: _Cma, entry: dict[str, Any], article: Article, *, linked_now: bool
) -> bool:
    """Publish the entry when the link is the one change since the publish the webhook was
    about; True when the entry's published version now carries the link."""
    sys = _sys(entry)
    version, published = sys.get("version"), sys.get("publishedVersion")
    if not isinstance(version, int) or not isinstance(published, int):
        return False  # a draft stays a draft
    if version == published + 1:
        return not linked_now  # already linked and nothing pending: it is live
    announced = article.ref.get("version")
    if not isinstance(announced, int) or published != announced - 1 or version != announced + 1:
        return False  # an editor's changes are pending (or it was published since)
    entry_id = sys.get("id", article.ref.get("entry_id"))
    doing = f"publishing entry {entry_id}"
    response = await cma.send("PUT", f"/entries/{entry_id}/published", doing, version=version)
    if response.status_code == 409:
        return False  # edited meanwhile: the link waits in the draft with the editor's change
    cma.result(response, doing)
    return True


def _links(entry: Mapping[str, Any], field: str, locale: str, asset_id: str) -> bool:
    fields = entry.get("fields")
    values = fields.get(field) if isinstance(fields, dict) else None
    current = values.get(locale) if isinstance(values, dict) else None
    return bool(current == asset_link(asset_id))


def _file_url(asset: Mapping[str, Any], locale: str) -> str | None:
    fields = asset.get("fields")
    files = fields.get("file") if isinstance(fields, dict) else None
    file = files.get(locale) if isinstance(files, dict) else None
    url = file.get("url") if isinstance(file, dict) else None
    if not isinstance(url, str) or not url:
        return None
    return f"https:{url}" if url.startswith("//") else url


def _sys(entity: Mapping[str, Any] | None) -> dict[str, Any]:
    sys = entity.get("sys") if entity else None
    return sys if isinstance(sys, dict) else {}


register(ContentfulWritebackKind())
