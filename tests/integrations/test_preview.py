"""POST /v1/integrations/{id}/preview renders from a sample body and makes nothing;
GET /v1/integrations/{id}/events pages through deliveries, newest first."""

from __future__ import annotations

from typing import Any

import httpx

from service.state import State
from tests.conftest import Caller
from tests.integrations.helpers import article, counts, create_generic, deliver


async def preview(
    client: httpx.AsyncClient, caller: Caller, integration: dict[str, Any], sample: dict[str, Any]
) -> httpx.Response:
    url = f"/v1/integrations/{integration['id']}/preview"
    return await client.post(url, json=sample, headers=caller.headers)


async def test_preview_renders_the_template_and_creates_nothing(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    integration = await create_generic(client, caller)
    response = await preview(
        client, caller, integration, {"body": article(), "headers": {"Webhook-Id": "msg_7"}}
    )
    assert response.status_code == 200, response.text
    shown = response.json()
    assert shown["prompt"].startswith("Editorial illustration for Moths of the city. Night")
    assert shown["negative_prompt"] == "text, watermark"
    assert shown["output_name"] == "moths-of-the-city-cover"
    assert (shown["model"], shown["width"], shown["height"], shown["format"]) == (
        "local/procedural",
        512,
        256,
        "webp",
    )
    assert (shown["event_type"], shown["would_create_job"], shown["dedupe_key"]) == (
        "article.published",
        True,
        "msg_7",
    )
    assert shown["variables"]["slug"] == "moths-of-the-city"
    assert "raw" not in shown["variables"]

    edited = await preview(client, caller, integration, {"body": {**article(), "type": "x"}})
    assert edited.json()["would_create_job"] is False
    assert await counts(state) == (0, 0)


async def test_preview_names_template_and_payload_errors(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    integration = await create_generic(
        client, caller, template={"prompt": "{{ title }} by {{ authors | join(', ') }}"}
    )
    no_authors = article()
    del no_authors["data"]["authors"]
    cases: list[tuple[dict[str, Any], str, str, str]] = [
        ({"body": no_authors}, "template_error", "template.prompt", "'authors' is undefined"),
        ({"body": {"type": "article.published"}}, "invalid_payload", "data", "missing"),
        ({"body": [1, 2]}, "invalid_payload", "body", "JSON object"),
    ]
    for sample, code, field, words in cases:
        response = await preview(client, caller, integration, sample)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert (error["code"], error["details"][0]["field"]) == (code, field), error
        assert words in error["message"], error
    missing = await preview(client, caller, integration, {})
    assert missing.status_code == 422
    assert missing.json()["error"]["details"][0]["field"] == "body"


async def test_events_page_newest_first(client: httpx.AsyncClient, caller: Caller) -> None:
    integration = await create_generic(client, caller)
    ids = []
    for n in range(5):
        answer = await deliver(client, integration, article(slug=f"post-{n}"))
        ids.append(answer.json()["event_id"])
    url = f"/v1/integrations/{integration['id']}/events"
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(url, params=params, headers=caller.headers)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    for bad in ("nope", "WzEsMl0"):  # not a cursor; a cursor of the wrong shape
        response = await client.get(url, params={"cursor": bad}, headers=caller.headers)
        assert response.status_code == 422, response.text
