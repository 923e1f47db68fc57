"""A CMS webhook in: verify, read, deduplicate, render, and make a batch of one job,
all in the caller's one transaction. Never commits; the endpoint commits, then enqueues.

The order is what makes it safe:
- Verify first, on the raw body: nothing about an unauthenticated request is stored
  but a counter (the endpoint adds it).
- A body that cannot be read (not JSON, a field missing) is refused with nothing kept:
  without its dedupe key it is not an event.
- The event row goes in with INSERT ... ON CONFLICT DO NOTHING on (integration,
  dedupe key), before any batch is made. Two deliveries of one event, even at the same
  moment, make one row and so at most one job: the second insert waits for the first
  transaction and then finds the row.
- An event that made no job (failed, or ignored and now wanted) is processed again by a
  redelivery, under the row's lock: the CMS's retry after a template fix works.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from service.batches.schemas import MAX_PROMPT, BatchCreate
from service.batches.service import SubmittedBatch, submit_batch
from service.config import Settings
from service.integrations import repository
from service.integrations.kinds import KINDS
from service.integrations.kinds.base import (
    Article,
    CmsKind,
    InboundRequest,
    KindOptions,
    PayloadError,
    SignatureError,
)
from service.integrations.render import RenderedJob, RenderFailed, render_job
from service.integrations.schemas import HookAnswer
from service.kit.base import utcnow
from service.kit.errors import ErrorDetail, InvalidInput, NotFound
from service.models import ApiKey, Integration, Verdict
from service.providers.registry import ProviderRegistry

MAX_STORED_BODY = 256 * 1024
MAX_DEDUPE_KEY = 255
MAX_EVENT_TYPE = 200
# Headers that carry a credential or a signature: never stored. Any name with one of
# these in it is dropped too, and so is the header a Strapi integration names.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
SECRET_HEADER_PARTS = ("signature", "secret", "token", "auth", "api-key", "apikey", "password")


class SignatureRejected(Exception):
    """A delivery that is not authentic (401). `reason` holds no secret."""

    def __init__(self, integration_id: uuid.UUID, reason: str) -> None:
        super().__init__(reason)
        self.integration_id = integration_id
        self.reason = reason


@dataclass
class HookOutcome:
    answer: HookAnswer
    # The batch made, to enqueue after commit.
    submitted: SubmittedBatch | None = None
    # The event was stored as failed: answer 422 with this, after commit.
    failure: RenderFailed | None = None


def new_event_id() -> str:
    return "evt_" + uuid.uuid4().hex


async def receive_hook(
    session: AsyncSession,
    *,
    integration_id: uuid.UUID,
    request: InboundRequest,
    registry: ProviderRegistry,
    settings: Settings,
    now_ms: int,
    redis: Redis | None = None,
) -> HookOutcome:
    found = await repository.integration_for_hook(session, integration_id)
    kind = KINDS.get(found[0].kind) if found else None
    if found is None or kind is None:
        raise NotFound(f"no integration {integration_id}")
    integration, api_key = found
    try:
        kind.verify(request, integration.inbound, now_ms)
    except SignatureError as exc:
        raise SignatureRejected(integration.id, str(exc)) from None
    payload = parse_body(request.body)
    article = read_article(kind, request, payload, integration.read_locale)
    wanted = article.event_type in acted_on(integration, kind)
    rendered: RenderedJob | None = None
    failure: RenderFailed | None = None
    if wanted:
        try:
            rendered = render_job(integration.template, article.variables, settings)
        except RenderFailed as exc:
            failure = exc
    event = _event_row(integration, request, payload, article, wanted, failure)
    if not await repository.insert_event(session, event):
        existing = await repository.lock_event(session, integration.id, event["dedupe_key"])
        if existing.verdict is Verdict.accepted or (
            existing.verdict is Verdict.ignored and not wanted
        ):
            return HookOutcome(
                HookAnswer(event_id=existing.id, job_id=existing.job_id, status="duplicate")
            )
        # It made no job before: this delivery decides again, on the same row.
        event["id"] = existing.id
        await repository.update_event(
            session,
            existing.id,
            {"verdict": event["verdict"], "reason": event["reason"]},
        )
    if not wanted:
        return HookOutcome(HookAnswer(event_id=event["id"], job_id=None, status="ignored"))
    if failure is not None or rendered is None:
        return HookOutcome(
            HookAnswer(event_id=event["id"], job_id=None, status="accepted"), failure=failure
        )
    return await _make_job(
        session,
        integration,
        api_key,
        event["id"],
        rendered,
        registry=registry,
        settings=settings,
        redis=redis,
    )


def acted_on(integration: Integration, kind: CmsKind) -> tuple[str, ...]:
    return tuple(integration.events) if integration.events else kind.default_events


def parse_body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        detail = ErrorDetail(field="body", message=f"not JSON: {exc}"[:300])
        raise InvalidInput(
            f"body: {detail.message}", code="invalid_json", details=[detail]
        ) from None


def read_article(
    kind: CmsKind, request: InboundRequest, payload: Any, locale: str | None
) -> Article:
    try:
        return kind.read(request, payload, KindOptions(locale=locale))
    except PayloadError as exc:
        detail = ErrorDetail(field=exc.field, message=exc.message)
        raise InvalidInput(
            f"{exc.field}: {exc.message}", code="invalid_payload", details=[detail]
        ) from None


async def _make_job(
    session: AsyncSession,
    integration: Integration,
    api_key: ApiKey,
    event_id: str,
    rendered: RenderedJob,
    *,
    registry: ProviderRegistry,
    settings: Settings,
    redis: Redis | None,
) -> HookOutcome:
    """The shared submit use case, with one realtime job; a job it refuses (a model
    removed from the configuration since) fails the event, not the request."""
    try:
        body = batch_body(integration, event_id, rendered)
    except ValidationError as exc:  # what rendering could make that a job cannot take
        error = exc.errors()[0]
        return await _failed(session, event_id, RenderFailed("template", str(error["msg"])))
    try:
        submitted = await submit_batch(
            session,
            api_key=api_key,
            body=body,
            idempotency_key=None,
            registry=registry,
            settings=settings,
            redis=redis,
            integration_id=integration.id,
        )
    except InvalidInput as exc:
        failure = RenderFailed("template.model", exc.message.split(": ", 1)[-1])
        return await _failed(session, event_id, failure)
    job_id = submitted.jobs[0][0]
    await repository.update_event(
        session,
        event_id,
        {
            "verdict": Verdict.accepted,
            "reason": None,
            "batch_id": submitted.batch.id,
            "job_id": job_id,
        },
    )
    return HookOutcome(
        HookAnswer(event_id=event_id, job_id=job_id, status="accepted"), submitted=submitted
    )


async def _failed(session: AsyncSession, event_id: str, failure: RenderFailed) -> HookOutcome:
    await repository.update_event(
        session, event_id, {"verdict": Verdict.failed, "reason": str(failure)}
    )
    return HookOutcome(
        HookAnswer(event_id=event_id, job_id=None, status="accepted"), failure=failure
    )


def batch_body(integration: Integration, event_id: str, rendered: RenderedJob) -> BatchCreate:
    job: dict[str, Any] = {
        "prompt": rendered.prompt,
        "model": rendered.model,
        "width": rendered.width,
        "height": rendered.height,
        "format": rendered.format,
        "output_name": rendered.output_name,
    }
    if rendered.negative_prompt is not None:
        job["negative_prompt"] = rendered.negative_prompt[:MAX_PROMPT]
    return BatchCreate.model_validate(
        {
            "name": integration.name[:200],
            "priority": "realtime",
            "callback_url": integration.callback_url,
            "metadata": {"integration_id": str(integration.id), "event_id": event_id},
            "jobs": [job],
        }
    )


def _event_row(
    integration: Integration,
    request: InboundRequest,
    payload: Any,
    article: Article,
    wanted: bool,
    failure: RenderFailed | None,
) -> dict[str, Any]:
    if not wanted:
        verdict, reason = (
            Verdict.ignored,
            (
                f"event {article.event_type[:MAX_EVENT_TYPE]!r} is not one this integration acts "
                "on (its events, or the kind's publish events)"
            ),
        )
    elif failure is not None:
        verdict, reason = Verdict.failed, str(failure)
    else:
        verdict, reason = Verdict.accepted, None
    return {
        "id": new_event_id(),
        "integration_id": integration.id,
        "dedupe_key": dedupe_key(article.dedupe_key, request.body),
        "event_type": article.event_type[:MAX_EVENT_TYPE],
        "verdict": verdict,
        "reason": reason,
        "headers": stored_headers(request.headers, integration.inbound),
        "body": stored_body(request.body, payload),
        "ref": article.ref,
        "variables": {name: value for name, value in article.variables.items() if name != "raw"},
        "received_at": utcnow(),
    }


def dedupe_key(key: str, body: bytes) -> str:
    """Long keys are hashed to fit the unique index; a kind that found none (it should
    not happen) falls back to the body's hash, so only identical bodies collide."""
    if not key:
        return "body-sha256:" + hashlib.sha256(body).hexdigest()
    if len(key) > MAX_DEDUPE_KEY:
        return "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return key


def stored_headers(headers: dict[str, str] | Any, inbound: dict[str, Any]) -> dict[str, str]:
    named = inbound.get("header")
    extra = {named.lower()} if isinstance(named, str) else set()
    return {
        name: value
        for name, value in headers.items()
        if name not in SECRET_HEADERS
        and name not in extra
        and not any(part in name for part in SECRET_HEADER_PARTS)
    }


def stored_body(body: bytes, payload: Any) -> Any:
    """The parsed body (already known to be JSON), or past 256 KB a marker of what it was."""
    if len(body) > MAX_STORED_BODY:
        return {
            "truncated": True,
            "size_bytes": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "head": body[:1024].decode("utf-8", errors="replace"),
        }
    return payload
