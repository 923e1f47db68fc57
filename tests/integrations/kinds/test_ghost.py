"""Ghost: webhooks from the Ghost simulator verified and read by the kind, and the cover
written back through the simulator's Admin API, over real HTTP."""

from __future__ import annotations

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
from service.integrations.writeback.ghost import GhostConfig, admin_token
from service.integrations.writeback.http import upload_name
from simulators.cms.base import run_cms
from simulators.cms.ghost import (
    DEFAULT_ADMIN_KEY,
    DEFAULT_ADMIN_KEY_ID,
    DEFAULT_ADMIN_KEY_SECRET,
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

KIND = KINDS["ghost"]
WRITEBACK = WRITEBACKS["ghost"]
BLOCK = {"secret": DEFAULT_WEBHOOK_SECRET}
ENV = {"GHOST_ADMIN_KEY": DEFAULT_ADMIN_KEY}
POST: dict[str, Any] = {
    "id": "6650aa000000000000000001",
    "title": "Moon landing",
    "custom_excerpt": "Fifty years on.",
    "tags": [{"id": "t1", "name": "Space", "slug": "space"}],
}


@pytest.fixture
async def ghost() -> AsyncIterator[str]:
    async with run_cms(lambda: build_app({"posts": [dict(POST)]})) as url:
        yield url


@pytest.fixture
async def receiver() -> AsyncIterator[str]:
    async with run_cms(lambda: receiver_app(KIND, BLOCK)) as url:
        yield url + "/hook"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


def article_for(post: dict[str, Any], event: str = "post.published") -> Article:
    headers, body = signed_webhook(DEFAULT_WEBHOOK_SECRET, post, event)
    return KIND.read(inbound(headers, body), json.loads(body), KindOptions())


def config(base: str) -> GhostConfig:
    return GhostConfig(base_url=base, admin_key_env="GHOST_ADMIN_KEY")


async def test_a_publish_from_the_simulator_verifies_and_reads(ghost: str, receiver: str) -> None:
    sent = await control(ghost, "/_sim/publish", {"url": receiver, "post_id": POST["id"]})
    assert sent["status"] == 202, sent
    answer = sent["body"]
    assert answer["event_type"] == "post.published"
    assert answer["ref"]["id"] == POST["id"]
    assert answer["dedupe_key"].startswith(f"{POST['id']}:{answer['ref']['updated_at']}")
    variables = answer["variables"]
    assert variables["title"] == "Moon landing"
    assert variables["excerpt"] == "Fifty years on."
    assert variables["slug"] == "moon-landing"
    assert variables["url"].endswith("/moon-landing/")
    assert variables["tags"] == ["Space"]
    assert variables["authors"] == ["Ghost Writer"]
    assert variables["status"] == "published"
    assert variables["language"] is None
    assert sent["sent"]["headers"]["x-ghost-signature"].startswith("sha256=")


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"secret": "not-the-secret"}, "does not match"),
        ({"skew_ms": -6 * 60 * 1000}, "window"),
        ({"skew_ms": 6 * 60 * 1000}, "window"),
    ],
    ids=["forged", "stale", "from-the-future"],
)
async def test_forged_and_stale_deliveries_are_refused(
    ghost: str, receiver: str, override: dict[str, Any], reason: str
) -> None:
    # The timestamp is made now, not when the parameters were collected: a long test run
    # would otherwise bring "the future" within the window.
    if "skew_ms" in override:
        override = {"timestamp_ms": now_ms() + override["skew_ms"]}
    spec = {"url": receiver, "post_id": POST["id"], **override}
    sent = await control(ghost, "/_sim/publish", spec)
    assert sent["status"] == 401
    assert reason in sent["body"]["error"]
    assert "not-the-secret" not in sent["body"]["error"]


async def test_a_replay_is_the_same_event_and_a_tampered_one_fails(
    ghost: str, receiver: str
) -> None:
    sent = await control(ghost, "/_sim/publish", {"url": receiver, "post_id": POST["id"]})
    headers, body = sent["sent"]["headers"], sent["sent"]["body"].encode()
    async with httpx.AsyncClient(timeout=5) as client:
        again = await client.post(receiver, content=body, headers=headers)
    assert again.status_code == 202
    assert again.json()["dedupe_key"] == sent["body"]["dedupe_key"]  # the ingest dedupes it
    tampered = body.replace(b"Moon landing", b"Moon hoax!!!")
    with pytest.raises(SignatureError, match="does not match"):
        KIND.verify(inbound(headers, tampered), BLOCK, now_ms())


@pytest.mark.parametrize(
    "header",
    [None, "", "sha256=abc", "t=123", "sha256=abc, t=soon", "sha256=ü, t=1"],
)
def test_a_missing_or_malformed_signature_header_is_refused(header: str | None) -> None:
    headers, body = signed_webhook(DEFAULT_WEBHOOK_SECRET, make_post(), "post.published")
    del headers["x-ghost-signature"]
    if header is not None:
        headers["x-ghost-signature"] = header
    with pytest.raises(SignatureError):
        KIND.verify(inbound(headers, body), BLOCK, now_ms())


def test_a_good_signature_verifies_within_the_window() -> None:
    stamp = now_ms() - 4 * 60 * 1000
    headers, body = signed_webhook(DEFAULT_WEBHOOK_SECRET, make_post(), timestamp_ms=stamp)
    KIND.verify(inbound(headers, body), BLOCK, now_ms())


@pytest.mark.parametrize(
    ("status", "event", "expected"),
    [
        ("draft", "post.edited", "post.edited"),
        ("published", "post.published.edited", "post.published.edited"),
        ("draft", "post.added", "post.added"),
        ("published", "post.added", "post.published"),
        ("draft", "post.unpublished", "post.unpublished"),
        ("scheduled", "post.published", "post.scheduled"),
    ],
)
def test_the_event_is_inferred_from_current_and_previous(
    status: str, event: str, expected: str
) -> None:
    article = article_for(make_post(status=status, title="A draft"), event)
    assert article.event_type == expected
    assert (article.event_type in KIND.default_events) == (expected == "post.published")


def test_a_draft_edit_is_not_a_publish_and_reads_fully() -> None:
    post = make_post(id="p-draft", title="Half done", custom_excerpt=None, excerpt=None)
    article = article_for(post, "post.edited")
    assert article.event_type == "post.edited"
    assert article.event_type not in KIND.default_events
    assert article.ref == {"id": "p-draft", "updated_at": post["updated_at"], "uuid": post["uuid"]}
    assert article.dedupe_key == f"p-draft:{post['updated_at']}:post.edited"
    assert article.variables["excerpt"] == "Half done: the body."  # from plaintext
    assert article.variables["status"] == "draft"
    assert article.variables["raw"]["post"]["current"]["id"] == "p-draft"


def test_the_event_named_by_the_body_or_the_url_wins() -> None:
    post = make_post(status="published")
    headers, body = signed_webhook(DEFAULT_WEBHOOK_SECRET, post, "post.published.edited")
    request = inbound(headers, body, {"event": "post.published"})
    assert KIND.read(request, json.loads(body), KindOptions()).event_type == "post.published"
    headers, body = signed_webhook(DEFAULT_WEBHOOK_SECRET, post, "post.edited", include_event=True)
    assert KIND.read(inbound(headers, body), json.loads(body), KindOptions()).event_type == (
        "post.edited"
    )


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ([], "post"),
        ({}, "post"),
        ({"post": {"previous": {}}}, "post.current"),
        ({"post": {"current": {"updated_at": "x"}, "previous": {}}}, "post.current.id"),
        ({"post": {"current": {"id": "p"}, "previous": {}}}, "post.current.updated_at"),
    ],
)
def test_a_body_without_the_post_names_the_missing_field(payload: Any, field: str) -> None:
    body = json.dumps(payload).encode()
    with pytest.raises(PayloadError) as caught:
        KIND.read(inbound({}, body), payload, KindOptions())
    assert caught.value.field == field


@pytest.mark.parametrize(
    "block", [{}, {"secret": ""}, {"secret": "  "}, {"secret": 5}, {"secret": "s", "x": 1}]
)
def test_the_inbound_block_needs_exactly_a_secret(block: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="inbound"):
        KIND.check_inbound(block)
    assert KIND.check_inbound({"secret": "s3cret"}) == {"secret": "s3cret"}


def test_the_writeback_block_is_the_contract() -> None:
    assert str(config("https://blog.example.com").base_url) == "https://blog.example.com/"
    for bad in (
        {"base_url": "not a url", "admin_key_env": "K"},
        {"base_url": "https://u:p@blog.example.com", "admin_key_env": "K"},
        {"base_url": "https://blog.example.com", "admin_key_env": "K", "token": "x"},
        {"base_url": "https://blog.example.com", "admin_key_env": "not a name"},
    ):
        with pytest.raises(ValidationError):
            GhostConfig.model_validate(bad)


async def test_write_back_uploads_the_image_and_sets_it_once(
    ghost: str, http: httpx.AsyncClient
) -> None:
    data = png_bytes()
    image = image_source(data)
    article = article_for((await control(ghost, "/_sim/state"))["posts"][POST["id"]])
    done = await WRITEBACK.write_back(http, config(ghost), article, image, ENV)
    assert done["uploaded"] is True
    state = await control(ghost, "/_sim/state")
    [upload] = state["uploads"]
    assert upload["filename"] == upload_name(image)
    assert upload["sha256"] == hashlib.sha256(data).hexdigest()
    assert upload["size"] == len(data)
    assert upload["content_type"] == "image/png"
    assert upload["ref"] == upload_name(image)
    assert state["posts"][POST["id"]]["feature_image"] == upload["url"] == done["image_url"]

    again = await WRITEBACK.write_back(http, config(ghost), article, image, ENV)
    assert again == {"post_id": POST["id"], "image_url": upload["url"], "uploaded": False}
    state = await control(ghost, "/_sim/state")
    assert len(state["uploads"]) == 1
    requests = await control(ghost, "/_sim/requests")
    assert [r["method"] for r in requests] == ["GET", "POST", "PUT", "GET"]


async def test_a_new_image_for_the_same_post_replaces_the_old_one(
    ghost: str, http: httpx.AsyncClient
) -> None:
    article = article_for(make_post(**POST))
    await WRITEBACK.write_back(http, config(ghost), article, image_source(png_bytes(1)), ENV)
    second = image_source(png_bytes(2))
    done = await WRITEBACK.write_back(http, config(ghost), article, second, ENV)
    assert done["uploaded"] is True
    state = await control(ghost, "/_sim/state")
    assert state["posts"][POST["id"]]["feature_image"] == state["uploads"][1]["url"]


async def test_an_update_collision_is_retried_with_the_new_updated_at(
    ghost: str, http: httpx.AsyncClient
) -> None:
    await control(ghost, "/_sim/collide", {"post_id": POST["id"], "count": 1})
    article = article_for(make_post(**POST))
    done = await WRITEBACK.write_back(http, config(ghost), article, image_source(png_bytes()), ENV)
    state = await control(ghost, "/_sim/state")
    assert state["posts"][POST["id"]]["feature_image"] == done["image_url"]
    requests = await control(ghost, "/_sim/requests")
    assert [r["method"] for r in requests] == ["GET", "POST", "PUT", "GET", "PUT"]


async def test_endless_collisions_end_in_a_retryable_failure(
    ghost: str, http: httpx.AsyncClient
) -> None:
    await control(ghost, "/_sim/collide", {"post_id": POST["id"], "count": 10})
    article = article_for(make_post(**POST))
    with pytest.raises(WritebackError) as caught:
        await WRITEBACK.write_back(http, config(ghost), article, image_source(png_bytes()), ENV)
    assert not caught.value.permanent
    assert caught.value.status_code == 409
    assert "UpdateCollisionError" in caught.value.message


def unsigned_kid_token() -> str:
    token = admin_token(DEFAULT_ADMIN_KEY_ID, DEFAULT_ADMIN_KEY_SECRET)
    _, claims, signature = token.split(".")
    return f"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.{claims}.{signature}"  # header without kid


KEY = (DEFAULT_ADMIN_KEY_ID, DEFAULT_ADMIN_KEY_SECRET)


@pytest.mark.parametrize(
    ("key", "claims", "status", "reason"),
    [
        (("0" * 24, KEY[1]), {}, 401, "Unknown Admin API Key"),
        ((KEY[0], "ab" * 32), {}, 401, "invalid signature"),
        (KEY, {"audience": "/v2/content/"}, 401, "audience invalid"),
        (KEY, {"now_s": now_ms() // 1000 - 400}, 401, "jwt expired"),
        (KEY, {"lifetime_s": 3600}, 401, "lifetime exceeds 5 minutes"),
        (None, {}, 400, "kid missing"),
        ((), {}, 400, "Invalid token"),
    ],
    ids=["unknown-kid", "wrong-secret", "wrong-aud", "expired", "too-long", "no-kid", "garbage"],
)
async def test_the_simulator_refuses_bad_admin_tokens(
    ghost: str,
    http: httpx.AsyncClient,
    key: tuple[str, ...] | None,
    claims: dict[str, Any],
    status: int,
    reason: str,
) -> None:
    token = unsigned_kid_token() if key is None else admin_token(*key, **claims) if key else "x.y"
    url = f"{ghost}/ghost/api/admin/posts/{POST['id']}/"
    refused = await http.get(url, headers={"authorization": f"Ghost {token}"})
    assert refused.status_code == status
    [error] = refused.json()["errors"]
    assert error["type"] in {"UnauthorizedError", "BadRequestError"}
    assert reason in error["message"]
    good = admin_token(DEFAULT_ADMIN_KEY_ID, DEFAULT_ADMIN_KEY_SECRET)
    accepted = await http.get(url, headers={"authorization": f"Ghost {good}"})
    assert accepted.status_code == 200
    assert accepted.json()["posts"][0]["id"] == POST["id"]


@pytest.mark.parametrize(
    ("env", "post_id", "status", "words"),
    [
        (
            {"GHOST_ADMIN_KEY": f"{DEFAULT_ADMIN_KEY_ID}:{'ab' * 32}"},
            POST["id"],
            401,
            "invalid signature",
        ),
        (
            {"GHOST_ADMIN_KEY": f"{'0' * 24}:{DEFAULT_ADMIN_KEY_SECRET}"},
            POST["id"],
            401,
            "Unknown Admin",
        ),
        (ENV, "no-such-post", 404, "Post not found."),
        ({}, POST["id"], None, "GHOST_ADMIN_KEY is not set"),
        ({"GHOST_ADMIN_KEY": "just-a-token"}, POST["id"], None, "<id>:<hex secret>"),
    ],
    ids=["wrong-secret", "unknown-key", "post-gone", "no-env", "malformed-key"],
)
async def test_permanent_failures_carry_ghosts_words_and_no_secret(
    ghost: str,
    http: httpx.AsyncClient,
    env: dict[str, str],
    post_id: str,
    status: int | None,
    words: str,
) -> None:
    article = article_for(make_post(**(POST | {"id": post_id})))
    with pytest.raises(WritebackError) as caught:
        await WRITEBACK.write_back(http, config(ghost), article, image_source(png_bytes()), env)
    error = caught.value
    assert error.permanent
    assert error.status_code == status
    assert words in error.message
    assert "ab" * 32 not in error.message
    assert DEFAULT_ADMIN_KEY_SECRET not in error.message
    assert (await control(ghost, "/_sim/state"))["uploads"] == []


@pytest.mark.parametrize(
    ("fault", "status", "retry_after"),
    [
        (
            {
                "method": "POST",
                "path": "/images/upload/",
                "status": 503,
                "headers": {"Retry-After": "7"},
            },
            503,
            7.0,
        ),
        (
            {"method": "GET", "path": "/posts/", "status": 429, "headers": {"Retry-After": "2"}},
            429,
            2.0,
        ),
        ({"method": "PUT", "path": "/posts/", "status": 502}, 502, None),
        ({"method": "PUT", "path": "/posts/", "status": "reset"}, None, None),
        ({"method": "GET", "path": "/posts/", "status": "hang", "seconds": 5}, None, None),
    ],
    ids=["503-retry-after", "429", "502", "reset", "hang"],
)
async def test_transient_failures_are_retryable(
    ghost: str, fault: dict[str, Any], status: int | None, retry_after: float | None
) -> None:
    await control(ghost, "/_sim/faults", fault)
    article = article_for(make_post(**POST))
    async with httpx.AsyncClient(timeout=1.0) as http:
        with pytest.raises(WritebackError) as caught:
            await WRITEBACK.write_back(http, config(ghost), article, image_source(png_bytes()), ENV)
    assert not caught.value.permanent
    assert caught.value.status_code == status
    assert caught.value.retry_after_s == retry_after
    # The next attempt (the fault is spent) succeeds.
    async with httpx.AsyncClient(timeout=5.0) as http:
        done = await WRITEBACK.write_back(
            http, config(ghost), article, image_source(png_bytes()), ENV
        )
    state = await control(ghost, "/_sim/state")
    assert state["posts"][POST["id"]]["feature_image"] == done["image_url"]
