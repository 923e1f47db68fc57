"""Webhook secret rotation: the new secret once, and two signatures for 24 h."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import update
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from service.kit.base import utcnow
from service.models import ApiKey
from service.state import State
from service.worker import run_until_idle
from tests.conftest import Caller
from tests.webhooks.helpers import new_event
from tests.webhooks.receiver import running_receiver


async def rotate(client: httpx.AsyncClient, caller: Caller) -> dict[str, str]:
    response = await client.post("/v1/keys/current/rotate-webhook-secret", headers=caller.headers)
    assert response.status_code == 200, response.text
    body: dict[str, str] = response.json()
    return body


async def test_both_secrets_verify_for_24_hours_then_only_the_new_one(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    rotated = await rotate(client, caller)
    new_secret = rotated["webhook_secret"]
    assert new_secret.startswith("whsec_")
    assert new_secret != caller.webhook_secret
    valid_until = datetime.fromisoformat(rotated["previous_secret_valid_until"])
    assert timedelta(hours=23, minutes=59) < valid_until - utcnow() <= timedelta(hours=24)
    assert set(rotated) == {"webhook_secret", "previous_secret_valid_until"}

    async with running_receiver() as receiver:
        await new_event(state, caller.api_key_id, receiver.url, enqueue=True)
        await run_until_idle(state)
        async with state.sessionmaker() as session:
            await session.execute(
                update(ApiKey)
                .where(ApiKey.id == caller.api_key_id)
                .values(previous_webhook_secret_expires_at=utcnow() - timedelta(seconds=1))
            )
            await session.commit()
        await new_event(state, caller.api_key_id, receiver.url, enqueue=True)
        await run_until_idle(state)

    during, after = receiver.received
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    Webhook(new_secret).verify(during.body, during.headers)
    Webhook(caller.webhook_secret).verify(during.body, during.headers)
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    Webhook(new_secret).verify(after.body, after.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(caller.webhook_secret).verify(after.body, after.headers)


async def test_a_second_rotation_keeps_only_the_last_two(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    first = (await rotate(client, caller))["webhook_secret"]
    second = (await rotate(client, caller))["webhook_secret"]
    async with state.sessionmaker() as session:
        key = await session.get(ApiKey, caller.api_key_id)
    assert key is not None
    assert (key.webhook_secret, key.previous_webhook_secret) == (second, first)


async def test_rotation_needs_the_key(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/keys/current/rotate-webhook-secret")
    assert response.status_code == 401
