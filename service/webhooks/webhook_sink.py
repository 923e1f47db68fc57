"""The `webhook` sink: one signed Standard Webhooks POST to the event's URL.

Everything an attempt does (resolve, connect, send, read the status line and up to
20 KB of the body) runs under one deadline, `webhook_timeout_s`: httpx's own timeout is
per read, so a receiver that sends a byte every few seconds would hold a worker for as
long as it liked. Redirects are never followed: a 3xx is a failed attempt, so a receiver
cannot point Darkroom somewhere the SSRF guard never saw.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from service.kit.base import utcnow
from service.kit.signing import sign
from service.kit.ssrf import AddressRefused
from service.webhooks import repository
from service.webhooks.schedule import RETRY_AFTER_STATUSES, parse_retry_after
from service.webhooks.sinks import MAX_RESPONSE_BODY_CHARS, AttemptOutcome, register_sink

if TYPE_CHECKING:
    from service.config import Settings
    from service.models import WebhookEvent
    from service.state import State

MAX_RESPONSE_BODY_BYTES = MAX_RESPONSE_BODY_CHARS


@dataclass
class _Answer:
    """What came back so far: kept when the deadline cuts the body short."""

    status_code: int | None = None
    retry_after: str | None = None
    body: bytearray = field(default_factory=bytearray)


class WebhookSink:
    def deadline_s(self, settings: Settings) -> float:
        return settings.webhook_timeout_s

    async def attempt(self, state: State, event: WebhookEvent) -> AttemptOutcome:
        deadline = self.deadline_s(state.settings)
        answer = _Answer()
        try:
            async with asyncio.timeout(deadline):
                await self._post(state, event, answer)
        except TimeoutError:
            if answer.status_code is None:
                return AttemptOutcome(None, f"no answer within the {deadline:g} s deadline")
        except httpx.InvalidURL as exc:  # no retry can fix the address itself
            return AttemptOutcome(None, f"callback_url cannot be used: {exc}", permanent=True)
        except AddressRefused as exc:  # the SSRF guard (state.http's transport) said no
            return AttemptOutcome(None, str(exc), permanent=True)
        except httpx.HTTPError as exc:
            if answer.status_code is None:
                return AttemptOutcome(None, _describe(exc))
        return judge(answer)

    async def settled(self, session: AsyncSession, event: WebhookEvent) -> list[str]:
        return []  # a webhook's end tells no one

    async def _post(self, state: State, event: WebhookEvent, answer: _Answer) -> None:
        async with state.sessionmaker() as session:
            secrets = await repository.signing_secrets(session, event.api_key_id, utcnow())
        body = json.dumps(event.payload, separators=(",", ":")).encode()
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "accept-encoding": "identity",  # the body is capped in bytes as it comes
            "webhook-id": event.id,
            "webhook-timestamp": str(timestamp),
            # During a rotation both secrets sign: "v1,<new> v1,<old>".
            "webhook-signature": " ".join(sign(s, event.id, timestamp, body) for s in secrets),
        }
        async with state.http.stream("POST", event.url, content=body, headers=headers) as response:
            answer.status_code = response.status_code
            answer.retry_after = response.headers.get("retry-after")
            async for chunk in response.aiter_raw():
                answer.body += chunk
                if len(answer.body) >= MAX_RESPONSE_BODY_BYTES:
                    break  # read no further than what is kept


def judge(answer: _Answer) -> AttemptOutcome:
    status = answer.status_code
    assert status is not None
    body = _text(bytes(answer.body[:MAX_RESPONSE_BODY_BYTES]))
    if 200 <= status < 300:
        return AttemptOutcome(status, None, body)
    if status == 410:
        return AttemptOutcome(
            status, "receiver answered HTTP 410 Gone", body, permanent=True, gone=True
        )
    if 300 <= status < 400:
        error = f"receiver answered HTTP {status} (redirects are not followed)"
        return AttemptOutcome(status, error, body)
    retry_after = parse_retry_after(answer.retry_after) if status in RETRY_AFTER_STATUSES else None
    return AttemptOutcome(status, f"receiver answered HTTP {status}", body, retry_after)


def _text(raw: bytes) -> str | None:
    """Postgres text holds neither NUL nor invalid UTF-8."""
    if not raw:
        return None
    text = raw.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
    return text[:MAX_RESPONSE_BODY_CHARS]


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


register_sink("webhook", WebhookSink())
