"""/v1/integrations (API key) and /v1/hooks/{id} (no key: the signature is the
authentication). Thin handlers; the work is in service.py and ingest.py."""

from __future__ import annotations

import time
import uuid
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Response

from service.batches.actions import enqueue_submitted
from service.deps import ApiKeyDep, SessionDep, StateDep
from service.integrations import ingest, repository, service
from service.integrations.kinds.base import InboundRequest
from service.integrations.schemas import (
    HookAnswer,
    InboundEventOut,
    InboundEventPage,
    IntegrationCreate,
    IntegrationOut,
    IntegrationPage,
    IntegrationUpdate,
    PreviewIn,
    PreviewOut,
)
from service.kit.errors import (
    ERROR_RESPONSES,
    ErrorDetail,
    ErrorResponse,
    InvalidInput,
    NotFound,
    Unauthorized,
)
from service.kit.pagination import (
    DEFAULT_LIMIT,
    Cursor,
    Limit,
    after_created,
    decode_time_cursor,
    decode_time_uuid_cursor,
    encode_time_cursor,
    keyset_page,
)
from service.logging import get_logger
from service.models import InboundEvent, Integration
from service.state import State

log = get_logger(__name__)
router = APIRouter(prefix="/v1/integrations", tags=["integrations"], responses=ERROR_RESPONSES)
hooks_router = APIRouter(prefix="/v1/hooks", tags=["integrations"])


@router.post("", status_code=201)
async def create_integration(
    body: IntegrationCreate, state: StateDep, session: SessionDep, api_key: ApiKeyDep
) -> IntegrationOut:
    """Paste the answer's `inbound_url` (and, for generic, its `secret`, shown only now)
    into the CMS's webhook settings."""
    saved = await service.create_integration(
        session, api_key=api_key, body=body, registry=state.registry, settings=state.settings
    )
    await session.commit()
    return service.integration_out(saved.integration, state.settings.public_url, saved.secret)


@router.get("")
async def list_integrations(
    state: StateDep,
    session: SessionDep,
    api_key: ApiKeyDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> IntegrationPage:
    """The key's integrations, newest first."""
    after = decode_time_uuid_cursor(cursor)
    rows = await repository.list_integrations(session, api_key.id, limit=limit + 1, after=after)
    page, next_cursor = keyset_page(rows, limit, after_created)
    public_url = state.settings.public_url
    return IntegrationPage(
        items=[service.integration_out(i, public_url) for i in page], next_cursor=next_cursor
    )


@router.get("/{integration_id}")
async def get_integration(
    integration_id: uuid.UUID, state: StateDep, session: SessionDep, api_key: ApiKeyDep
) -> IntegrationOut:
    integration = await _own(session, integration_id, api_key.id)
    return service.integration_out(integration, state.settings.public_url)


@router.patch("/{integration_id}")
async def update_integration(
    integration_id: uuid.UUID,
    body: IntegrationUpdate,
    state: StateDep,
    session: SessionDep,
    api_key: ApiKeyDep,
) -> IntegrationOut:
    """Change any field. A new generic `inbound: {}` makes a new secret, shown once."""
    integration = await _own(session, integration_id, api_key.id)
    saved = await service.update_integration(
        session, integration, body, state.registry, state.settings
    )
    await session.commit()
    return service.integration_out(saved.integration, state.settings.public_url, saved.secret)


@router.delete("/{integration_id}", status_code=204)
async def delete_integration(
    integration_id: uuid.UUID, session: SessionDep, api_key: ApiKeyDep
) -> Response:
    """Its events go with it; the batches it made stay, no longer linked."""
    integration = await _own(session, integration_id, api_key.id)
    await session.delete(integration)
    await session.commit()
    return Response(status_code=204)


@router.get("/{integration_id}/events")
async def list_events(
    integration_id: uuid.UUID,
    session: SessionDep,
    api_key: ApiKeyDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> InboundEventPage:
    """Verified deliveries, newest first: what each was, and what became of it."""
    await _own(session, integration_id, api_key.id)
    after = decode_time_cursor(cursor)
    rows = await repository.list_events(session, integration_id, limit=limit + 1, after=after)
    page, next_cursor = keyset_page(
        rows, limit, lambda event: encode_time_cursor(event.received_at, event.id)
    )
    return InboundEventPage(items=[_event_out(e) for e in page], next_cursor=next_cursor)


@router.post("/{integration_id}/preview")
async def preview(
    integration_id: uuid.UUID,
    body: PreviewIn,
    state: StateDep,
    session: SessionDep,
    api_key: ApiKeyDep,
) -> PreviewOut:
    """Render the template from a sample body, as a delivery would be (without checking
    its signature, and without making anything). A template error is a 422 saying why."""
    integration = await _own(session, integration_id, api_key.id)
    return service.preview(integration, body, state.settings)


def signed_path(public_url: str, integration_id: uuid.UUID, request: Request) -> str:
    """The path and query as the CMS sent them to `inbound_url` (Contentful signs them):
    the public URL's own path first, which a reverse proxy may have cut off on the way
    here, and the query exactly as received."""
    path = f"{urlsplit(public_url).path.rstrip('/')}/v1/hooks/{integration_id}"
    query = request.scope.get("query_string", b"").decode("latin-1")
    return f"{path}?{query}" if query else path


@hooks_router.post(
    "/{integration_id}",
    status_code=202,
    responses={
        401: {"model": ErrorResponse, "description": "Bad, missing or stale signature"},
        404: {"model": ErrorResponse, "description": "No such integration"},
        413: {"model": ErrorResponse, "description": "Body over DARKROOM_MAX_REQUEST_BYTES"},
        422: {
            "model": ErrorResponse,
            "description": "Not JSON, a field missing, or the template failed on this article",
        },
    },
)
async def receive_hook(integration_id: uuid.UUID, request: Request) -> HookAnswer:
    """A CMS webhook. No API key: the CMS's signature is the authentication. Answers
    once the job is durable (or the event was ignored or seen before)."""
    # The hot path: state and session without dependencies (a sync dependency costs a
    # trip through the thread pool).
    state: State = request.app.state.darkroom
    inbound = InboundRequest(
        method=request.method,
        path=signed_path(state.settings.public_url, integration_id, request),
        query=dict(request.query_params),
        headers={name.lower(): value for name, value in request.headers.items()},
        body=await request.body(),
    )
    async with state.sessionmaker() as session:
        try:
            outcome = await ingest.receive_hook(
                session,
                integration_id=integration_id,
                request=inbound,
                registry=state.registry,
                settings=state.settings,
                now_ms=int(time.time() * 1000),
                redis=state.redis,
            )
        except ingest.SignatureRejected as exc:
            await session.rollback()
            await repository.count_rejection(session, exc.integration_id)
            await session.commit()
            log.info("hook_rejected", integration_id=str(exc.integration_id), reason=exc.reason)
            raise Unauthorized(f"signature check failed: {exc.reason}") from None
        await session.commit()
    if outcome.submitted is not None:
        await enqueue_submitted(state, outcome.submitted)
    if outcome.failure is not None:
        failure = outcome.failure
        raise InvalidInput(
            str(failure),
            code="template_error",
            details=[ErrorDetail(field=failure.field, message=failure.message)],
        )
    return outcome.answer


def _event_out(event: InboundEvent) -> InboundEventOut:
    return InboundEventOut(
        id=event.id,
        event_type=event.event_type,
        verdict=event.verdict.value,
        reason=event.reason,
        dedupe_key=event.dedupe_key,
        batch_id=event.batch_id,
        job_id=event.job_id,
        received_at=event.received_at,
        headers=event.headers,
        body=event.body,
        writeback_status=event.writeback_status,
        writeback_error=event.writeback_error,
        writeback_result=event.writeback_result,
    )


async def _own(
    session: SessionDep, integration_id: uuid.UUID, api_key_id: uuid.UUID
) -> Integration:
    integration = await repository.get_integration(session, integration_id, api_key_id)
    if integration is None:
        raise NotFound(f"no integration {integration_id}")
    return integration
