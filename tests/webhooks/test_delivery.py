"""Completion webhooks: signed per Standard Webhooks, retried, recorded, never lost."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import select
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from service.kit.ssrf import blocked_reason, guarded_client
from service.models import DeliveryStatus, WebhookAttempt, WebhookEvent
from service.state import State
from service.webhooks.schedule import MAX_ATTEMPTS
from service.webhooks.tasks import _deliver_webhook
from service.worker import run_until_idle
from tests.conftest import Caller, submit
from tests.webhooks.helpers import make_due, use_up_schedule
from tests.webhooks.receiver import closed_port_url, running_receiver


async def events(state: State) -> list[WebhookEvent]:
    async with state.sessionmaker() as session:
        query = select(WebhookEvent).order_by(WebhookEvent.created_at, WebhookEvent.type)
        return list((await session.execute(query)).scalars())


async def test_signed_events_for_every_job_and_the_batch(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    async with running_receiver() as receiver:
        body = {
            "callback_url": receiver.url,
            "jobs": [
                {"prompt": "a", "width": 64, "height": 64},
                {"prompt": "b", "width": 64, "height": 64, "model": "nope"},
            ],
        }
        rejected = await client.post("/v1/batches", json=body, headers=caller.headers)
        assert rejected.status_code == 422
        body["jobs"] = body["jobs"][:1] * 2  # type: ignore[index]
        batch_id = await submit(client, caller, body)
        await run_until_idle(state)

    verifier = Webhook(caller.webhook_secret)
    payloads = [verifier.verify(r.body, r.headers) for r in receiver.received]
    types = sorted(p["type"] for p in payloads)
    assert types == ["batch.completed", "job.succeeded", "job.succeeded"]
    batch_event = next(p for p in payloads if p["type"] == "batch.completed")
    api_batch = (await client.get(f"/v1/batches/{batch_id}", headers=caller.headers)).json()
    assert batch_event["data"] == api_batch
    job_event = next(p for p in payloads if p["type"] == "job.succeeded")
    api_job = await client.get(f"/v1/jobs/{job_event['data']['id']}", headers=caller.headers)
    assert job_event["data"] == api_job.json()
    for request in receiver.received:
        assert request.headers["webhook-id"].startswith("msg_")
        assert request.headers["webhook-signature"].startswith("v1,")
        assert request.headers["content-type"] == "application/json"
    assert {e.status for e in await events(state)} == {DeliveryStatus.delivered}


async def test_a_forged_or_replayed_signature_does_not_verify(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    async with running_receiver() as receiver:
        await submit(
            client,
            caller,
            {"callback_url": receiver.url, "jobs": [{"prompt": "a", "width": 64, "height": 64}]},
        )
        await run_until_idle(state)
    request = receiver.received[0]
    tampered = request.body.replace(b"succeeded", b"failed")
    with pytest.raises(WebhookVerificationError):
        Webhook(caller.webhook_secret).verify(tampered, request.headers)


async def test_failed_job_sends_job_failed(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    from service.providers.base import ProviderPermanentError
    from tests.jobs.scripted import ScriptedProvider, install

    install(state, ScriptedProvider(errors=[ProviderPermanentError("content_policy", "no")]))
    async with running_receiver() as receiver:
        await submit(
            client,
            caller,
            {"callback_url": receiver.url, "jobs": [{"prompt": "a", "model": "test/scripted"}]},
        )
        await run_until_idle(state)
    payloads = [Webhook(caller.webhook_secret).verify(r.body, r.headers) for r in receiver.received]
    by_type = {p["type"]: p for p in payloads}
    assert set(by_type) == {"job.failed", "batch.completed"}
    assert by_type["job.failed"]["data"]["error"] == {"code": "content_policy", "message": "no"}
    assert by_type["batch.completed"]["data"]["status"] == "failed"


async def test_receiver_down_is_retried_with_the_same_id_and_each_attempt_recorded(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    async with running_receiver() as receiver:
        receiver.fail_next = 2
        await submit(
            client,
            caller,
            {"callback_url": receiver.url, "jobs": [{"prompt": "a", "width": 64, "height": 64}]},
        )
        await run_until_idle(state)  # runs the job and the first delivery attempts
        for _ in range(5):
            pending = [e for e in await events(state) if e.status is DeliveryStatus.pending]
            if not pending:
                break
            await make_due(state)
            for event in pending:
                await _deliver_webhook(state, event.id)
    ids_by_type: dict[str, set[str]] = {}
    for request in receiver.received:
        kind = json.loads(request.body)["type"]
        ids_by_type.setdefault(kind, set()).add(request.headers["webhook-id"])
    assert all(len(ids) == 1 for ids in ids_by_type.values())  # retries keep their id
    assert len(receiver.received) == 2 + 2  # two 503s, then one success per event
    async with state.sessionmaker() as session:
        attempts = list((await session.execute(select(WebhookAttempt))).scalars())
    assert sorted(a.status_code for a in attempts) == [200, 200, 503, 503]
    assert all(a.duration_ms >= 0 for a in attempts)
    failing = [a for a in attempts if a.status_code == 503]
    assert all(a.error == "receiver answered HTTP 503" for a in failing)
    assert {e.status for e in await events(state)} == {DeliveryStatus.delivered}


async def test_unreachable_receiver_is_rescheduled_then_given_up_after_the_window(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    await submit(
        client,
        caller,
        {"callback_url": closed_port_url(), "jobs": [{"prompt": "a", "width": 64, "height": 64}]},
    )
    await run_until_idle(state)
    [job_event, batch_event] = await events(state)
    for event in (job_event, batch_event):
        assert event.status is DeliveryStatus.pending
        assert event.attempts >= 1
        assert "ConnectError" in (event.last_error or "")
        assert event.next_attempt_at > event.created_at
    # Seven attempts in (about 27.6 h with real steps): the eighth failure gives up.
    await use_up_schedule(state, job_event.id)
    await _deliver_webhook(state, job_event.id)
    [job_event, _] = await events(state)
    assert job_event.status is DeliveryStatus.failed
    assert job_event.attempts == MAX_ATTEMPTS


async def test_no_callback_url_means_no_events(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    await submit(client, caller, {"jobs": [{"prompt": "a", "width": 64, "height": 64}]})
    await run_until_idle(state)
    assert await events(state) == []


async def test_private_addresses_are_refused_when_not_allowed(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    state.settings.webhook_allow_private_networks = False
    await state.http.aclose()
    state.http = guarded_client(state.settings)  # the guard is the client's transport
    async with running_receiver() as receiver:
        await submit(
            client,
            caller,
            {"callback_url": receiver.url, "jobs": [{"prompt": "a", "width": 64, "height": 64}]},
        )
        await run_until_idle(state)
    assert receiver.received == []
    for event in await events(state):
        assert event.status is DeliveryStatus.failed
        assert "non-public address 127.0.0.1" in (event.last_error or "")


async def test_public_hosts_pass_the_guard() -> None:
    assert await blocked_reason("https://8.8.8.8/hook") is None
    assert await blocked_reason("http://[::ffff:10.0.0.1]/x") is not None
    assert await blocked_reason("http://169.254.169.254/latest/meta-data") is not None
    assert await blocked_reason("http://localhost:9/x") is not None
