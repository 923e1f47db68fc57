"""Completion callbacks from asynchronous providers (Replicate and fal webhooks).

A callback is verified with the account's signing secret, matched to the job waiting
for that generation, and handed to a worker (jobs.tasks.finish_remote_job) to download
and record; polling is the safety net, and whichever comes first finishes the job.
The slot the generation held is freed here at once: the provider is done with it, and
the next job may go while this one's image is still being fetched.
"""

from __future__ import annotations

from collections.abc import Mapping

from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from service.callbacks.early import keep_early_callback
from service.callbacks.schemas import CallbackAck
from service.jobs import repository
from service.jobs.tasks import FINISH_REMOTE_JOB
from service.kit.errors import NotFound, ServiceUnavailable, Unauthorized
from service.logging import get_logger
from service.models import JobStatus
from service.providers.base import AsyncProvider, CallbackRejected, ProviderError, RemoteHandle
from service.state import State

log = get_logger(__name__)


async def accept_callback(
    session: AsyncSession, state: State, *, account: str, headers: Mapping[str, str], body: bytes
) -> CallbackAck:
    provider, remote = await _verify(state, account, headers, body)
    await _note_arrival(state, provider.name)
    job = await repository.job_by_remote_id(session, remote.id)
    if job is None and remote.finished:
        # A fast provider can call back before the worker that submitted the job has
        # stored the prediction id; that worker picks the result up from here. If it
        # stored the id meanwhile, it may have looked before the result was kept: look
        # again, and finish the job from here too (whichever comes second is a no-op).
        await keep_early_callback(state, provider.name, remote)
        job = await repository.job_by_remote_id(session, remote.id)
        if job is None:
            return CallbackAck(status="accepted")
    if job is None or job.status is not JobStatus.running or job.provider != provider.name:
        return CallbackAck(status="ignored")
    if not remote.finished:
        return CallbackAck(status="pending")
    try:
        await state.dispatch.limiter(provider.name).release(str(job.id))
        await state.redis.enqueue_job(
            FINISH_REMOTE_JOB,
            str(job.id),
            provider.name,
            remote.to_json(),
            _job_id=f"finish:{job.id}:{remote.id}",
            _queue_name=state.settings.queue_name,
        )
    except (RedisError, OSError) as exc:
        log.warning("callback_not_queued", job_id=str(job.id), error=repr(exc))
        raise ServiceUnavailable("cannot queue the result now; send it again later") from exc
    return CallbackAck(status="accepted")


async def _note_arrival(state: State, account: str) -> None:
    """Callbacks reach us: polls may count on them again (even when a poll finished this
    job first). Best effort: the callback itself is what matters."""
    try:
        await state.dispatch.callbacks.arrived(account)
    except (RedisError, OSError) as exc:
        log.warning("callback_arrival_not_noted", error=repr(exc))


async def _verify(
    state: State, account: str, headers: Mapping[str, str], body: bytes
) -> tuple[AsyncProvider, RemoteHandle]:
    """The callback must verify with the account's secret. `account` may also name a kind
    (/v1/callbacks/replicate, from before callbacks were per account): then any account
    of that kind whose secret verifies it."""
    candidates = _accounts_for(state, account)
    if not candidates:
        raise NotFound(f"no provider account {account!r} takes callbacks")
    reasons: list[str] = []
    for provider in candidates:
        try:
            return provider, await provider.parse_callback(headers, body)
        except CallbackRejected as exc:
            reasons.append(f"{provider.name}: {exc}")
        except ProviderError as exc:  # the signing secret could not be fetched
            raise ServiceUnavailable(f"{provider.name}: {exc.message}") from exc
    raise Unauthorized("callback rejected: " + "; ".join(reasons), code="callback_rejected")


def _accounts_for(state: State, account: str) -> list[AsyncProvider]:
    providers = state.registry.providers
    named = providers.get(account)
    chosen = [named] if named is not None else []
    chosen += [p for p in providers.values() if p.kind == account and p is not named]
    return [p for p in chosen if isinstance(p, AsyncProvider) and p.capabilities.callbacks]
