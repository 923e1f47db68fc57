"""Write-back into Strapi: upload the image to the Media Library linked to the entry.

`POST /api/upload` (multipart `files`, with `ref` the content type uid, `refId` the
entry's row id and `field` its media field) stores the file and links it in one request;
an API token with upload permission (`Authorization: Bearer <token>`) is needed.

Idempotency: the file is named `<output name>-<12 hex of its sha256>.<ext>`, so the name
says which bytes it holds. Before uploading, `GET /api/upload/files` looks that name up
with its `related` entries populated: a file of that name already linked to this entry
means an earlier attempt succeeded (its answer lost), and nothing is uploaded again. A
file of that name linked elsewhere is left alone and a new one is uploaded for this entry
(the upload API is the only way to link a file without knowing the content type's REST
route, which the `ref` uid does not give).

Strapi 5 keeps a draft and a published row per document: `refId` is the row id the
`entry.publish` webhook carried, the published row. The cover is on the live entry; the
draft row does not have it, so a later publish from the admin replaces it unless the
editor adds it to the draft too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urljoin

import httpx
from pydantic import BaseModel, ConfigDict, Field

from service.integrations.kinds.base import Article, ImageSource, WritebackError
from service.integrations.writeback import register
from service.integrations.writeback.http import (
    bearer_headers,
    bearer_token,
    call,
    env_secret,
    invalid_answer,
    multipart,
    own_config,
    upload_name,
)


class StrapiWriteback(BaseModel):
    """The integration's `writeback` block for Strapi (a contract: keys as written)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(min_length=1, pattern=r"^https?://[^\s/]+")
    token_env: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    ref: str = Field(default="api::article.article", pattern=r"^[a-z0-9-]+::[\w.-]+$")
    field: str = Field(default="cover", min_length=1, max_length=200, pattern=r"^[\w.-]+$")


def error_message(body: Any) -> str | None:
    """Strapi's `{"data": null, "error": {"status", "name", "message", "details"}}`."""
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            name = error.get("name")
            return f"{name}: {error['message']}" if isinstance(name, str) else error["message"]
        if isinstance(body.get("message"), str):
            return str(body["message"])
    return None


def _files(body: Any) -> list[Mapping[str, Any]]:
    """The file list: a bare array, or `{"data": [...]}` when paginated responses are on."""
    if isinstance(body, Mapping):
        body = body.get("data")
    if not isinstance(body, list):
        raise invalid_answer("look up the file", "expected a list of files", 200)
    return [item for item in body if isinstance(item, Mapping)]


def _linked(file: Mapping[str, Any], uid: str, row_id: Any) -> bool:
    related = file.get("related")
    if not isinstance(related, list):
        return False
    return any(
        isinstance(item, Mapping)
        and item.get("__type") == uid
        and str(item.get("id")) == str(row_id)
        for item in related
    )


class StrapiWritebackKind:
    name: ClassVar[str] = "strapi"
    config_model: ClassVar[type[BaseModel]] = StrapiWriteback

    async def write_back(
        self,
        http: httpx.AsyncClient,
        config: BaseModel,
        article: Article,
        image: ImageSource,
        env: Mapping[str, str],
    ) -> dict[str, Any]:
        config = own_config(config, StrapiWriteback)
        token = env_secret(env, config.token_env)
        row_id = article.ref.get("id")
        if row_id is None or row_id == "":
            raise WritebackError("the event carried no entry id to link to", permanent=True)
        uid = article.ref.get("uid")
        if isinstance(uid, str) and uid != config.ref:
            raise WritebackError(
                f"the entry is a {uid}, the write-back links to {config.ref}: not this entry",
                permanent=True,
            )
        base = config.base_url.rstrip("/") + "/"
        headers = bearer_headers(token)
        name = upload_name(image)
        existing = await self._find(http, base, headers, name, config.ref, row_id)
        file = existing or await self._upload(
            http, base, headers, name, config, row_id, article, image
        )
        file_url = file.get("url")
        return {
            "file_id": file.get("id"),
            "document_id": file.get("documentId"),
            "name": name,
            "image_url": urljoin(base, file_url) if isinstance(file_url, str) else None,
            "entry_id": row_id,
            "reused": existing is not None,
        }

    async def _find(
        self,
        http: httpx.AsyncClient,
        base: str,
        headers: dict[str, str],
        name: str,
        uid: str,
        row_id: Any,
    ) -> Mapping[str, Any] | None:
        request = http.build_request(
            "GET",
            urljoin(base, "api/upload/files"),
            params={"filters[name][$eq]": name, "populate": "related"},
            headers=headers,
        )
        body = await call(
            http, request, "look up the file", error_message, secrets=bearer_token(headers)
        )
        return next((f for f in _files(body) if _linked(f, uid, row_id)), None)

    async def _upload(
        self,
        http: httpx.AsyncClient,
        base: str,
        headers: dict[str, str],
        name: str,
        config: StrapiWriteback,
        row_id: Any,
        article: Article,
        image: ImageSource,
    ) -> Mapping[str, Any]:
        fields = [("ref", config.ref), ("refId", str(row_id)), ("field", config.field)]
        title = article.variables.get("title")
        if isinstance(title, str) and title:
            fields.append(("fileInfo", _file_info(title)))
        form_headers, body = multipart("files", image, name, fields)
        request = http.build_request(
            "POST", urljoin(base, "api/upload"), content=body, headers=headers | form_headers
        )
        files = await call(
            http, request, "upload the image", error_message, secrets=bearer_token(headers)
        )
        if not isinstance(files, list) or not files or not isinstance(files[0], Mapping):
            raise invalid_answer("upload the image", "expected a list of one file", 201)
        uploaded: Mapping[str, Any] = files[0]
        return uploaded


def _file_info(title: str) -> str:
    return json.dumps({"alternativeText": title[:250]}, ensure_ascii=False)


register(StrapiWritebackKind())
