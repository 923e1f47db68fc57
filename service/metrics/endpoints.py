"""GET /metrics: open on the API port by default, as Prometheus expects; with
DARKROOM_METRICS_TOKEN set, a scrape sends `Authorization: Bearer <token>`. Not in the
OpenAPI document: it is for Prometheus, not for API clients."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.deps import StateDep
from service.kit.errors import Unauthorized
from service.metrics.exposition import scrape

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, state: StateDep) -> Response:
    token = state.settings.metrics_token
    if token is not None and not _bearer_matches(request.headers.get("authorization"), token):
        raise Unauthorized(
            "send the metrics token as Authorization: Bearer <DARKROOM_METRICS_TOKEN>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Response(await scrape(state), media_type=CONTENT_TYPE_LATEST)


def _bearer_matches(header: str | None, token: str) -> bool:
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )
