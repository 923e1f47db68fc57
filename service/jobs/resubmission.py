"""Never pay twice for a create whose answer was lost.

A create that failed after it may have reached the provider (a reset or a timeout after
the body went out, a 5xx: `may_have_reached_provider`) may have made a generation that
runs, and is billed, although its handle never came back. Providers cannot deduplicate
a create, so the attempt remembers when it went out (`unconfirmed_since`), and the next
attempt of that job asks the provider first (`SubmissionLookup.find_submitted`): it
resumes what it finds, by polling, and sends a new request only when nothing is there.

A worker that died while its attempt had no handle stored leaves the same doubt, from
that attempt's start. An attempt that could not look (the listing failed) hands its
window on unchanged, so the doubt is never dropped by a failed lookup.

Only the attempts after such a failure pay for any of this: the first attempt of a job
has nothing to look for, and returns before touching Postgres.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.db import session_scope
from service.jobs.service import StartedJob
from service.logging import get_logger
from service.models import JobAttempt
from service.providers.base import (
    GenerationRequest,
    Provider,
    ProviderError,
    ProviderRateLimited,
    ProviderRetryableError,
    RemoteHandle,
    SubmissionLookup,
)
from service.providers.http import may_have_reached_provider
from service.ratelimit import pending_key
from service.state import State

log = get_logger(__name__)

# The provider stamps its own clock on what it made; ours may be off by this much.
CLOCK_SKEW = timedelta(seconds=15)


async def remember_unconfirmed(
    state: State, provider: Provider, started: StartedJob, error: ProviderError
) -> None:
    """After a failed create: if it may have made a generation, the next attempt must
    look for it from this attempt's start (earlier than the send: a wider window is safe)."""
    if not isinstance(provider, SubmissionLookup) or isinstance(error, ProviderRateLimited):
        return
    if not may_have_reached_provider(error):
        return
    await _set(state, started, unconfirmed_since=JobAttempt.started_at)


async def look_before_sending(
    state: State, provider: Provider, started: StartedJob, request: GenerationRequest
) -> RemoteHandle | ProviderError | None:
    """Before a create: a handle an earlier attempt made, to resume (no new create);
    a ProviderError when the provider could not be asked (this attempt ends with it and
    hands the window on); None when nothing is in doubt or nothing was found (send)."""
    if started.attempt <= 1 or not isinstance(provider, SubmissionLookup):
        return None
    async with state.sessionmaker() as session:
        doubt = await _doubt(session, started)
    if doubt is None:
        return None
    since, known = doubt
    try:
        found = await provider.find_submitted(request, since - CLOCK_SKEW, exclude=known)
    except Exception as exc:
        error = (
            exc
            if isinstance(exc, ProviderError)
            else ProviderRetryableError("internal_error", f"{type(exc).__name__}: {exc}")
        )
        log.warning("earlier_submission_lookup_failed", code=error.code, error=error.message)
        await _set(state, started, unconfirmed_since=since)
        return error
    if found is None:
        log.info("earlier_submission_not_found", since=since.isoformat())
        return None
    note = (
        f"resumed {found.id}, found at the provider: an earlier attempt's create, "
        f"sent from {since.isoformat(timespec='seconds')}, lost its answer"
    )
    await _set(state, started, note=note)
    # No request goes out: the place in line for a rate token is given back, the
    # slot stays held by the generation (renewed once the handle is stored).
    await state.redis.zrem(pending_key(started.account), str(started.job_id))
    log.info("earlier_submission_resumed", remote_id=found.id, status=found.status)
    return found


async def _doubt(
    session: AsyncSession, started: StartedJob
) -> tuple[datetime, frozenset[str]] | None:
    """(since when, handles already owned) when the previous attempt left a create in
    doubt, else None."""
    rows = (
        await session.execute(
            select(
                JobAttempt.number,
                JobAttempt.started_at,
                JobAttempt.outcome,
                JobAttempt.remote_id,
                JobAttempt.unconfirmed_since,
            )
            .where(JobAttempt.job_id == started.job_id, JobAttempt.number < started.attempt)
            .order_by(JobAttempt.number.desc())
        )
    ).all()
    if not rows:
        return None
    _, started_at, outcome, remote_id, unconfirmed_since = rows[0]
    since = unconfirmed_since
    if since is None and outcome == "abandoned" and remote_id is None:
        since = started_at  # its worker died, perhaps with the request on its way
    if since is None:
        return None
    return since, frozenset(row.remote_id for row in rows if row.remote_id)


async def _set(state: State, started: StartedJob, **values: object) -> None:
    async with session_scope(state.sessionmaker) as session:
        await session.execute(
            update(JobAttempt)
            .where(JobAttempt.job_id == started.job_id, JobAttempt.number == started.attempt)
            .values(**values)
        )
