"""Forged, stale, replayed and malformed webhooks, per kind, through POST /v1/hooks/{id}:
401 for whatever fails the signature check (only the integration's counter moves), 422
naming the field for a signed body that cannot be read (nothing stored), never a 5xx.

The good deliveries these are made from come from each simulator's own `signed_webhook`;
bodies no CMS would send are signed by `Case.sign_raw`."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from service.models import Batch, InboundEvent, Job, Verdict
from service.state import State
from tests.conftest import Caller
from tests.integrations.cms_case import STALE_MS, TITLE, Case, Delivery, now_ms
from tests.integrations.cms_cases import CASES, FORGED_SECRETS

KINDS = list(CASES)


async def create(client: httpx.AsyncClient, caller: Caller, case: Case) -> dict[str, Any]:
    body = case.integration_body(None, None)
    response = await client.post("/v1/integrations", json=body, headers=caller.headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def send(
    client: httpx.AsyncClient, integration: dict[str, Any], delivery: Delivery
) -> httpx.Response:
    url = f"/v1/hooks/{integration['id']}"
    return await client.post(url, content=delivery.body, headers=delivery.headers)


async def rows(state: State) -> tuple[int, int, int]:
    """(inbound events, batches, jobs) stored."""
    async with state.sessionmaker() as session:
        found = [
            await session.scalar(select(func.count()).select_from(model))
            for model in (InboundEvent, Batch, Job)
        ]
    return (int(found[0] or 0), int(found[1] or 0), int(found[2] or 0))


async def rejected_count(
    client: httpx.AsyncClient, caller: Caller, integration: dict[str, Any]
) -> int:
    got = await client.get(f"/v1/integrations/{integration['id']}", headers=caller.headers)
    assert got.status_code == 200, got.text
    return int(got.json()["rejected_count"])


def unauthentic(case: Case, integration: dict[str, Any]) -> dict[str, Delivery]:
    """Deliveries whose signature (or static token) must not pass, by what is wrong."""
    article = case.offline_article()
    good = case.webhook(article, integration)
    unsigned = {
        name: value
        for name, value in good.headers.items()
        if name.lower() not in case.signature_headers
    }
    cases = {
        "forged": case.webhook(article, integration, secret=FORGED_SECRETS[case.kind]),
        "signature header missing": Delivery(unsigned, good.body),
        "no headers at all": Delivery({"content-type": "application/json"}, good.body),
    }
    if case.has_timestamp:
        stale = now_ms() - STALE_MS
        cases["stale"] = case.webhook(article, integration, timestamp_ms=stale)
    if case.signs_body:
        tampered = good.body.replace(TITLE.encode(), b"Mice of the town")
        assert tampered != good.body
        cases["replayed with a tampered body"] = Delivery(good.headers, tampered)
        # The signature is checked on the raw body before it is parsed.
        cases["not JSON, signed for another body"] = Delivery(good.headers, b"{not json")
    return cases


@pytest.mark.parametrize("kind", KINDS)
async def test_unauthentic_deliveries_get_401_and_only_a_count(
    kind: str, client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    case = CASES[kind]
    integration = await create(client, caller, case)
    deliveries = unauthentic(case, integration)
    for name, delivery in deliveries.items():
        response = await send(client, integration, delivery)
        assert response.status_code == 401, (name, response.text)
        error = response.json()["error"]
        assert error["code"] == "unauthorized", (name, error)
        assert error["message"].startswith("signature check failed: "), (name, error)
    assert await rows(state) == (0, 0, 0)
    assert await rejected_count(client, caller, integration) == len(deliveries)

    # The genuine delivery still goes through: the refusals changed nothing.
    good = case.webhook(case.offline_article(), integration)
    accepted = await send(client, integration, good)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["status"] == "accepted"
    assert await rows(state) == (1, 1, 1)


@pytest.mark.parametrize("kind", KINDS)
async def test_signed_bodies_that_cannot_be_read_get_422_naming_the_field(
    kind: str, client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    case = CASES[kind]
    integration = await create(client, caller, case)
    missing, field = case.without_a_field(case.offline_article(), integration)
    deliveries: list[tuple[str, Delivery, str, str]] = [
        ("not JSON", case.sign_raw(b"{not json", integration), "invalid_json", "body"),
        ("not UTF-8", case.sign_raw(b"\xff\xfe{}", integration), "invalid_json", "body"),
        ("truncated", case.sign_raw(b'{"a": [1, 2', integration), "invalid_json", "body"),
        (f"without {field}", missing, "invalid_payload", field),
    ]
    for name, delivery, code, named in deliveries:
        response = await send(client, integration, delivery)
        assert response.status_code == 422, (name, response.text)
        error = response.json()["error"]
        assert (error["code"], error["details"][0]["field"]) == (code, named), (name, error)
        assert named in error["message"], (name, error)
    assert await rows(state) == (0, 0, 0)
    assert await rejected_count(client, caller, integration) == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_an_article_without_the_title_the_template_needs_gets_422(
    kind: str, client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    """Contentful's kind needs the title to read an entry at all (nothing is stored); the
    other kinds read the article, and the template fails on it: the event is kept as
    failed with the reason (the CMS's retry after a template fix makes the job), and no
    batch or job is made."""
    case = CASES[kind]
    integration = await create(client, caller, case)
    delivery = case.webhook(case.untitled(case.offline_article()), integration)
    response = await send(client, integration, delivery)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    if kind == "contentful":
        assert (error["code"], error["details"][0]["field"]) == (
            "invalid_payload",
            "fields.title.en-US",
        )
        assert await rows(state) == (0, 0, 0)
        return
    assert (error["code"], error["details"][0]["field"]) == ("template_error", "template.prompt")
    assert "'title' is undefined" in error["message"]
    assert await rows(state) == (1, 0, 0)
    async with state.sessionmaker() as session:
        (event,) = (await session.execute(select(InboundEvent))).scalars()
    assert event.verdict is Verdict.failed
    assert "'title' is undefined" in (event.reason or "")
    assert (event.batch_id, event.job_id) == (None, None)
    assert await rejected_count(client, caller, integration) == 0
