"""Where an outbox event goes. A `webhook` event is POSTed, signed, to a caller's URL; a
`writeback` event puts a job's image back into a CMS. Both share the outbox row, the
attempt log, the retry schedule and the fairness between endpoints (`webhooks/tasks.py`);
a sink only makes one attempt and says how it went.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

if TYPE_CHECKING:
    from service.config import Settings
    from service.models import WebhookEvent
    from service.state import State

# What is kept of a receiver's answer, per attempt.
MAX_RESPONSE_BODY_CHARS = 20 * 1024


@dataclass(frozen=True)
class AttemptOutcome:
    status_code: int | None  # the HTTP status, None when none came (timeout, reset, refused)
    error: str | None  # None: delivered
    response_body: str | None = None  # at most MAX_RESPONSE_BODY_CHARS
    retry_after_s: float | None = None  # the receiver's Retry-After, on 429/503
    permanent: bool = False  # no retry can help: the event fails now
    gone: bool = False  # 410: the endpoint asked to be disabled

    @property
    def delivered(self) -> bool:
        return self.error is None


class Sink(Protocol):
    def deadline_s(self, settings: Settings) -> float:
        """How long one attempt may take in all (a write-back is several requests)."""
        ...

    async def attempt(self, state: State, event: WebhookEvent) -> AttemptOutcome:
        """One attempt, within the attempt's deadline; never raises for a receiver's fault."""
        ...

    async def settled(self, session: AsyncSession, event: WebhookEvent) -> list[str]:
        """Called in the transaction that marks the event delivered or failed for good.
        Returns ids of new outbox events to enqueue after commit (e.g. writeback.failed)."""
        ...


# Every sink a worker can deliver through, by the name in webhook_events.sink.
SINKS: dict[str, Sink] = {}


def longest_deadline_s(settings: Settings) -> float:
    """The longest attempt any sink may make: slot leases and arq's timeout cover it."""
    return max(settings.webhook_timeout_s, settings.writeback_timeout_s, settings.notify_timeout_s)


def register_sink(name: str, sink: Sink) -> None:
    """A sink module registers itself at import (the `webhook` sink below; the write-back
    sink from service.integrations)."""
    SINKS[name] = sink


from service.webhooks import webhook_sink  # noqa: E402,F401  (registers "webhook")
