"""WordPress: WP Webhooks triggers from the WordPress simulator verified and read by the
kind, and the featured image written back through the simulator's REST API, over real
HTTP."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections.abc import AsyncIterator
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
from service.integrations.writeback.http import retry_after_s, upload_name
from service.integrations.writeback.wordpress import WordPressConfig
from simulators.cms.base import run_cms
from simulators.cms.wordpress import (
    DEFAULT_APP_PASSWORD,
    DEFAULT_USERNAME,
    DEFAULT_WEBHOOK_SECRET,
    build_app,
    make_post,
    signed_webhook,
)
from tests.integrations.kinds.support import (
    control,
    image_source,
    inbound,
    now_ms,
    png_bytes,
    receiver_app,
)

KIND = KINDS["wordpress"]
WRITEBACK = WRITEBACKS["wordpress"]
BLOCK = {"secret": DEFAULT_WEBHOOK_SECRET}
ENV = {"WP_APP_PASSWORD": DEFAULT_APP_PASSWORD}
POST_ID = 7
SEED = {
    "ID": POST_ID,
    "post_title": "Moon landing",
    "post_excerpt": "Fifty years on.",
    "tags": ["Space", "History"],
    "categories": ["Science"],
}


@pytest.fixture
async def wordpress() -> AsyncIterator[str]:
    async with run_cms(lambda: build_app({"posts": [dict(SEED)]})) as url:
        yield url


@pytest.fixture
async def receiver() -> AsyncIterator[str]:
    async with run_cms(lambda: receiver_app(KIND, BLOCK)) as url:
        yield url + "/hook"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


def wp_post(status: str = "publish", **fields: Any) -> dict[str, Any]:
    return make_post(POST_ID, "http://wp.example", {"post_title": "Moon landing"} | fields) | {
        "post_status": status
    }


def read(headers: dict[str, str], body: bytes, query: dict[str, str] | None = None) -> Article:
    return KIND.read(inbound(headers, body, query), json.loads(body), KindOptions())


def config(base: str, username: str = DEFAULT_USERNAME) -> WordPressConfig:
    return WordPressConfig(base_url=base, username=username, app_password_env="WP_APP_PASSWORD")


async def test_a_publish_from_the_simulator_verifies_and_reads(
    wordpress: str, receiver: str
) -> None:
    sent = await control(wordpress, "/_sim/publish", {"url": receiver, "post_id": POST_ID})
    assert sent["status"] == 202, sent
    answer = sent["body"]
    assert answer["event_type"] == "post_update"  # draft -> publish: a publish
    assert answer["ref"]["id"] == POST_ID
    assert answer["dedupe_key"] == f"{POST_ID}:{answer['ref']['modified']}:post_update"
    variables = answer["variables"]
    assert variables["title"] == "Moon landing"
    assert variables["excerpt"] == "Fifty years on."
    assert variables["slug"] == "moon-landing"
    assert variables["url"].endswith("/moon-landing/")
    assert variables["tags"] == ["Space", "History"]
    assert variables["categories"] == ["Science"]
    assert variables["status"] == "publish"
    assert variables["id"] == str(POST_ID)
    assert "\\/" in sent["sent"]["body"]  # PHP's escaped slashes: verified on the raw bytes


async def test_a_forged_delivery_is_refused(wordpress: str, receiver: str) -> None:
    spec = {"url": receiver, "post_id": POST_ID, "secret": "not-the-secret"}
    sent = await control(wordpress, "/_sim/publish", spec)
    assert sent["status"] == 401
    assert "does not match" in sent["body"]["error"]


async def test_a_replay_is_the_same_event_and_a_tampered_one_fails(
    wordpress: str, receiver: str
) -> None:
    sent = await control(wordpress, "/_sim/publish", {"url": receiver, "post_id": POST_ID})
    headers, body = sent["sent"]["headers"], sent["sent"]["body"].encode()
    async with httpx.AsyncClient(timeout=5) as client:
        again = await client.post(receiver, content=body, headers=headers)
    assert again.status_code == 202
    assert again.json()["dedupe_key"] == sent["body"]["dedupe_key"]
    tampered = body.replace(b"Moon landing", b"Moon hoax!!!")
    with pytest.raises(SignatureError, match="does not match"):
        KIND.verify(inbound(headers, tampered), BLOCK, now_ms())


@pytest.mark.parametrize("header", [None, "", "bm90IGEgc2lnbmF0dXJl", "ü"])
def test_a_missing_or_wrong_signature_header_is_refused(header: str | None) -> None:
    headers, body = signed_webhook(DEFAULT_WEBHOOK_SECRET, wp_post())
    del headers["x-wp-webhook-signature"]
    if header is not None:
        headers["x-wp-webhook-signature"] = header
    with pytest.raises(SignatureError):
        KIND.verify(inbound(headers, body), BLOCK, now_ms())


def test_the_signature_is_base64_hmac_of_the_raw_body() -> None:
    headers, body = signed_webhook(DEFAULT_WEBHOOK_SECRET, wp_post(post_title="Ünïcode / slash"))
    assert b"\\u00dcn\\u00efcode \\/ slash" in body
    KIND.verify(inbound(headers, body), BLOCK, now_ms())
    assert base64.b64decode(headers["x-wp-webhook-signature"]) != b""


@pytest.mark.parametrize(
    ("trigger", "before", "after", "expected"),
    [
        ("post_create", None, "publish", "post_create"),
        ("post_create", None, "auto-draft", "post_create.auto-draft"),
        ("post_update", "draft", "publish", "post_update"),
        ("post_update", "publish", "publish", "post_update.edited"),
        ("post_update", "draft", "draft", "post_update.draft"),
        ("post_update", "publish", "trash", "post_update.trash"),
    ],
)
def test_the_event_comes_from_the_trigger_and_the_status(
    trigger: str, before: str | None, after: str, expected: str
) -> None:
    earlier = wp_post(before) if before else None
    headers, body = signed_webhook(
        DEFAULT_WEBHOOK_SECRET, wp_post(after), trigger, post_before=earlier
    )
    article = read(headers, body)
    assert article.event_type == expected
    assert (article.event_type in KIND.default_events) == (
        expected in {"post_create", "post_update"}
    )


def test_a_draft_update_is_not_a_publish_and_reads_fully() -> None:
    draft = wp_post("draft", post_excerpt="", post_content="<p>Only <b>the</b> body.</p>")
    headers, body = signed_webhook(
        DEFAULT_WEBHOOK_SECRET, draft, "post_update", post_before=wp_post("draft"), tags=["Space"]
    )
    article = read(headers, body)
    assert article.event_type == "post_update.draft"
    assert article.event_type not in KIND.default_events
    assert article.ref == {"id": POST_ID, "modified": draft["post_modified"]}
    assert article.variables["excerpt"] == "Only the body."
    assert article.variables["tags"] == ["Space"]
    assert article.variables["url"] == f"http://wordpress.local/?p={POST_ID}"
    assert article.variables["authors"] == []
    assert article.variables["raw"]["post"]["ID"] == POST_ID


def test_the_url_names_the_trigger() -> None:
    headers, body = signed_webhook(DEFAULT_WEBHOOK_SECRET, wp_post(), "post_create")
    assert read(headers, body, {"event": "post_update"}).event_type == "post_update"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ([], "post_id"),
        ({"post": {}}, "post_id"),
        ({"post_id": 3}, "post"),
        ({"post_id": 3, "post": {"post_title": "t"}}, "post.post_modified"),
    ],
)
def test_a_body_without_the_post_names_the_missing_field(payload: Any, field: str) -> None:
    with pytest.raises(PayloadError) as caught:
        KIND.read(inbound({}, json.dumps(payload).encode()), payload, KindOptions())
    assert caught.value.field == field


def test_the_blocks_are_the_contract() -> None:
    with pytest.raises(ValueError, match=r"inbound\.secret"):
        KIND.check_inbound({"secret": ""})
    assert KIND.check_inbound({"secret": "s"}) == {"secret": "s"}
    for bad in (
        {"base_url": "https://wp.example", "username": "u"},
        {"base_url": "ftp://wp.example", "username": "u", "app_password_env": "P"},
        {"base_url": "https://wp.example", "username": "", "app_password_env": "P"},
        {"base_url": "https://wp.example", "username": "u", "app_password_env": "P", "x": 1},
    ):
        with pytest.raises(ValidationError):
            WordPressConfig.model_validate(bad)


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after_s({"Retry-After": "12"}) == 12.0
    date = {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}
    assert retry_after_s(date, now=1445412470.0) == 10.0
    assert retry_after_s(date, now=1445412490.0) == 0.0  # a date in the past: no wait
    assert retry_after_s({"Retry-After": "soon"}) is None
    assert retry_after_s({"Retry-After": "-3"}) is None  # not delta-seconds (RFC 9110)
    assert retry_after_s({}) is None


def article_for(status: str = "publish") -> Article:
    headers, body = signed_webhook(
        DEFAULT_WEBHOOK_SECRET, wp_post(status), "post_update", post_before=wp_post("draft")
    )
    return read(headers, body)


async def test_write_back_uploads_the_image_and_features_it_once(
    wordpress: str, http: httpx.AsyncClient
) -> None:
    data = png_bytes()
    image = image_source(data)
    done = await WRITEBACK.write_back(http, config(wordpress), article_for(), image, ENV)
    assert done["uploaded"] is True
    state = await control(wordpress, "/_sim/state")
    [media] = state["media"]
    assert media["source_url"].endswith("/" + upload_name(image))
    assert media["sha256"] == hashlib.sha256(data).hexdigest()
    assert media["media_details"]["filesize"] == len(data)
    assert media["mime_type"] == "image/png"
    assert state["posts"][str(POST_ID)]["featured_media"] == media["id"] == done["media_id"]

    again = await WRITEBACK.write_back(http, config(wordpress), article_for(), image, ENV)
    assert again["uploaded"] is False
    assert again["media_id"] == media["id"]
    assert len((await control(wordpress, "/_sim/state"))["media"]) == 1
    requests = await control(wordpress, "/_sim/requests")
    calls = [(r["method"], r["path"].rsplit("/v2", 1)[1]) for r in requests]
    assert calls == [
        ("GET", f"/posts/{POST_ID}"),
        ("GET", "/media"),
        ("POST", "/media"),
        ("POST", f"/posts/{POST_ID}"),
        ("GET", f"/posts/{POST_ID}"),
        ("GET", "/media"),
    ]


async def test_an_upload_whose_featuring_failed_is_found_not_uploaded_again(
    wordpress: str, http: httpx.AsyncClient
) -> None:
    await control(wordpress, "/_sim/faults", {"method": "POST", "path": "/posts/", "status": 503})
    image = image_source(png_bytes())
    with pytest.raises(WritebackError) as caught:
        await WRITEBACK.write_back(http, config(wordpress), article_for(), image, ENV)
    assert not caught.value.permanent
    done = await WRITEBACK.write_back(http, config(wordpress), article_for(), image, ENV)
    assert done["uploaded"] is False
    state = await control(wordpress, "/_sim/state")
    assert len(state["media"]) == 1
    assert state["posts"][str(POST_ID)]["featured_media"] == done["media_id"]


@pytest.mark.parametrize(
    ("username", "env", "post_id", "status", "words"),
    [
        (
            DEFAULT_USERNAME,
            {"WP_APP_PASSWORD": "wrong pass word"},
            POST_ID,
            401,
            "incorrect_password",
        ),
        ("nobody", ENV, POST_ID, 401, "invalid_username"),
        (DEFAULT_USERNAME, ENV, 999, 404, "rest_post_invalid_id: Invalid post ID."),
        (DEFAULT_USERNAME, {}, POST_ID, None, "WP_APP_PASSWORD is not set"),
    ],
    ids=["wrong-password", "unknown-user", "post-gone", "no-env"],
)
async def test_permanent_failures_carry_wordpress_words_and_no_secret(
    wordpress: str,
    http: httpx.AsyncClient,
    username: str,
    env: dict[str, str],
    post_id: int,
    status: int | None,
    words: str,
) -> None:
    article = Article("post_update", "k", {"id": post_id, "modified": "m"}, {})
    with pytest.raises(WritebackError) as caught:
        await WRITEBACK.write_back(
            http, config(wordpress, username), article, image_source(png_bytes()), env
        )
    assert caught.value.permanent
    assert caught.value.status_code == status
    assert words in caught.value.message
    assert "wrong pass word" not in caught.value.message
    assert (await control(wordpress, "/_sim/state"))["media"] == []


async def test_an_app_password_without_its_spaces_works(
    wordpress: str, http: httpx.AsyncClient
) -> None:
    env = {"WP_APP_PASSWORD": DEFAULT_APP_PASSWORD.replace(" ", "")}
    done = await WRITEBACK.write_back(
        http, config(wordpress), article_for(), image_source(png_bytes()), env
    )
    assert done["uploaded"] is True


@pytest.mark.parametrize(
    ("fault", "status", "retry_after"),
    [
        (
            {"method": "POST", "path": "/media", "status": 503, "headers": {"Retry-After": "9"}},
            503,
            9.0,
        ),
        ({"method": "GET", "path": "/media", "status": 429}, 429, None),
        ({"method": "POST", "path": "/media", "status": "reset"}, None, None),
        ({"method": "GET", "path": "/posts/", "status": "hang", "seconds": 5}, None, None),
    ],
    ids=["503-retry-after", "429", "reset", "hang"],
)
async def test_transient_failures_are_retryable(
    wordpress: str, fault: dict[str, Any], status: int | None, retry_after: float | None
) -> None:
    await control(wordpress, "/_sim/faults", fault)
    async with httpx.AsyncClient(timeout=1.0) as http:
        with pytest.raises(WritebackError) as caught:
            await WRITEBACK.write_back(
                http, config(wordpress), article_for(), image_source(png_bytes()), ENV
            )
    assert not caught.value.permanent
    assert caught.value.status_code == status
    assert caught.value.retry_after_s == retry_after
    async with httpx.AsyncClient(timeout=5.0) as http:
        done = await WRITEBACK.write_back(
            http, config(wordpress), article_for(), image_source(png_bytes()), ENV
        )
    state = await control(wordpress, "/_sim/state")
    assert state["posts"][str(POST_ID)]["featured_media"] == done["media_id"]


async def test_storage_that_yields_the_wrong_size_fails_the_attempt(
    wordpress: str, http: httpx.AsyncClient
) -> None:
    data = png_bytes()
    short = dataclasses.replace(image_source(data), size=len(data) + 10)
    with pytest.raises(WritebackError, match="yielded") as caught:
        await WRITEBACK.write_back(http, config(wordpress), article_for(), short, ENV)
    assert not caught.value.permanent
    assert (await control(wordpress, "/_sim/state"))["media"] == []
