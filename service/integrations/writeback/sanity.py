"""Write-back into Sanity: upload the image as an asset, then point the document's image
field at it.

1. `GET /v2021-06-07/data/doc/{dataset}/{id},drafts.{id}`: the document (gone: a
   permanent failure) and its draft, if an editor has one open.
2. Idempotency: an image asset's id holds the sha1 of its bytes
   (`image-<sha1>-<w>x<h>-<ext>`). When every one of those documents already references
   this image, an earlier attempt succeeded and nothing is sent.
3. `POST /v2021-06-07/assets/images/{dataset}?filename=…` with the raw bytes, streamed.
   Sanity deduplicates by sha1 itself: uploading bytes it has returns the same asset.
4. `POST /v2021-06-07/data/mutate/{dataset}` patching the field to
   `{"_type": "image", "asset": {"_type": "reference", "_ref": <asset id>}}` on the
   document and on its draft (publishing a draft without the image would drop it).

A token with write access (Editor or a robot token) goes in `Authorization: Bearer`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field

from service.integrations.kinds.base import Article, ImageSource, WritebackError
from service.integrations.kinds.sanity import is_draft
from service.integrations.writeback import register
from service.integrations.writeback.http import (
    bearer_headers,
    bearer_token,
    call,
    env_secret,
    invalid_answer,
    own_config,
    raw_upload,
)

API_VERSION = "v2021-06-07"


class SanityWriteback(BaseModel):
    """The integration's `writeback` block for Sanity (a contract: keys as written)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(min_length=1, pattern=r"^https?://[^\s/]+")
    dataset: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    token_env: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    field: str = Field(default="mainImage", min_length=1, max_length=200, pattern=r"^[\w.]+$")


def error_message(body: Any) -> str | None:
    """Sanity's errors: `{"error": {"description", "items": [...]}}` from the data API,
    `{"statusCode", "error", "message"}` from auth and assets."""
    if not isinstance(body, Mapping):
        return None
    error = body.get("error")
    if isinstance(error, Mapping):
        description = error.get("description")
        items = error.get("items")
        details = (
            [
                item["error"]["description"]
                for item in items or []
                if isinstance(item, Mapping)
                and isinstance(item.get("error"), Mapping)
                and isinstance(item["error"].get("description"), str)
            ]
            if isinstance(items, list)
            else []
        )
        parts = [description] if isinstance(description, str) else []
        return "; ".join(parts + [d for d in details[:3] if d not in parts]) or None
    message = body.get("message")
    if isinstance(message, str):
        return f"{error}: {message}" if isinstance(error, str) else message
    return error if isinstance(error, str) else None


def image_reference(asset_id: str) -> dict[str, Any]:
    return {"_type": "image", "asset": {"_type": "reference", "_ref": asset_id}}


async def sha1_of(image: ImageSource) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    async for chunk in image.open():
        digest.update(chunk)
    return digest.hexdigest()


def _has_image(document: Mapping[str, Any], field: str, sha1: str) -> bool:
    value = document.get(field)
    if not isinstance(value, Mapping) or not isinstance(value.get("asset"), Mapping):
        return False
    ref = value["asset"].get("_ref")
    return isinstance(ref, str) and ref.startswith(f"image-{sha1}-")


class SanityWritebackKind:
    name: ClassVar[str] = "sanity"
    config_model: ClassVar[type[BaseModel]] = SanityWriteback

    async def write_back(
        self,
        http: httpx.AsyncClient,
        config: BaseModel,
        article: Article,
        image: ImageSource,
        env: Mapping[str, str],
    ) -> dict[str, Any]:
        config = own_config(config, SanityWriteback)
        token = env_secret(env, config.token_env)
        document_id = article.ref.get("_id")
        if not isinstance(document_id, str) or not document_id:
            raise WritebackError("the event carried no document _id", permanent=True)
        api = f"{config.base_url.rstrip('/')}/{API_VERSION}"
        headers = bearer_headers(token)
        documents = await self._documents(http, api, config.dataset, headers, document_id)
        sha1 = await sha1_of(image)
        targets = [d["_id"] for d in documents if not _has_image(d, config.field, sha1)]
        if not targets:
            current = documents[0][config.field]["asset"]["_ref"]
            return {"asset_id": current, "documents": [], "reused": True}
        asset = await self._upload(http, api, config.dataset, headers, image)
        result = await self._patch(http, api, config, headers, targets, asset["_id"])
        return {
            "asset_id": asset["_id"],
            "image_url": asset.get("url"),
            "documents": targets,
            "transaction_id": result.get("transactionId"),
            "reused": False,
        }

    async def _documents(
        self,
        http: httpx.AsyncClient,
        api: str,
        dataset: str,
        headers: dict[str, str],
        document_id: str,
    ) -> list[Mapping[str, Any]]:
        """The document first, then its draft when there is one."""
        ids = [document_id] if is_draft(document_id) else [document_id, f"drafts.{document_id}"]
        request = http.build_request(
            "GET",
            f"{api}/data/doc/{quote(dataset)}/{quote(','.join(ids), safe=',')}",
            headers=headers,
        )
        body = await call(
            http, request, "read the document", error_message, secrets=bearer_token(headers)
        )
        found = body.get("documents") if isinstance(body, Mapping) else None
        if not isinstance(found, list):
            raise invalid_answer("read the document", "no documents list", 200)
        by_id = {d["_id"]: d for d in found if isinstance(d, Mapping) and "_id" in d}
        if document_id not in by_id:
            raise WritebackError(
                f"read the document: {document_id} not found in dataset {dataset}",
                permanent=True,
                status_code=404,
            )
        return [by_id[i] for i in ids if i in by_id]

    async def _upload(
        self,
        http: httpx.AsyncClient,
        api: str,
        dataset: str,
        headers: dict[str, str],
        image: ImageSource,
    ) -> Mapping[str, Any]:
        upload_headers, content = raw_upload(image)
        request = http.build_request(
            "POST",
            f"{api}/assets/images/{quote(dataset)}",
            params={"filename": image.filename},
            content=content,
            headers=headers | upload_headers,
        )
        body = await call(
            http, request, "upload the image", error_message, secrets=bearer_token(headers)
        )
        asset = body.get("document") if isinstance(body, Mapping) else None
        if not isinstance(asset, Mapping) or not isinstance(asset.get("_id"), str):
            raise invalid_answer("upload the image", "no asset document", 200)
        return asset

    async def _patch(
        self,
        http: httpx.AsyncClient,
        api: str,
        config: SanityWriteback,
        headers: dict[str, str],
        targets: list[str],
        asset_id: str,
    ) -> Mapping[str, Any]:
        mutations = [
            {"patch": {"id": target, "set": {config.field: image_reference(asset_id)}}}
            for target in targets
        ]
        request = http.build_request(
            "POST",
            f"{api}/data/mutate/{quote(config.dataset)}",
            params={"returnIds": "true", "visibility": "sync"},
            json={"mutations": mutations},
            headers=headers,
        )
        body = await call(
            http, request, "set the image field", error_message, secrets=bearer_token(headers)
        )
        if not isinstance(body, Mapping):
            raise invalid_answer("set the image field", "not a JSON object", 200)
        return body


register(SanityWritebackKind())
