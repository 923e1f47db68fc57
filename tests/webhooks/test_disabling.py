"""An endpoint answering 410 is disabled at once, one failing for five days too; the key's
other endpoints are told, and nothing more is sent to it."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from standardwebhooks import Webhook

from service.kit.base import utcnow
from service.models import DeliveryStatus, WebhookEvent
from service.state import State
from service.webhooks.tasks import _deliver_webhook
from service.worker import run_until_idle
from tests.conftest import Caller, make_caller
from tests.webhooks.helpers import endpoint_of, event, new_event, set_endpoint
from tests.webhooks.receiver import closed_port_url, running_receiver


async def test_410_disables_the_endpoint_and_tells_the_other_enabled_ones(
    state: State, caller: Caller
) -> None:
    async with running_receiver() as gone, running_receiver() as other, running_receiver() as off:
        gone.status = 410
        first = await new_event(state, caller.api_key_id, gone.url)
        queued = await new_event(state, caller.api_key_id, gone.url)
        await new_event(state, caller.api_key_id, other.url)
        off_event = await new_event(state, caller.api_key_id, off.url)
        off_endpoint = await endpoint_of(state, off_event)
        await set_endpoint(state, off_endpoint.id, disabled_at=utcnow(), disabled_reason="x")
        stranger = await make_caller(state, "stranger")
        await new_event(state, stranger.api_key_id, other.url + "?stranger")

        await _deliver_webhook(state, first)
        endpoint = await endpoint_of(state, first)
        assert endpoint.disabled_at is not None
        assert endpoint.disabled_reason == "the endpoint answered 410 Gone"
        assert (await event(state, first)).status is DeliveryStatus.failed
        queued_event = await event(state, queued)
        assert queued_event.status is DeliveryStatus.failed
        assert queued_event.last_error == (
            f"endpoint {endpoint.id} is disabled (the endpoint answered 410 Gone); not sent"
        )
        await run_until_idle(state)

    assert len(gone.received) == 1  # the queued event was never sent
    assert off.received == []  # a disabled endpoint is not told either
    notices = [
        Webhook(caller.webhook_secret).verify(r.body, r.headers)
        for r in other.received
        if b"endpoint.disabled" in r.body
    ]
    assert len(notices) == 1
    assert notices[0]["data"]["endpoint_id"] == str(endpoint.id)
    assert notices[0]["data"]["reason"] == "the endpoint answered 410 Gone"
    assert notices[0]["data"]["host"] == gone.url.split("/")[2]
    async with state.sessionmaker() as session:
        mine = select(WebhookEvent).where(WebhookEvent.type == "endpoint.disabled")
        [row] = (await session.execute(mine)).scalars()
    assert row.api_key_id == caller.api_key_id
    assert row.batch_id is None


async def test_an_endpoint_failing_for_five_days_is_disabled(state: State, caller: Caller) -> None:
    url = closed_port_url()
    async with running_receiver() as other:
        await new_event(state, caller.api_key_id, other.url, enqueue=True)
        recent = await new_event(state, caller.api_key_id, url)
        endpoint = await endpoint_of(state, recent)
        await set_endpoint(state, endpoint.id, failing_since=utcnow() - timedelta(days=4))
        await _deliver_webhook(state, recent)
        assert (await endpoint_of(state, recent)).disabled_at is None  # four days: not yet
        assert (await event(state, recent)).status is DeliveryStatus.pending

        await set_endpoint(state, endpoint.id, failing_since=utcnow() - timedelta(days=5, hours=1))
        old = await new_event(state, caller.api_key_id, url)
        await _deliver_webhook(state, old)
        disabled = await endpoint_of(state, old)
        assert disabled.disabled_at is not None
        assert (disabled.disabled_reason or "").startswith("failing without a success since ")
        assert (await event(state, old)).status is DeliveryStatus.failed
        assert (await event(state, recent)).status is DeliveryStatus.failed
        await run_until_idle(state)
    types = sorted(r.body.split(b'"type":"')[1].split(b'"')[0] for r in other.received)
    assert types == [b"endpoint.disabled", b"test.ping"]


async def test_a_success_ends_the_failing_run(state: State, caller: Caller) -> None:
    async with running_receiver() as receiver:
        receiver.fail_next = 1
        event_id = await new_event(state, caller.api_key_id, receiver.url)
        await _deliver_webhook(state, event_id)
        failing = await endpoint_of(state, event_id)
        assert failing.failing_since is not None
        assert failing.last_success_at is None
        await run_until_idle(state)
    healthy = await endpoint_of(state, event_id)
    assert healthy.failing_since is None
    assert healthy.last_success_at is not None


async def test_events_for_a_disabled_endpoint_are_failed_not_sent(
    state: State, caller: Caller
) -> None:
    async with running_receiver() as receiver:
        first = await new_event(state, caller.api_key_id, receiver.url)
        endpoint = await endpoint_of(state, first)
        await set_endpoint(state, endpoint.id, disabled_at=utcnow(), disabled_reason="by hand")
        later = await new_event(state, caller.api_key_id, receiver.url, enqueue=True)
        await run_until_idle(state)
        await _deliver_webhook(state, first)
    assert receiver.received == []
    for event_id in (first, later):
        found = await event(state, event_id)
        assert found.status is DeliveryStatus.failed
        assert found.attempts == 0
        assert found.last_error == f"endpoint {endpoint.id} is disabled (by hand); not sent"
