"""Replicate's completion webhooks, signed per Standard Webhooks, retried a few times.

Deliveries run as background tasks on one shared httpx.AsyncClient; a slow or dead
receiver never delays a prediction (as with Replicate, the prediction is done whether or
not its webhook arrived).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import string
import time
from collections import Counter
from collections.abc import Coroutine
from typing import Any

import httpx

from simulators.state import SimState

_ALPHABET = string.ascii_letters + string.digits


def new_message_id() -> str:
    return "msg_" + "".join(secrets.choice(_ALPHABET) for _ in range(27))


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with the secret's
    base64-decoded bytes (after `whsec_`)."""
    key = base64.b64decode(secret.removeprefix("whsec_") + "==")  # tolerate no padding
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class BackgroundPoster:
    """Webhook deliveries as background tasks on one shared client, so that a slow or dead
    receiver never delays the simulated work; `close` cancels what is left."""

    def __init__(self, limits: httpx.Limits) -> None:
        self.client = httpx.AsyncClient(limits=limits)
        self.tasks: set[asyncio.Task[None]] = set()

    def spawn(self, delivery: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(delivery)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def post(
        self, url: str, body: bytes, headers: dict[str, str], timeout_s: float, counts: Counter[str]
    ) -> bool:
        """One attempt, counted: True when the receiver took it (a 2xx)."""
        counts["webhook_attempts"] += 1
        try:
            response = await self.client.post(url, content=body, headers=headers, timeout=timeout_s)
        except httpx.HTTPError:
            return False
        if response.is_success:
            counts["webhooks_sent"] += 1
        return response.is_success

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.client.aclose()


class WebhookSender(BackgroundPoster):
    def __init__(self, state: SimState) -> None:
        super().__init__(httpx.Limits(max_connections=200, max_keepalive_connections=50))
        self.state = state

    def send(self, url: str, body: bytes) -> None:
        self.spawn(self._deliver(url, body))

    async def _deliver(self, url: str, body: bytes) -> None:
        state = self.state
        message_id = new_message_id()  # the same id on every retry, as the spec asks
        for attempt in range(state.config.webhook_retries + 1):
            if attempt:
                await asyncio.sleep(state.config.webhook_backoff_s * 2 ** (attempt - 1))
            config = state.config
            timestamp = int(time.time())
            headers = {
                "content-type": "application/json",
                "webhook-id": message_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(config.webhook_secret, message_id, timestamp, body),
            }
            if await self.post(url, body, headers, config.webhook_timeout_s, state.counts):
                return
        state.counts["webhooks_failed"] += 1
