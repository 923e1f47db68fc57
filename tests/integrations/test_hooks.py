"""POST /v1/hooks/{id} with the generic kind (Standard Webhooks): accepted, duplicate,
ignored, forged, stale, malformed, template errors, big bodies, concurrent retries."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from service.dispatch.queue import AccountKeys
from service.models import Batch, InboundEvent, Integration, Job
from service.state import State
from tests.conftest import Caller
from tests.integrations.helpers import article, counts, create_generic, deliver, signed

CALLBACK = "https://ops.example.com/darkroom"


async def events_of(client: httpx.AsyncClient, caller: Caller, integration: dict[str, Any]) -> Any:
    url = f"/v1/integrations/{integration['id']}/events"
    response = await client.get(url, headers=caller.headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def test_a_signed_publish_makes_a_realtime_job_in_a_visible_batch(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    integration = await create_generic(client, caller, callback_url=CALLBACK)
    response = await deliver(client, integration, article(), msg_id="msg_first")
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["status"] == "accepted"
    assert answer["event_id"].startswith("evt_")

    batches = (await client.get("/v1/batches", headers=caller.headers)).json()["items"]
    assert len(batches) == 1
    batch = batches[0]
    assert batch["priority"] == "realtime"
    assert batch["callback_url"] == CALLBACK
    assert batch["metadata"] == {
        "integration_id": integration["id"],
        "event_id": answer["event_id"],
    }
    jobs = (await client.get(f"/v1/batches/{batch['id']}/jobs", headers=caller.headers)).json()
    (job,) = jobs["items"]
    assert job["id"] == answer["job_id"]
    prompt = job["prompt"]
    assert prompt.startswith("Editorial illustration for Moths of the city. Night walks with")
    assert prompt.endswith("...")
    assert "counting" not in prompt
    assert job["model"] == "local/procedural"
    params = job["params"]
    assert (params["width"], params["height"], params["format"]) == (512, 256, "webp")
    assert params["output_name"] == "moths-of-the-city-cover.webp"
    assert params["negative_prompt"] == "text, watermark"
    assert job["metadata"] == {}
    async with state.sessionmaker() as session:
        stored = await session.get(Batch, uuid.UUID(batch["id"]))
    assert stored is not None
    assert str(stored.integration_id) == integration["id"]
    waiting: Any = state.redis.scard(AccountKeys("local").waiting)
    assert await waiting == 1  # enqueued after commit

    (event,) = await events_of(client, caller, integration)
    assert (event["id"], event["verdict"], event["job_id"]) == (
        answer["event_id"],
        "accepted",
        answer["job_id"],
    )
    assert (event["event_type"], event["dedupe_key"], event["batch_id"]) == (
        "article.published",
        "msg_first",
        batch["id"],
    )
    assert event["body"] == article()
    assert event["headers"]["webhook-id"] == "msg_first"
    assert "webhook-signature" not in event["headers"]
    assert event["writeback_status"] is None


async def test_a_redelivery_is_a_duplicate_and_makes_nothing(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    integration = await create_generic(client, caller)
    first = (await deliver(client, integration, article(), msg_id="msg_1")).json()
    # The sender retries later: same webhook-id, a new timestamp and signature.
    again = await deliver(
        client, integration, article(), msg_id="msg_1", timestamp=int(time.time()) + 5
    )
    assert again.status_code == 202, again.text
    assert again.json() == {**first, "status": "duplicate"}
    assert await counts(state) == (1, 1)


async def test_other_events_are_ignored_unless_listed(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    integration = await create_generic(client, caller)
    edited = {**article(), "type": "article.updated"}
    response = await deliver(client, integration, edited, msg_id="msg_edit")
    assert response.status_code == 202, response.text
    ignored = response.json()
    assert (ignored["status"], ignored["job_id"]) == ("ignored", None)
    again = await deliver(client, integration, edited, msg_id="msg_edit")
    assert again.json() == {**ignored, "status": "duplicate"}
    (event,) = await events_of(client, caller, integration)
    assert event["verdict"] == "ignored"
    assert "article.updated" in event["reason"]
    assert await counts(state) == (1, 0)

    # Once the integration acts on it, the sender's next retry of that event makes the job.
    url = f"/v1/integrations/{integration['id']}"
    patched = await client.patch(url, json={"events": ["article.updated"]}, headers=caller.headers)
    assert patched.status_code == 200
    retried = await deliver(client, integration, edited, msg_id="msg_edit")
    assert retried.json()["status"] == "accepted"
    assert retried.json()["event_id"] == ignored["event_id"]
    published = await deliver(client, integration, article())
    assert published.json()["status"] == "ignored"  # no longer in its events
    assert await counts(state) == (2, 1)


async def unauthentic(
    client: httpx.AsyncClient, integration: dict[str, Any], state: State
) -> list[httpx.Response]:
    secret = integration["secret"]
    body = json.dumps(article()).encode()
    url = f"/v1/hooks/{integration['id']}"
    now = int(time.time())
    raw, good = signed(secret, body)
    cases: list[tuple[bytes, dict[str, str]]] = [
        signed("whsec_" + "QUJD" * 11, body),  # another secret
        signed(secret, body, timestamp=now - 301),  # stale: a replay past the window
        signed(secret, body, timestamp=now + 400),  # from the future
        (body.replace(b"Moths", b"Mice!"), good),  # changed after signing
        (raw, {k: v for k, v in good.items() if k != "webhook-signature"}),
        (raw, {**good, "webhook-signature": "v1,not-base64!"}),
        (raw, {**good, "webhook-signature": "v2," + good["webhook-signature"][3:]}),
        (raw, {**good, "webhook-timestamp": "yesterday"}),
        (raw, {**good, "webhook-id": "msg_other"}),  # the id is signed too
        (raw, {"content-type": "application/json"}),
    ]
    return [await client.post(url, content=c, headers=h) for c, h in cases]


async def test_forged_stale_and_malformed_signatures_get_401_and_only_a_count(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    integration = await create_generic(client, caller)
    answers = await unauthentic(client, integration, state)
    assert [r.status_code for r in answers] == [401] * len(answers), [r.text for r in answers]
    for response in answers:
        assert response.json()["error"]["code"] == "unauthorized"
    assert await counts(state) == (0, 0)
    got = await client.get(f"/v1/integrations/{integration['id']}", headers=caller.headers)
    assert got.json()["rejected_count"] == len(answers)


async def test_unreadable_bodies_get_422_naming_the_field_and_nothing_is_kept(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    integration = await create_generic(client, caller)
    cases: list[tuple[bytes | dict[str, Any], str, str]] = [
        (b"not json at all", "body", "invalid_json"),
        (b'{"type": "article.published", "data": {', "body", "invalid_json"),
        (b"\xff\xfe{}", "body", "invalid_json"),
        (b"[1, 2]", "body", "invalid_payload"),
        ({"data": {"title": "x"}}, "type", "invalid_payload"),
        ({"type": "article.published"}, "data", "invalid_payload"),
        ({"type": "article.published", "data": "a string"}, "data", "invalid_payload"),
    ]
    for body, field, code in cases:
        response = await deliver(client, integration, body)
        assert response.status_code == 422, (body, response.text)
        error = response.json()["error"]
        assert (error["code"], error["details"][0]["field"]) == (code, field), (body, error)
    assert await counts(state) == (0, 0)


async def test_unknown_integrations_are_404(client: httpx.AsyncClient) -> None:
    raw, headers = signed("whsec_" + "QUJD" * 11, article())
    response = await client.post(f"/v1/hooks/{uuid.uuid4()}", content=raw, headers=headers)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_a_template_error_fails_the_event_with_its_reason_never_a_500(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    integration = await create_generic(client, caller)
    no_title = article()
    del no_title["data"]["title"]
    response = await deliver(client, integration, no_title, msg_id="msg_untitled")
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "template_error"
    assert error["details"][0]["field"] == "template.prompt"
    assert "'title' is undefined" in error["message"]
    (event,) = await events_of(client, caller, integration)
    assert event["verdict"] == "failed"
    assert "'title' is undefined" in event["reason"]
    assert event["job_id"] is None
    assert await counts(state) == (1, 0)

    # Fixed template: the sender's retry of the same event now makes its job, on the same row.
    url = f"/v1/integrations/{integration['id']}"
    fix = {"template": {"prompt": "A cover for {{ title | default(slug) }}"}}
    assert (await client.patch(url, json=fix, headers=caller.headers)).status_code == 200
    retried = await deliver(client, integration, no_title, msg_id="msg_untitled")
    assert retried.status_code == 202, retried.text
    assert retried.json()["event_id"] == event["id"]
    (event,) = await events_of(client, caller, integration)
    assert (event["verdict"], event["reason"], event["job_id"]) == (
        "accepted",
        None,
        retried.json()["job_id"],
    )


async def test_sandbox_violations_and_unstorable_output_fail_the_event(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    templates = [
        ("{{ raw.__class__.__mro__ }}", "template.prompt"),
        ("{{ title.__class__ }}", "template.prompt"),
        ("{{ '\\x00' }} {{ title }}", "template.prompt"),
        ("{{ '   ' }}", "template.prompt"),
        ("{% for i in range(10**9) %}{{ i }}{% endfor %}", "template.prompt"),
        (  # past the time bound
            "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
            "template.prompt",
        ),
    ]
    for source, field in templates:
        integration = await create_generic(
            client, caller, template={"prompt": source, "model": "local/procedural"}
        )
        response = await deliver(client, integration, article())
        assert response.status_code == 422, (source, response.text)
        error = response.json()["error"]
        assert (error["code"], error["details"][0]["field"]) == ("template_error", field)
    async with state.sessionmaker() as session:
        verdicts = (await session.execute(select(InboundEvent.verdict))).scalars().all()
    assert [v.value for v in verdicts] == ["failed"] * len(templates)
    assert (await counts(state))[1] == 0


async def test_a_body_over_256_kb_is_stored_as_a_marker(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    integration = await create_generic(client, caller)
    big = article(content="x" * 300_000)
    response = await deliver(client, integration, big)
    assert response.status_code == 202, response.text
    (event,) = await events_of(client, caller, integration)
    body = event["body"]
    assert body["truncated"] is True
    assert body["size_bytes"] == len(json.dumps(big).encode())
    assert len(body["sha256"]) == 64
    assert body["head"].startswith('{"type": "article.published"')


async def test_the_raw_body_is_verified_byte_for_byte(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    integration = await create_generic(client, caller)
    raw = (
        b'{ "data" : {"title":"Caf\\u00e9 \\ud83d\\ude00", "slug":"cafe", "excerpt": "e"} ,\n'
        b'  "type":"post.published"  }'
    )
    response = await deliver(client, integration, raw)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "accepted"


async def test_concurrent_redeliveries_make_one_job(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    integration = await create_generic(client, caller)
    raw, headers = signed(integration["secret"], article(), msg_id="msg_storm")
    url = f"/v1/hooks/{integration['id']}"
    answers = await asyncio.gather(
        *(client.post(url, content=raw, headers=headers) for _ in range(8))
    )
    assert [r.status_code for r in answers] == [202] * 8, [r.text for r in answers]
    bodies = [r.json() for r in answers]
    assert sorted(b["status"] for b in bodies) == ["accepted"] + ["duplicate"] * 7
    assert len({(b["event_id"], b["job_id"]) for b in bodies}) == 1
    assert await counts(state) == (1, 1)
    async with state.sessionmaker() as session:
        assert len((await session.execute(select(Job.id))).all()) == 1


async def test_a_revoked_key_takes_no_more_deliveries(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    integration = await create_generic(client, caller)
    async with state.sessionmaker() as session:
        stored = await session.get(Integration, uuid.UUID(integration["id"]))
        assert stored is not None
        await session.execute(
            text("UPDATE api_keys SET revoked_at = now() WHERE id = :id"),
            {"id": stored.api_key_id},
        )
        await session.commit()
    assert (await deliver(client, integration, article())).status_code == 404


async def test_a_model_gone_from_the_configuration_fails_the_event(
    client: httpx.AsyncClient, caller: Caller, state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    integration = await create_generic(client, caller)
    monkeypatch.setattr(state.registry, "models", {})  # the configuration changed since
    response = await deliver(client, integration, article())
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["details"][0]["field"]) == ("template_error", "template.model")
    assert "unknown model 'local/procedural'" in error["message"]
    (event,) = await events_of(client, caller, integration)
    assert event["verdict"] == "failed"
    assert "unknown model" in event["reason"]
    assert await counts(state) == (1, 0)


async def test_concurrent_deliveries_each_get_their_own_answer(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    """Many senders at once, good and bad: a bad delivery costs only its own sender."""
    integration = await create_generic(client, caller)
    url = f"/v1/hooks/{integration['id']}"
    secret = integration["secret"]
    good = [signed(secret, article(slug=f"p{n}"), msg_id=f"msg_{n}") for n in range(6)]
    forged = signed("whsec_" + "QUJD" * 11, article())
    not_json = signed(secret, b"{nope")
    untitled = article()
    del untitled["data"]["title"]
    failing = signed(secret, untitled, msg_id="msg_untitled")
    ignored = signed(secret, {**article(), "type": "article.deleted"}, msg_id="msg_deleted")
    sends = [*good, forged, not_json, failing, ignored, good[0]]
    answers = await asyncio.gather(
        *(client.post(url, content=body, headers=headers) for body, headers in sends)
    )
    statuses = [r.status_code for r in answers]
    assert statuses == [202] * 6 + [401, 422, 422, 202, 202], [r.text for r in answers]
    assert [answers[n].json()["status"] for n in range(1, 6)] == ["accepted"] * 5
    # good[0] went twice at once: whichever committed first made the job, the other is
    # its duplicate, with the same ids.
    twins = sorted(answers[n].json()["status"] for n in (0, -1))
    assert twins == ["accepted", "duplicate"]
    assert answers[0].json()["job_id"] == answers[-1].json()["job_id"]
    assert answers[9].json()["status"] == "ignored"
    assert answers[8].json()["error"]["code"] == "template_error"
    assert answers[7].json()["error"]["code"] == "invalid_json"
    assert await counts(state) == (8, 6)  # 6 accepted, 1 failed, 1 ignored; 6 batches
    got = await client.get(f"/v1/integrations/{integration['id']}", headers=caller.headers)
    assert got.json()["rejected_count"] == 1
