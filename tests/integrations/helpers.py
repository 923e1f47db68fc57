"""Creating generic integrations and sending them Standard Webhooks, signed as a sender
would sign them."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
from sqlalchemy import func, select

from service.kit.signing import sign
from service.models import Batch, InboundEvent
from service.state import State
from tests.conftest import Caller

TEMPLATE = {
    "prompt": "Editorial illustration for {{ title }}. {{ excerpt | truncate(40) }}",
    "negative_prompt": "text, watermark",
    "model": "local/procedural",
    "width": 512,
    "height": 256,
    "format": "webp",
    "output_name": "{{ slug }}-cover",
}


def generic_body(**extra: Any) -> dict[str, Any]:
    return {"name": "blog covers", "kind": "generic", "inbound": {}, "template": TEMPLATE, **extra}


async def create_generic(client: httpx.AsyncClient, caller: Caller, **extra: Any) -> dict[str, Any]:
    response = await client.post(
        "/v1/integrations", json=generic_body(**extra), headers=caller.headers
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def article(**data: Any) -> dict[str, Any]:
    fields = {
        "id": "post-1",
        "title": "Moths of the city",
        "excerpt": "Night walks with a lamp and a field guide, counting what the light brings.",
        "slug": "moths-of-the-city",
        "url": "https://blog.example/moths-of-the-city",
        "tags": ["nature"],
        "authors": ["Ada"],
        **data,
    }
    return {"type": "article.published", "timestamp": "2026-12-01T10:00:00Z", "data": fields}


def signed(
    secret: str,
    body: dict[str, Any] | bytes,
    *,
    msg_id: str | None = None,
    timestamp: int | None = None,
) -> tuple[bytes, dict[str, str]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time()) if timestamp is None else timestamp
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, raw),
    }
    return raw, headers


async def deliver(
    client: httpx.AsyncClient,
    integration: dict[str, Any],
    body: dict[str, Any] | bytes,
    **signing: Any,
) -> httpx.Response:
    raw, headers = signed(integration["secret"], body, **signing)
    return await client.post(f"/v1/hooks/{integration['id']}", content=raw, headers=headers)


async def counts(state: State) -> tuple[int, int]:
    """(inbound events, batches) stored."""
    async with state.sessionmaker() as session:
        events = await session.scalar(select(func.count()).select_from(InboundEvent))
        batches = await session.scalar(select(func.count()).select_from(Batch))
    return int(events or 0), int(batches or 0)
