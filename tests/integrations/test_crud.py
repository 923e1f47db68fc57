"""/v1/integrations: create, read, change, delete; a key sees only its own; secrets are
write-only."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
import structlog
from sqlalchemy import select
from structlog.testing import LogCapture

from service.integrations import endpoints
from service.models import Batch, Integration
from service.state import State
from tests.conftest import Caller, make_caller
from tests.integrations.helpers import TEMPLATE, article, create_generic, deliver, generic_body


async def test_create_answers_201_with_the_secret_once(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    created = await create_generic(client, caller, callback_url="https://ops.example.com/dr")
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert created["kind"] == "generic"
    assert created["inbound"] == {}
    assert created["events"] is None
    assert created["default_events"] == ["article.published", "post.published"]
    assert created["template"] == TEMPLATE
    assert created["writeback"] is None
    assert created["callback_url"] == "https://ops.example.com/dr"
    assert created["inbound_url"] == f"http://testserver/v1/hooks/{created['id']}"
    assert created["rejected_count"] == 0

    url = f"/v1/integrations/{created['id']}"
    one = await client.get(url, headers=caller.headers)
    listed = await client.get("/v1/integrations", headers=caller.headers)
    patched = await client.patch(url, json={"name": "renamed"}, headers=caller.headers)
    for response in (one, listed, patched):
        assert response.status_code == 200, response.text
        assert secret not in response.text
        assert secret.removeprefix("whsec_") not in response.text
    assert one.json()["secret"] is None
    assert [i["id"] for i in listed.json()["items"]] == [created["id"]]
    async with state.sessionmaker() as session:
        stored = await session.get(Integration, created["id"])
    assert stored is not None
    assert stored.inbound == {"secret": secret}


async def test_a_key_sees_only_its_own(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    mine = await create_generic(client, caller)
    other = await make_caller(state, "other")
    url = f"/v1/integrations/{mine['id']}"
    answers = [
        await client.get(url, headers=other.headers),
        await client.patch(url, json={"name": "x"}, headers=other.headers),
        await client.delete(url, headers=other.headers),
        await client.get(f"{url}/events", headers=other.headers),
        await client.post(f"{url}/preview", json={"body": article()}, headers=other.headers),
    ]
    assert [r.status_code for r in answers] == [404] * 5
    assert (await client.get("/v1/integrations", headers=other.headers)).json()["items"] == []
    assert (await client.get(url)).status_code == 401
    assert (await client.get(url, headers=caller.headers)).json()["name"] == "blog covers"


BAD_BODIES: dict[str, tuple[dict[str, Any], str]] = {
    "unknown kind": ({"kind": "joomla"}, "kind"),
    "template syntax": ({"template": {**TEMPLATE, "prompt": "{{ title "}}, "template.prompt"),
    "output_name syntax": (
        {"template": {**TEMPLATE, "output_name": "{% if %}"}},
        "template.output_name",
    ),
    "no prompt": ({"template": {"model": "local/procedural"}}, "template.prompt"),
    "unknown model": ({"template": {**TEMPLATE, "model": "nope/nothing"}}, "template.model"),
    "bad size": ({"template": {**TEMPLATE, "width": 100}}, "template.width"),
    "bad format": ({"template": {**TEMPLATE, "format": "gif"}}, "template.format"),
    "unknown inbound key": ({"inbound": {"token": "x"}}, "inbound.token"),
    "not a whsec secret": ({"inbound": {"secret": "hunter2"}}, "inbound.secret"),
    "short secret": ({"inbound": {"secret": "whsec_c2hvcnQ="}}, "inbound.secret"),
    "write-back without its method": ({"writeback": {"url": "https://x"}}, "writeback.method"),
    "write-back reading a server secret": (
        {
            "writeback": {
                "method": "POST",
                "url": "https://x.example/hook",
                "headers": {"x-leak": {"env": "DARKROOM_SECRET_KEY"}},
            }
        },
        "writeback.headers.x-leak.env",
    ),
    "callback url": ({"callback_url": "ftp://x.example"}, "callback_url"),
    "events not strings": ({"events": [1]}, "events[0]"),
    "unknown key": ({"colour": "red"}, "colour"),
}


@pytest.mark.parametrize(("change", "field"), BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_bad_create_bodies_name_the_field(
    client: httpx.AsyncClient, caller: Caller, state: State, change: dict[str, Any], field: str
) -> None:
    response = await client.post(
        "/v1/integrations", json=generic_body(**change), headers=caller.headers
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["details"][0]["field"] == field, error
    assert error["message"].startswith(f"{field}: ")
    async with state.sessionmaker() as session:
        assert (await session.execute(select(Integration))).first() is None


async def test_a_given_whsec_secret_is_kept_and_not_shown(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    created = await create_generic(client, caller, inbound={"secret": secret})
    assert created["secret"] is None
    assert secret not in json.dumps(created)
    response = await deliver(client, {**created, "secret": secret}, article())
    assert response.status_code == 202, response.text


async def test_patch_changes_fields_and_a_new_secret_replaces_the_old(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    created = await create_generic(client, caller, callback_url="https://ops.example.com/dr")
    url = f"/v1/integrations/{created['id']}"
    changes = {
        "name": "covers v2",
        "events": ["page.published"],
        "template": {"prompt": "A photo about {{ title }}"},
        "callback_url": None,
        "locale": "en-US",
    }
    patched = await client.patch(url, json=changes, headers=caller.headers)
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert (body["name"], body["events"], body["callback_url"], body["locale"]) == (
        "covers v2",
        ["page.published"],
        None,
        "en-US",
    )
    assert body["template"]["prompt"] == "A photo about {{ title }}"
    assert body["template"]["width"] is None
    assert body["secret"] is None

    rotated = await client.patch(url, json={"inbound": {}}, headers=caller.headers)
    new_secret = rotated.json()["secret"]
    assert new_secret.startswith("whsec_")
    assert new_secret != created["secret"]
    page = {**article(), "type": "page.published"}
    assert (await deliver(client, created, page)).status_code == 401
    assert (await deliver(client, {**created, "secret": new_secret}, page)).status_code == 202

    for bad, field in [
        ({"name": None}, "name"),
        ({"template": {"prompt": "{{"}}, "template.prompt"),
    ]:
        refused = await client.patch(url, json=bad, headers=caller.headers)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["details"][0]["field"] == field


async def test_delete_removes_it_and_keeps_its_batches(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    created = await create_generic(client, caller)
    accepted = await deliver(client, created, article())
    assert accepted.status_code == 202, accepted.text
    url = f"/v1/integrations/{created['id']}"
    assert (await client.delete(url, headers=caller.headers)).status_code == 204
    assert (await client.get(url, headers=caller.headers)).status_code == 404
    assert (await deliver(client, created, article())).status_code == 404
    async with state.sessionmaker() as session:
        batch = (await session.execute(select(Batch))).scalar_one()
    assert batch.integration_id is None
    assert batch.metadata_["integration_id"] == created["id"]


async def test_list_pages_newest_first(client: httpx.AsyncClient, caller: Caller) -> None:
    ids = [(await create_generic(client, caller, name=f"i{n}"))["id"] for n in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/integrations", params=params, headers=caller.headers)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    bad = await client.get("/v1/integrations", params={"cursor": "nope"}, headers=caller.headers)
    assert bad.status_code == 422


async def test_secrets_never_reach_the_log(
    client: httpx.AsyncClient,
    caller: Caller,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """structlog caches its loggers, so the hook's own logger is swapped for a capturing
    one; the standard library's records (httpx, uvicorn) come through caplog."""
    capture = LogCapture()
    monkeypatch.setattr(endpoints, "log", structlog.wrap_logger(None, processors=[capture]))
    caplog.set_level(logging.DEBUG)
    created = await create_generic(client, caller)
    secret = created["secret"]
    assert (await deliver(client, created, article())).status_code == 202
    forged = await deliver(client, {**created, "secret": "whsec_" + "A" * 44}, article())
    assert forged.status_code == 401
    logged = caplog.text + repr(capture.entries)
    assert "hook_rejected" in logged  # the log was captured, and the rejection is in it
    assert secret not in logged
    assert secret.removeprefix("whsec_") not in logged
