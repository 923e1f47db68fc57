"""The `notify` sink: one Apprise notification of a batch's summary to one of its notify
URLs. The outbox (service/webhooks) retries it on the webhook schedule and logs every
attempt; this module only makes the attempt and says how it went.

Apprise is synchronous, so the attempt runs in a thread, under the SSRF guard
(`guard.py`) and within `notify_timeout_s` (Apprise's own per-request timeouts are set
below it; a thread cannot be cancelled, so one that overruns is left to finish and the
attempt is recorded as timed out). Apprise's retries are off: the schedule retries.

What is recorded and logged of an attempt never holds the URL: Apprise's messages are
scrubbed of every part of it (`urls.scrub`), and Apprise's loggers print nothing while
it runs (`guard.py` collects its warnings instead)."""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from service.kit.ssrf import Policy
from service.models import Batch
from service.notifications.guard import guarded
from service.notifications.outbox import SINK
from service.notifications.urls import instantiate, scrub
from service.webhooks.sinks import AttemptOutcome, register_sink

if TYPE_CHECKING:
    from service.config import Settings
    from service.models import WebhookEvent
    from service.state import State

MAX_ERROR_CHARS = 1000
_STATUS = re.compile(r"error=(\d{3})\b")


@dataclass(frozen=True)
class Sent:
    delivered: bool
    status_code: int | None
    messages: list[str]
    refused: list[str]


class NotifySink:
    def deadline_s(self, settings: Settings) -> float:
        return settings.notify_timeout_s

    async def attempt(self, state: State, event: WebhookEvent) -> AttemptOutcome:
        url = await _url_of(state, event)
        if url is None:
            return AttemptOutcome(None, "the batch or its notify URL is gone", permanent=True)
        payload = event.payload
        deadline = self.deadline_s(state.settings)
        policy = Policy.from_settings(state.settings)
        try:
            async with asyncio.timeout(deadline):
                sent = await asyncio.to_thread(
                    send,
                    url,
                    str(payload.get("title", "")),
                    str(payload.get("body", "")),
                    str(payload.get("notify_type", "info")),
                    policy,
                    deadline,
                )
        except TimeoutError:
            return AttemptOutcome(None, f"no answer within the {deadline:g} s deadline")
        if sent.delivered:
            return AttemptOutcome(sent.status_code or None, None)
        if sent.refused:
            return AttemptOutcome(None, "; ".join(sent.refused)[:MAX_ERROR_CHARS], permanent=True)
        said = scrub(" | ".join(sent.messages), url) or "Apprise reported a failure"
        return AttemptOutcome(sent.status_code, f"notification failed: {said}"[:MAX_ERROR_CHARS])

    async def settled(self, session: AsyncSession, event: WebhookEvent) -> list[str]:
        return []  # a notification's end tells no one


def send(
    url: str, title: str, body: str, notify_type: str, policy: Policy, deadline_s: float
) -> Sent:
    """One Apprise notification, in the calling thread (and the threads Apprise hands it
    to), every connection guarded."""
    import apprise

    plugin = instantiate(url)
    if plugin is None:
        return Sent(False, None, ["the URL is no longer one Apprise can parse"], [])
    _limit_timeouts(plugin, deadline_s)
    notifier = apprise.Apprise()
    notifier.add(plugin)
    with guarded(policy) as guard:
        result: Any = notifier.notify(title=title, body=body, notify_type=notify_type)
    messages = list(guard.messages)
    codes = [int(m.group(1)) for text in messages for m in [_STATUS.search(text)] if m]
    return Sent(bool(result), codes[-1] if codes else None, messages, list(guard.refused))


def _limit_timeouts(plugin: Any, deadline_s: float) -> None:
    """Apprise's connect and read timeouts, within the attempt's deadline."""
    for name in ("socket_connect_timeout", "socket_read_timeout"):
        current = getattr(plugin, name, None)
        if isinstance(current, int | float):
            setattr(plugin, name, min(float(current), max(deadline_s - 1.0, 1.0)))


async def _url_of(state: State, event: WebhookEvent) -> str | None:
    index = event.payload.get("index")
    if event.batch_id is None or not isinstance(index, int):
        return None
    async with state.sessionmaker() as session:
        batch = await session.get(Batch, uuid.UUID(str(event.batch_id)))
    urls = batch.notify if batch is not None else None
    if not urls or not 0 <= index < len(urls):
        return None
    return str(urls[index])


register_sink(SINK, NotifySink())
