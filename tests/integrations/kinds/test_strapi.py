"""Strapi: webhooks from the simulator verified and read, and the write-back run against
the simulator over real HTTP."""

from __future__ import annotations

import email.utils
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from service.integrations.kinds import KINDS
from service.integrations.kinds.base import (
    Article,
    KindOptions,
    PayloadError,
    SignatureError,
    WritebackError,
)
from service.integrations.writeback import WRITEBACKS
from service.integrations.writeback.http import upload_name
from service.integrations.writeback.strapi import StrapiWriteback
from simulators.cms.base import run_cms
from simulators.cms.strapi import DEFAULT_CONFIG, build_app, signed_webhook
from simulators.images import image_bytes
from tests.integrations.kinds.support import image_source, inbound, now_ms, receiver_app

KIND = KINDS["strapi"]
WRITEBACK = WRITEBACKS["strapi"]
INBOUND = {"header": "Authorization", "value": DEFAULT_CONFIG["webhook_value"]}
ENV = {"STRAPI_TOKEN": DEFAULT_CONFIG["token"]}
ENTRY: dict[str, Any] = {
    "id": 7,
    "documentId": "a1b2c3d4e5f6a1b2c3d4e5f6",
    "title": "Rivers of the North",
    "slug": "rivers-of-the-north",
    "description": "A walk along three rivers.",
    "locale": "en",
    "tags": [{"id": 1, "name": "travel"}, {"id": 2, "name": "nature"}],
    "author": {"id": 3, "name": "Ada Lovelace"},
    "createdAt": "2026-01-02T10:00:00.000Z",
    "updatedAt": "2026-01-02T11:00:00.000Z",
    "publishedAt": "2026-01-02T11:00:00.000Z",
}


def read(headers: dict[str, str], body: bytes) -> Article:
    request = inbound(headers, body)
    KIND.verify(request, KIND.check_inbound(INBOUND), now_ms())
    return KIND.read(request, json.loads(body), KindOptions())


def test_a_simulated_publish_verifies_and_reads_as_an_article() -> None:
    article = read(*signed_webhook("entry.publish", dict(ENTRY)))
    assert article.event_type == "entry.publish"
    assert article.event_type in KIND.default_events
    assert article.dedupe_key == (
        "entry.publish:api::article.article:a1b2c3d4e5f6a1b2c3d4e5f6:en:2026-01-02T11:00:00.000Z"
    )
    assert article.ref["id"] == 7
    assert article.ref["documentId"] == ENTRY["documentId"]
    assert article.ref["uid"] == "api::article.article"
    variables = dict(article.variables)
    assert variables.pop("raw")["entry"]["title"] == "Rivers of the North"
    assert variables == {
        "title": "Rivers of the North",
        "excerpt": "A walk along three rivers.",
        "slug": "rivers-of-the-north",
        "tags": ["travel", "nature"],
        "authors": ["Ada Lovelace"],
        "id": ENTRY["documentId"],
        "language": "en",
        "status": "published",
    }


def test_a_draft_update_is_not_a_publish() -> None:
    draft = dict(ENTRY, publishedAt=None, updatedAt="2026-01-03T09:00:00.000Z")
    article = read(*signed_webhook("entry.update", draft))
    assert article.event_type == "entry.update"
    assert article.event_type not in KIND.default_events
    assert article.variables["status"] == "draft"


def test_a_v4_entry_without_document_id_keys_on_its_id() -> None:
    entry = {k: v for k, v in ENTRY.items() if k not in {"documentId", "locale"}}
    article = read(*signed_webhook("entry.publish", entry))
    assert article.dedupe_key == "entry.publish:api::article.article:7::2026-01-02T11:00:00.000Z"
    assert "language" not in article.variables


@pytest.mark.parametrize(
    ("header", "value"),
    [("Authorization", "Bearer someone-else-entirely"), ("X-Other", INBOUND["value"])],
)
def test_a_wrong_or_missing_header_is_refused(header: str, value: str) -> None:
    headers, body = signed_webhook("entry.publish", dict(ENTRY), header=header, value=value)
    with pytest.raises(SignatureError, match="Authorization"):
        KIND.verify(inbound(headers, body), KIND.check_inbound(INBOUND), now_ms())


@pytest.mark.parametrize(
    ("block", "field"),
    [
        ({"value": "Bearer a-long-enough-token"}, "inbound.header"),
        ({"header": "Bad Header", "value": "Bearer a-long-enough-token"}, "inbound.header"),
        ({"header": "Content-Type", "value": "application/json-xxxxx"}, "inbound.header"),
        ({"header": "Authorization"}, "inbound.value"),
        ({"header": "Authorization", "value": "short"}, "inbound.value"),
        ({"header": "Authorization", "value": "Bearer x\r\nX-Injected: 1"}, "inbound.value"),
        ({"header": "Authorization", "value": "Bearer long-token", "secret": "x"}, "secret"),
    ],
)
def test_check_inbound_names_the_bad_field(block: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        KIND.check_inbound(block)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"event": "entry.publish", "model": "article"}, "entry"),
        ({"model": "article", "entry": ENTRY}, "event"),
        ({"event": "entry.publish", "model": "article", "entry": {"id": 1}}, "entry.updatedAt"),
        ({"event": "entry.publish", "entry": ENTRY}, "model"),
        ([1, 2], ""),
    ],
)
def test_a_body_missing_a_field_names_it(body: Any, field: str) -> None:
    raw = json.dumps(body).encode()
    with pytest.raises(PayloadError) as caught:
        KIND.read(inbound({}, raw), body, KindOptions())
    assert caught.value.field == field


@pytest.fixture
async def strapi() -> AsyncIterator[str]:
    async with run_cms(lambda: build_app({"entries": [dict(ENTRY)]})) as url:
        yield url


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def test_the_simulator_publishes_to_a_receiver_and_forgeries_get_401(
    strapi: str, http: httpx.AsyncClient
) -> None:
    async with run_cms(lambda: receiver_app(KIND, KIND.check_inbound(INBOUND))) as hook:
        published = (
            await http.post(f"{strapi}/_sim/publish", json={"url": f"{hook}/hook", "id": 7})
        ).json()
        forged = (
            await http.post(
                f"{strapi}/_sim/publish",
                json={"url": f"{hook}/hook", "id": 7, "value": "Bearer forged-forged-forged"},
            )
        ).json()
        sent = published["sent"]
        replayed = await http.post(f"{hook}/hook", content=sent["body"], headers=sent["headers"])
    assert published["status"] == 202
    assert json.loads(published["body"])["event_type"] == "entry.publish"
    assert forged["status"] == 401
    # Strapi has no timestamp: a replay verifies, and the dedupe key makes it a duplicate.
    assert replayed.status_code == 202
    assert replayed.json()["dedupe_key"] == json.loads(published["body"])["dedupe_key"]


def config(url: str, **changes: Any) -> StrapiWriteback:
    return StrapiWriteback.model_validate(
        {
            "base_url": url,
            "token_env": "STRAPI_TOKEN",
            "ref": "api::article.article",
            "field": "cover",
        }
        | changes
    )


def article(**ref: Any) -> Article:
    return read(*signed_webhook("entry.publish", dict(ENTRY, **ref)))


async def state(http: httpx.AsyncClient, url: str) -> Any:
    return (await http.get(f"{url}/_sim/state")).json()


async def test_write_back_uploads_and_links_the_image_once(
    strapi: str, http: httpx.AsyncClient
) -> None:
    data = image_bytes(64, 32, "png")
    image = image_source(data)
    first = await WRITEBACK.write_back(http, config(strapi), article(), image, ENV)
    second = await WRITEBACK.write_back(http, config(strapi), article(), image, ENV)

    content = await state(http, strapi)
    assert len(content["files"]) == 1
    file = content["files"][0]
    assert file["name"] == upload_name(image) == f"my-post-cover-{image.sha256[:12]}.png"
    assert file["sizeInBytes"] == len(data)
    assert file["related"] == [{"uid": "api::article.article", "id": 7, "field": "cover"}]
    assert file["alternativeText"] == "Rivers of the North"
    cover = content["entries"]["api::article.article"]["7"]["cover"]
    assert cover["id"] == file["id"]
    assert first["reused"] is False
    assert first["file_id"] == file["id"]
    assert first["image_url"] == f"{strapi}{file['url']}"
    assert second["reused"] is True
    assert second["file_id"] == file["id"]
    requests = (await http.get(f"{strapi}/_sim/requests")).json()
    uploads = [r for r in requests if r["method"] == "POST"]
    assert len(uploads) == 1
    assert uploads[0]["headers"]["authorization"] == f"Bearer {ENV['STRAPI_TOKEN']}"
    assert uploads[0]["headers"]["content-type"].startswith("multipart/form-data; boundary=")


async def test_a_new_image_for_the_same_output_name_is_uploaded_again(
    strapi: str, http: httpx.AsyncClient
) -> None:
    await WRITEBACK.write_back(
        http, config(strapi), article(), image_source(image_bytes(64, 32, "png")), ENV
    )
    await WRITEBACK.write_back(
        http, config(strapi), article(), image_source(image_bytes(32, 64, "png")), ENV
    )
    content = await state(http, strapi)
    assert len(content["files"]) == 2
    assert (
        content["entries"]["api::article.article"]["7"]["cover"]["id"] == content["files"][1]["id"]
    )


async def expect_failure(
    http: httpx.AsyncClient, cfg: StrapiWriteback, art: Article, env: dict[str, str] = ENV
) -> WritebackError:
    with pytest.raises(WritebackError) as caught:
        await WRITEBACK.write_back(http, cfg, art, image_source(image_bytes(16, 16, "png")), env)
    return caught.value


async def test_a_bad_token_is_permanent_and_quotes_strapi(
    strapi: str, http: httpx.AsyncClient
) -> None:
    error = await expect_failure(http, config(strapi), article(), {"STRAPI_TOKEN": "wrong-token"})
    assert error.permanent
    assert error.status_code == 401
    assert "Missing or invalid credentials" in error.message
    assert "wrong-token" not in error.message


async def test_an_entry_that_is_gone_is_permanent(strapi: str, http: httpx.AsyncClient) -> None:
    error = await expect_failure(http, config(strapi), article(id=999))
    assert (error.permanent, error.status_code) == (True, 404)
    assert "Entry not found" in error.message
    assert (await state(http, strapi))["files"] == []


async def test_a_missing_env_or_another_model_is_permanent(
    strapi: str, http: httpx.AsyncClient
) -> None:
    missing = await expect_failure(http, config(strapi), article(), {})
    assert missing.permanent
    assert "STRAPI_TOKEN" in missing.message
    other = await expect_failure(http, config(strapi, ref="api::page.page"), article())
    assert other.permanent
    assert "api::page.page" in other.message
    assert (await http.get(f"{strapi}/_sim/requests")).json() == []


async def test_503_with_retry_after_and_a_reset_are_retryable(
    strapi: str, http: httpx.AsyncClient
) -> None:
    fault = {
        "method": "POST",
        "path": "^/api/upload$",
        "status": 503,
        "headers": {"Retry-After": "7"},
        "body": {
            "data": None,
            "error": {
                "status": 503,
                "name": "ServiceUnavailableError",
                "message": "Service Unavailable",
                "details": {},
            },
        },
    }
    await http.post(f"{strapi}/_sim/faults", json=fault)
    unavailable = await expect_failure(http, config(strapi), article())
    assert (unavailable.permanent, unavailable.status_code) == (False, 503)
    assert unavailable.retry_after_s == 7
    assert "Service Unavailable" in unavailable.message

    await http.post(
        f"{strapi}/_sim/faults", json={"path": "^/api/upload/files$", "status": "reset"}
    )
    reset = await expect_failure(http, config(strapi), article())
    assert (reset.permanent, reset.status_code) == (False, None)


def test_the_config_block_is_a_contract() -> None:
    cfg = StrapiWriteback.model_validate(
        {"base_url": "https://cms.example.com", "token_env": "STRAPI_TOKEN"}
    )
    assert (cfg.ref, cfg.field) == ("api::article.article", "cover")
    with pytest.raises(ValidationError):
        StrapiWriteback.model_validate(
            {"base_url": "https://cms.example.com", "token_env": "T", "token": "secret"}
        )


async def test_a_redirect_is_not_followed_and_a_retry_after_date_is_read(
    strapi: str, http: httpx.AsyncClient
) -> None:
    moved = {
        "path": "^/api/upload/files$",
        "status": 301,
        "headers": {"Location": "https://cms.example.com/api/upload/files"},
    }
    await http.post(f"{strapi}/_sim/faults", json=moved)
    redirected = await expect_failure(http, config(strapi), article())
    assert (redirected.permanent, redirected.status_code) == (True, 301)
    assert "https://cms.example.com/api/upload/files" in redirected.message

    later = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    busy = {"path": "^/api/upload/files$", "status": 429, "headers": {"Retry-After": later}}
    await http.post(f"{strapi}/_sim/faults", json=busy)
    limited = await expect_failure(http, config(strapi), article())
    assert (limited.permanent, limited.status_code) == (False, 429)
    assert limited.retry_after_s is not None
    assert 100 < limited.retry_after_s <= 120
