"""Group commit for CMS webhooks: the deliveries that arrive while one transaction is in
flight are taken in the next one (kit/coalescer.py), so 32 senders pay for a few
transactions, not 32. Each delivery is still verified, read, deduplicated and turned into
its batch exactly as alone (ingest.receive_hook, in order, in the group's session), and
each caller gets its own answer or its own error.

A delivery refused before anything is written (unknown integration, bad signature,
unreadable body) is that caller's error and leaves the group's transaction untouched. Any
other failure fails the group, and the coalescer runs each of its deliveries again alone,
in a transaction of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from service.integrations import ingest, repository
from service.integrations.ingest import HookOutcome
from service.integrations.kinds.base import InboundRequest
from service.jobs.tasks import enqueue_jobs
from service.kit.coalescer import Coalescer
from service.kit.errors import ApiError
from service.state import State

MAX_GROUP = 64


@dataclass(frozen=True)
class Delivery:
    integration_id: uuid.UUID
    request: InboundRequest
    now_ms: int


class HookIngest:
    def __init__(self, state: State) -> None:
        self._state = state
        self._coalescer: Coalescer[Delivery, HookOutcome] = Coalescer(
            self._flush, name="hooks", max_size=MAX_GROUP
        )

    async def receive(self, delivery: Delivery) -> HookOutcome:
        """The outcome once it is committed and its job put in line (best effort, as
        for any batch: the reconciler covers Redis)."""
        outcome = await self._coalescer.submit(delivery)
        if outcome.batch is not None:
            await enqueue_jobs(self._state, outcome.batch.id, outcome.batch.priority, outcome.jobs)
        return outcome

    async def _flush(self, deliveries: Sequence[Delivery]) -> list[HookOutcome | BaseException]:
        results: list[HookOutcome | BaseException] = []
        async with self._state.sessionmaker() as session:
            for delivery in deliveries:
                try:
                    outcome = await ingest.receive_hook(
                        session,
                        integration_id=delivery.integration_id,
                        request=delivery.request,
                        registry=self._state.registry,
                        settings=self._state.settings,
                        now_ms=delivery.now_ms,
                    )
                except ingest.SignatureRejected as exc:
                    await repository.count_rejection(session, exc.integration_id)
                    results.append(exc)
                except ApiError as exc:  # refused before anything was written
                    results.append(exc)
                else:
                    results.append(outcome)
            await session.commit()
        return results
