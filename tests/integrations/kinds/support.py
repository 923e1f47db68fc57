"""What the CMS kind tests share: images as an ImageSource, an InboundRequest from headers
and a body, a receiver that verifies and reads webhooks with a kind (as the ingest endpoint
does), served on a real port as a simulator's webhook target, and a simulator's control
routes."""

from __future__ import annotations

import hashlib
import io
import json
import random
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.integrations.kinds.base import (
    CmsKind,
    ImageSource,
    InboundRequest,
    KindOptions,
    PayloadError,
    SignatureError,
)
from simulators.cms.base import CmsSim, cms_app


def png_bytes(seed: int = 1, size: tuple[int, int] = (160, 96)) -> bytes:
    """A real PNG of noise (it does not compress, so it spans many chunks)."""
    rng = random.Random(seed)
    pixels = bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3))
    buffer = io.BytesIO()
    Image.frombytes("RGB", size, pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def image_source(
    data: bytes,
    filename: str = "my-post-cover.png",
    *,
    content_type: str = "image/png",
    chunk: int = 1000,
) -> ImageSource:
    """`data` as storage serves it: in several chunks, `chunk` bytes each."""

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), chunk):
            yield data[start : start + chunk]

    return ImageSource(
        filename=filename,
        content_type=content_type,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        url=f"https://cdn.example.com/{filename}",
        open=chunks,
    )


def inbound(
    headers: Mapping[str, str], body: bytes, query: Mapping[str, str] | None = None
) -> InboundRequest:
    return InboundRequest(
        method="POST",
        path="/v1/hooks/test",
        query=dict(query or {}),
        headers={k.lower(): v for k, v in headers.items()},
        body=body,
    )


def now_ms() -> int:
    return int(time.time() * 1000)


def receiver_app(kind: CmsKind, block: dict[str, Any]) -> Starlette:
    """A webhook target at `/hook` that answers as Darkroom's ingest would: 202 with what
    the kind read, 401 for a bad signature, 422 naming a missing field."""

    async def hook(request: Request) -> Response:
        body = await request.body()
        req = inbound(request.headers, body, dict(request.query_params))
        try:
            kind.verify(req, block, now_ms())
            article = kind.read(req, json.loads(body), KindOptions())
        except SignatureError as exc:
            return JSONResponse({"error": str(exc)}, 401)
        except PayloadError as exc:
            return JSONResponse({"error": exc.message, "field": exc.field}, 422)
        variables = {k: v for k, v in article.variables.items() if k != "raw"}
        answer = {
            "event_type": article.event_type,
            "dedupe_key": article.dedupe_key,
            "ref": article.ref,
            "variables": variables,
        }
        return JSONResponse(answer, 202)

    return cms_app(CmsSim("receiver"), [Route("/hook", hook, methods=["POST"])])


async def control(base: str, path: str, body: Any = None) -> Any:
    """A simulator's control route: GET without a body, POST with one."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        if body is None:
            response = await client.get(path)
        else:
            response = await client.post(path, json=body)
        response.raise_for_status()
        return response.json()
