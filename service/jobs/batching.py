"""The Postgres side of a worker's jobs, grouped: one transaction per group of jobs
that are ready together, not one per job.

Each running job calls `claim`, `record` and `complete_if_done` as if it were alone
and gets its own answer; a Coalescer (service.kit.coalescer) gathers the calls that
arrive while the previous group's transaction is in flight and runs them as the next
group (service.jobs.transitions, service.jobs.outcomes). If a group's transaction fails,
each job is retried in a transaction of its own, and a job whose own transaction fails
gets the exception, so the runner's usual error paths run.
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.catalog import pricing
from service.db import session_scope
from service.dispatch.queue import Grant
from service.events import publish_noted
from service.jobs import repository, service, steps, transitions
from service.jobs.outcomes import Outcome, record_outcomes
from service.jobs.steps import Transition
from service.jobs.transitions import Claim, StartedJob
from service.kit.coalescer import Coalescer
from service.models import Priority
from service.providers.base import SubmissionLookup
from service.providers.registry import ModelSpec, ProviderRegistry
from service.state import State


@dataclass(frozen=True)
class Claimed:
    started: StartedJob
    spec: ModelSpec


@dataclass(frozen=True)
class Moved:
    """The configuration moved the job's model to another account since it was queued."""

    account: str
    priority: Priority


GrantClaim = Claimed | Moved | Transition | None


class JobBatcher:
    """One per worker process (per session maker): see `batcher`."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        registry: ProviderRegistry,
        public_url: str,
        stale_after_s: float = 0.0,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.registry = registry
        self.public_url = public_url
        self.stale_after_s = stale_after_s
        self.claims = Coalescer(self._claim_group, name="claims", key=lambda g: g.job_id)
        self.outcomes = Coalescer(
            self._record_group, name="outcomes", key=lambda o: o.started.job_id
        )
        self.checks = Coalescer(self._check_group, name="completion_checks")
        self.state: State | None = None  # live events are published through it (batcher())

    async def claim(self, grant: Grant) -> GrantClaim:
        """Claim the granted job's attempt. Claimed: send it. Moved: give the grant
        back and queue the job for that account. A Transition: the job ended here
        (settle it). None: nothing to send."""
        return await self.claims.submit(grant)

    async def record(self, outcome: Outcome) -> Transition:
        return await self.outcomes.submit(outcome)

    async def complete_if_done(self, batch_id: uuid.UUID) -> list[str]:
        return await self.checks.submit(batch_id)

    async def _claim_group(self, grants: Sequence[Grant]) -> list[GrantClaim]:
        ids = [uuid.UUID(grant.job_id) for grant in grants]
        async with session_scope(self.sessionmaker) as session:
            heads = await repository.job_heads(session, ids)
            results: dict[int, GrantClaim] = {}
            claims: list[tuple[int, Claim, ModelSpec]] = []
            for n, (grant, job_id) in enumerate(zip(grants, ids, strict=True)):
                head = heads.get(job_id)
                spec = self.registry.model(head.model) if head is not None else None
                if head is None:
                    results[n] = None
                elif spec is None:
                    results[n] = await service.fail_unconfigured(
                        session, job_id, public_url=self.public_url
                    )
                elif spec.provider != grant.account:
                    results[n] = Moved(spec.provider, head.batch.priority)
                else:
                    price = pricing.estimate(spec, head.params)
                    claim = Claim(
                        job_id,
                        grant.account,
                        spec.max_attempts,
                        price,
                        self.stale_after_s,
                        can_look=isinstance(
                            self.registry.providers.get(grant.account), SubmissionLookup
                        ),
                    )
                    claims.append((n, claim, spec))
            started = await transitions.start_attempts(
                session,
                [claim for _, claim, _ in claims],
                public_url=self.public_url,
                heads=heads,
                account_budgets=self.registry.budgets,
            )
        await self._publish(session)
        for (n, _, spec), result in zip(claims, started, strict=True):
            results[n] = Claimed(result, spec) if isinstance(result, StartedJob) else result
        return [results[n] for n in range(len(grants))]

    async def _record_group(self, outcomes: Sequence[Outcome]) -> list[Transition]:
        async with session_scope(self.sessionmaker) as session:
            recorded = await record_outcomes(session, outcomes, public_url=self.public_url)
        await self._publish(session)
        return recorded

    async def _check_group(self, batch_ids: Sequence[uuid.UUID]) -> list[list[str]]:
        # Mostly a batch still has active jobs: one statement, outside any transaction,
        # says so. Only a batch that looked idle is completed, under its row lock.
        async with self.sessionmaker() as session:
            await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            active = await repository.batches_with_active_jobs(session, batch_ids)
        idle = [batch_id for batch_id in batch_ids if batch_id not in active]
        events: dict[uuid.UUID, list[str]] = {}
        if idle:
            async with session_scope(self.sessionmaker) as session:
                events = await steps.complete_idle_batches(session, idle)
            await self._publish(session)
        # A batch completes once: its event goes to the first caller that asked.
        answers: list[list[str]] = []
        for batch_id in batch_ids:
            answers.append(events.pop(batch_id, []))
        return answers

    async def _publish(self, session: AsyncSession) -> None:
        """After the group's commit: its job and batch changes, to live listeners."""
        if self.state is not None:
            await publish_noted(self.state, session)


_BATCHERS: weakref.WeakKeyDictionary[async_sessionmaker[AsyncSession], JobBatcher] = (
    weakref.WeakKeyDictionary()
)


def batcher(state: State) -> JobBatcher:
    """The process's batcher for this state's database (created on first use)."""
    found = _BATCHERS.get(state.sessionmaker)
    stale_after_s = float(state.settings.reconcile_stale_after_s)
    if (
        found is None
        or found.registry is not state.registry
        or found.stale_after_s != stale_after_s
    ):
        found = JobBatcher(
            state.sessionmaker, state.registry, state.settings.public_url, stale_after_s
        )
        _BATCHERS[state.sessionmaker] = found
    found.state = state
    return found
