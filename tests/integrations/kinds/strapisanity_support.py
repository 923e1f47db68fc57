"""Shared by the CMS kind tests: an image source over bytes, a webhook receiver that
verifies with a kind (as the ingest endpoint will), and an inbound request from headers."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.integrations.kinds.base import (
    CmsKind,
    ImageSource,
    InboundRequest,
    KindOptions,
    PayloadError,
    SignatureError,
)


def image_source(data: bytes, filename: str = "my-post-cover.png") -> ImageSource:
    async def open_() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 1000):  # several chunks, as storage streams them
            yield data[start : start + 1000]

    return ImageSource(
        filename=filename,
        content_type="image/png",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        url=f"https://cdn.example.com/{filename}",
        open=open_,
    )


def inbound_request(headers: Mapping[str, str], body: bytes) -> InboundRequest:
    return InboundRequest(
        method="POST",
        path="/v1/hooks/test",
        query={},
        headers={k.lower(): v for k, v in headers.items()},
        body=body,
    )


def now_ms() -> int:
    return int(time.time() * 1000)


def receiver(kind: CmsKind, inbound: dict[str, Any]) -> Starlette:
    """A stand-in for the ingest endpoint: 401 on a bad signature, 422 on a bad body,
    202 with what the kind read otherwise."""

    async def hook(request: Request) -> JSONResponse:
        inbound_req = InboundRequest(
            method=request.method,
            path=request.url.path,
            query=dict(request.query_params),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=await request.body(),
        )
        try:
            kind.verify(inbound_req, inbound, now_ms())
            article = kind.read(inbound_req, await request.json(), KindOptions())
        except SignatureError as error:
            return JSONResponse({"error": str(error)}, 401)
        except PayloadError as error:
            return JSONResponse({"error": error.message, "field": error.field}, 422)
        return JSONResponse(
            {"event_type": article.event_type, "dedupe_key": article.dedupe_key}, 202
        )

    async def ready(request: Request) -> JSONResponse:
        return JSONResponse({})

    return Starlette(
        routes=[
            Route("/hook", hook, methods=["POST"]),
            Route("/_sim/config", ready, methods=["GET"]),
        ]
    )
