"""/v1/webhooks: events with their attempts, redelivery, endpoints; a key sees its own."""

from __future__ import annotations

import httpx
from standardwebhooks import Webhook

from service.kit.base import utcnow
from service.state import State
from service.worker import run_until_idle
from tests.conftest import Caller, make_caller, submit
from tests.webhooks.helpers import endpoint_of, new_event, set_endpoint
from tests.webhooks.receiver import running_receiver

ONE_JOB = {"jobs": [{"prompt": "a", "width": 64, "height": 64}]}


async def test_events_list_show_and_redeliver(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    async with running_receiver() as receiver:
        receiver.fail_next = 1
        await submit(client, caller, {"callback_url": receiver.url, **ONE_JOB})
        await run_until_idle(state)
        listed = await client.get("/v1/webhooks/events?status=delivered", headers=caller.headers)
        assert listed.status_code == 200
        items = listed.json()["items"]
        assert {e["type"] for e in items} == {"job.succeeded", "batch.completed"}
        assert all(e["sink"] == "webhook" and e["next_attempt_at"] is None for e in items)
        failed = await client.get("/v1/webhooks/events?status=failed", headers=caller.headers)
        assert failed.json()["items"] == []

        first = await client.get("/v1/webhooks/events?limit=1", headers=caller.headers)
        cursor = first.json()["next_cursor"]
        second = await client.get(
            f"/v1/webhooks/events?limit=1&cursor={cursor}", headers=caller.headers
        )
        assert second.json()["next_cursor"] is None
        pages = [first.json()["items"][0]["id"], second.json()["items"][0]["id"]]
        assert sorted(pages) == sorted(e["id"] for e in items)

        retried = next(e for e in items if e["attempts"] == 2)
        shown = await client.get(f"/v1/webhooks/events/{retried['id']}", headers=caller.headers)
        detail = shown.json()
        assert [a["status_code"] for a in detail["attempt_log"]] == [503, 200]
        assert detail["attempt_log"][0]["error"] == "receiver answered HTTP 503"
        assert detail["attempt_log"][1]["response_body"] == "ok"
        assert all(a["duration_ms"] >= 0 for a in detail["attempt_log"])
        assert detail["payload"]["type"] == retried["type"]

        again = await client.post(
            f"/v1/webhooks/events/{retried['id']}/redeliver", headers=caller.headers
        )
        assert again.status_code == 202
        assert again.json()["status"] == "pending"
        twice = await client.post(
            f"/v1/webhooks/events/{retried['id']}/redeliver", headers=caller.headers
        )
        assert twice.status_code == 409
        assert twice.json()["error"]["code"] == "conflict"
        await run_until_idle(state)
    resent = [r for r in receiver.received if r.headers["webhook-id"] == retried["id"]]
    assert len(resent) == 3  # the 503, the success, and the redelivery: one webhook-id
    Webhook(caller.webhook_secret).verify(resent[-1].body, resent[-1].headers)
    final = await client.get(f"/v1/webhooks/events/{retried['id']}", headers=caller.headers)
    assert final.json()["status"] == "delivered"
    assert final.json()["attempts"] == 3


async def test_redelivery_to_a_disabled_endpoint_is_refused_until_enabled(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    async with running_receiver() as receiver:
        event_id = await new_event(state, caller.api_key_id, receiver.url, enqueue=True)
        await run_until_idle(state)
        endpoint = await endpoint_of(state, event_id)
        await set_endpoint(state, endpoint.id, disabled_at=utcnow(), disabled_reason="410 Gone")
        refused = await client.post(
            f"/v1/webhooks/events/{event_id}/redeliver", headers=caller.headers
        )
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "endpoint_disabled"
        assert str(endpoint.id) in refused.json()["error"]["message"]

        listed = (await client.get("/v1/webhooks/endpoints", headers=caller.headers)).json()
        [shown] = listed["items"]
        assert shown["id"] == str(endpoint.id)
        assert shown["status"] == "disabled"
        assert shown["disabled_reason"] == "410 Gone"
        assert shown["url"] == receiver.url
        enabled = await client.post(
            f"/v1/webhooks/endpoints/{endpoint.id}/enable", headers=caller.headers
        )
        assert enabled.status_code == 200
        assert enabled.json()["status"] == "enabled"
        assert enabled.json()["failing_since"] is None
        resent = await client.post(
            f"/v1/webhooks/events/{event_id}/redeliver", headers=caller.headers
        )
        assert resent.status_code == 202
        await run_until_idle(state)
    assert len(receiver.received) == 2


async def test_another_key_sees_nothing(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    event_id = await new_event(state, caller.api_key_id, "http://127.0.0.1:9/x")
    endpoint = await endpoint_of(state, event_id)
    stranger = await make_caller(state, "stranger")
    headers = stranger.headers
    for method, path in [
        ("GET", f"/v1/webhooks/events/{event_id}"),
        ("POST", f"/v1/webhooks/events/{event_id}/redeliver"),
        ("POST", f"/v1/webhooks/endpoints/{endpoint.id}/enable"),
    ]:
        response = await client.request(method, path, headers=headers)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
    assert (await client.get("/v1/webhooks/events", headers=headers)).json()["items"] == []
    assert (await client.get("/v1/webhooks/endpoints", headers=headers)).json()["items"] == []
    assert (await client.get("/v1/webhooks/events")).status_code == 401


async def test_bad_input_gets_a_4xx(client: httpx.AsyncClient, caller: Caller) -> None:
    for path in [
        "/v1/webhooks/events?status=lost",
        "/v1/webhooks/events?cursor=nonsense",
        "/v1/webhooks/events?limit=0",
        "/v1/webhooks/endpoints?cursor=WyJ4IiwieSJd",
    ]:
        response = await client.get(path, headers=caller.headers)
        assert response.status_code == 422, path
    missing = await client.post("/v1/webhooks/endpoints/not-a-uuid/enable", headers=caller.headers)
    assert missing.status_code == 422
    unknown = await client.get("/v1/webhooks/events/" + "m" * 40, headers=caller.headers)
    assert unknown.status_code == 404
    too_long = await client.get("/v1/webhooks/events/" + "m" * 41, headers=caller.headers)
    assert too_long.status_code == 422
