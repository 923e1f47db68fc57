"""Sanity: webhooks from the simulator verified and read, and the write-back run against
the simulator over real HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from service.integrations.kinds import KINDS
from service.integrations.kinds.base import (
    REPLAY_WINDOW_MS,
    Article,
    KindOptions,
    PayloadError,
    SignatureError,
    WritebackError,
)
from service.integrations.kinds.sanity import signature
from service.integrations.writeback import WRITEBACKS
from service.integrations.writeback.sanity import SanityWriteback
from simulators.cms.base import run_cms
from simulators.cms.sanity import DEFAULT_CONFIG, build_app, signed_webhook
from simulators.images import image_bytes
from tests.integrations.kinds.support import image_source, inbound, now_ms, receiver_app

KIND = KINDS["sanity"]
WRITEBACK = WRITEBACKS["sanity"]
SECRET = DEFAULT_CONFIG["secret"]
INBOUND = {"secret": SECRET}
ENV = {"SANITY_TOKEN": DEFAULT_CONFIG["token"]}
POST: dict[str, Any] = {
    "_id": "post-1",
    "_type": "post",
    "_rev": "rev-abc",
    "_createdAt": "2026-01-02T10:00:00Z",
    "_updatedAt": "2026-01-02T11:00:00Z",
    "title": "Rivers of the North",
    "slug": {"_type": "slug", "current": "rivers-of-the-north"},
    "language": "en",
    "tags": ["travel", "nature"],
    "author": {"_type": "reference", "_ref": "author-1"},
    "body": [
        {
            "_type": "block",
            "children": [
                {"_type": "span", "text": "A walk along "},
                {"_type": "span", "text": "three rivers."},
            ],
        },
        {"_type": "image", "asset": {"_ref": "image-x"}},
        {"_type": "block", "children": [{"_type": "span", "text": "Second paragraph."}]},
    ],
}


def read(headers: dict[str, str], body: bytes) -> Article:
    request = inbound(headers, body)
    KIND.verify(request, KIND.check_inbound(INBOUND), now_ms())
    return KIND.read(request, json.loads(body), KindOptions())


def test_a_simulated_create_verifies_and_reads_as_an_article() -> None:
    article = read(*signed_webhook(dict(POST), operation="create"))
    assert article.event_type == "create"
    assert article.event_type in KIND.default_events
    assert article.dedupe_key == "post-1:rev-abc"
    assert article.ref == {
        "_id": "post-1",
        "_rev": "rev-abc",
        "_type": "post",
        "dataset": "production",
        "project_id": "simproj",
    }
    variables = dict(article.variables)
    assert variables.pop("raw")["title"] == "Rivers of the North"
    assert variables == {
        "title": "Rivers of the North",
        "excerpt": "A walk along three rivers.\nSecond paragraph.",
        "slug": "rivers-of-the-north",
        "tags": ["travel", "nature"],
        "authors": [],  # a bare reference has no name: project it to get one
        "id": "post-1",
        "language": "en",
        "status": "published",
    }


def test_an_update_and_a_draft_are_not_publishes() -> None:
    update = read(*signed_webhook(dict(POST), operation="update"))
    assert update.event_type == "update"
    assert update.event_type not in KIND.default_events
    draft = read(*signed_webhook(dict(POST, _id="drafts.post-1"), operation="create"))
    assert draft.event_type == "draft.create"
    assert draft.variables["status"] == "draft"


def verify(headers: dict[str, str], body: bytes, secret: str = SECRET) -> None:
    KIND.verify(inbound(headers, body), {"secret": secret}, now_ms())


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda h, b: (h, b), None),
        (
            lambda h, b: (
                {**h, "sanity-webhook-signature": h["sanity-webhook-signature"].replace(",", ", ")},
                b,
            ),
            None,
        ),
        (lambda h, b: (h, b.replace(b"Rivers", b"Lakes")), "does not match"),
        (
            lambda h, b: ({k: v for k, v in h.items() if k != "sanity-webhook-signature"}, b),
            "missing",
        ),
        (lambda h, b: ({**h, "sanity-webhook-signature": "v1=abc"}, b), "needs t="),
        (lambda h, b: ({**h, "sanity-webhook-signature": "t=12x,v1=abc"}, b), "malformed"),
        (lambda h, b: ({**h, "sanity-webhook-signature": "garbage"}, b), "malformed"),
    ],
)
def test_signatures_are_checked_on_the_raw_body(mangle: Any, reason: str | None) -> None:
    headers, body = mangle(*signed_webhook(dict(POST)))
    if reason is None:
        verify(headers, body)
        return
    with pytest.raises(SignatureError, match=reason):
        verify(headers, body)


def test_a_forged_secret_is_refused() -> None:
    headers, body = signed_webhook(dict(POST), secret="not-the-secret")
    with pytest.raises(SignatureError, match="does not match"):
        verify(headers, body)


@pytest.mark.parametrize("skew_ms", [-(REPLAY_WINDOW_MS + 1000), REPLAY_WINDOW_MS + 1000])
def test_a_stale_or_future_timestamp_is_refused(skew_ms: int) -> None:
    headers, body = signed_webhook(dict(POST), timestamp_ms=now_ms() + skew_ms)
    with pytest.raises(SignatureError, match="5-minute"):
        verify(headers, body)


def test_any_of_several_v1_signatures_may_match() -> None:
    stamp = now_ms()
    headers, body = signed_webhook(dict(POST), timestamp_ms=stamp)
    good = signature(SECRET, stamp, body)
    headers["sanity-webhook-signature"] = f"t={stamp},v1=bm90LWl0,v1={good}"
    verify(headers, body)


@pytest.mark.parametrize(
    ("body", "headers", "field"),
    [
        ({"title": "x", "_rev": "r"}, {"sanity-operation": "create"}, "_id"),
        ({"_id": "a", "title": "x"}, {"sanity-operation": "create"}, "_rev"),
        ({"_id": "a", "_rev": "r"}, {}, "sanity-operation"),
        ("just a string", {"sanity-operation": "create"}, ""),
    ],
)
def test_a_body_missing_a_field_names_it(body: Any, headers: dict[str, str], field: str) -> None:
    request = inbound(headers, json.dumps(body).encode())
    with pytest.raises(PayloadError) as caught:
        KIND.read(request, body, KindOptions())
    assert caught.value.field == field


def test_check_inbound() -> None:
    assert KIND.check_inbound({"secret": "s3cret"}) == {"secret": "s3cret"}
    with pytest.raises(ValueError, match=r"inbound\.secret"):
        KIND.check_inbound({})
    with pytest.raises(ValueError, match=r"inbound\.header"):
        KIND.check_inbound({"secret": "x", "header": "y"})


@pytest.fixture
async def sanity() -> AsyncIterator[str]:
    async with run_cms(lambda: build_app({"documents": [dict(POST)]})) as url:
        yield url


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def publish(http: httpx.AsyncClient, sanity: str, **spec: Any) -> dict[str, Any]:
    answer: dict[str, Any] = (await http.post(f"{sanity}/_sim/publish", json=spec)).json()
    return answer


async def test_the_simulator_publishes_to_a_receiver_forged_and_stale_get_401(
    sanity: str, http: httpx.AsyncClient
) -> None:
    async with run_cms(lambda: receiver_app(KIND, KIND.check_inbound(INBOUND))) as hook:
        url = f"{hook}/hook"
        good = await publish(http, sanity, url=url, _id="post-1", changes={"title": "New"})
        forged = await publish(http, sanity, url=url, _id="post-1", secret="wrong")
        stale = await publish(
            http, sanity, url=url, _id="post-1", timestamp_ms=now_ms() - REPLAY_WINDOW_MS - 60_000
        )
        sent = good["sent"]
        replayed = await http.post(url, content=sent["body"], headers=sent["headers"])
    assert good["status"] == 202
    assert json.loads(good["body"])["event_type"] == "update"
    assert json.loads(sent["body"])["title"] == "New"
    assert (forged["status"], stale["status"]) == (401, 401)
    # Within the window a replay verifies; its _id:_rev makes it a duplicate.
    assert replayed.status_code == 202
    assert replayed.json()["dedupe_key"] == json.loads(good["body"])["dedupe_key"]


def config(url: str, **changes: Any) -> SanityWriteback:
    return SanityWriteback.model_validate(
        {
            "base_url": url,
            "dataset": "production",
            "token_env": "SANITY_TOKEN",
            "field": "mainImage",
        }
        | changes
    )


def article(document_id: str = "post-1") -> Article:
    return read(*signed_webhook(dict(POST, _id=document_id)))


async def sim(http: httpx.AsyncClient, url: str, what: str) -> Any:
    return (await http.get(f"{url}/_sim/{what}")).json()


async def test_write_back_uploads_the_asset_and_patches_document_and_draft(
    sanity: str, http: httpx.AsyncClient
) -> None:
    await http.post(f"{sanity}/_sim/documents", json=dict(POST, _id="drafts.post-1", title="WIP"))
    before = (await sim(http, sanity, "state"))["documents"]["post-1"]["_rev"]
    data = image_bytes(64, 32, "png")
    image = image_source(data)
    first = await WRITEBACK.write_back(http, config(sanity), article(), image, ENV)
    second = await WRITEBACK.write_back(http, config(sanity), article(), image, ENV)

    content = await sim(http, sanity, "state")
    [(asset_id, asset)] = content["assets"].items()
    assert asset_id.startswith("image-")
    assert asset_id.endswith("-64x32-png")
    assert asset["originalFilename"] == "my-post-cover.png"
    assert asset["size"] == len(data)
    reference = {"_type": "image", "asset": {"_type": "reference", "_ref": asset_id}}
    for doc_id in ("post-1", "drafts.post-1"):
        assert content["documents"][doc_id]["mainImage"] == reference
    assert content["documents"]["post-1"]["_rev"] != before
    assert content["documents"]["drafts.post-1"]["title"] == "WIP"
    assert first == {
        "asset_id": asset_id,
        "image_url": asset["url"],
        "documents": ["post-1", "drafts.post-1"],
        "transaction_id": content["documents"]["post-1"]["_rev"],
        "reused": False,
    }
    assert second == {"asset_id": asset_id, "documents": [], "reused": True}
    assert len(content["uploads"]) == 1
    methods = [(r["method"], r["path"].split("/")[2]) for r in await sim(http, sanity, "requests")]
    assert methods == [("GET", "data"), ("POST", "assets"), ("POST", "data"), ("GET", "data")]


async def test_sanity_keeps_one_asset_for_the_same_bytes(
    sanity: str, http: httpx.AsyncClient
) -> None:
    await http.post(f"{sanity}/_sim/documents", json=dict(POST, _id="post-2"))
    image = image_source(image_bytes(64, 32, "png"))
    one = await WRITEBACK.write_back(http, config(sanity), article("post-1"), image, ENV)
    two = await WRITEBACK.write_back(http, config(sanity), article("post-2"), image, ENV)
    content = await sim(http, sanity, "state")
    assert one["asset_id"] == two["asset_id"]
    assert len(content["assets"]) == 1
    assert len(content["uploads"]) == 2


async def expect_failure(
    http: httpx.AsyncClient, cfg: SanityWriteback, art: Article, env: dict[str, str] = ENV
) -> WritebackError:
    with pytest.raises(WritebackError) as caught:
        await WRITEBACK.write_back(http, cfg, art, image_source(image_bytes(16, 16, "png")), env)
    return caught.value


async def test_a_bad_token_a_gone_document_and_a_missing_env_are_permanent(
    sanity: str, http: httpx.AsyncClient
) -> None:
    denied = await expect_failure(http, config(sanity), article(), {"SANITY_TOKEN": "nope-nope"})
    assert (denied.permanent, denied.status_code) == (True, 401)
    assert "Session not found" in denied.message
    assert "nope-nope" not in denied.message
    gone = await expect_failure(http, config(sanity), article("post-404"))
    assert (gone.permanent, gone.status_code) == (True, 404)
    assert "post-404" in gone.message
    dataset = await expect_failure(http, config(sanity, dataset="staging"), article())
    assert (dataset.permanent, dataset.status_code) == (True, 404)
    assert 'Dataset "staging" not found' in dataset.message
    missing = await expect_failure(http, config(sanity), article(), {})
    assert missing.permanent
    assert "SANITY_TOKEN" in missing.message
    assert (await sim(http, sanity, "state"))["uploads"] == []


async def test_503_and_a_reset_are_retryable(sanity: str, http: httpx.AsyncClient) -> None:
    fault = {
        "path": "/assets/images/",
        "status": 503,
        "headers": {"Retry-After": "12"},
        "body": {"statusCode": 503, "error": "Service Unavailable", "message": "try later"},
    }
    await http.post(f"{sanity}/_sim/faults", json=fault)
    unavailable = await expect_failure(http, config(sanity), article())
    assert (unavailable.permanent, unavailable.status_code) == (False, 503)
    assert unavailable.retry_after_s == 12
    assert "try later" in unavailable.message

    await http.post(f"{sanity}/_sim/faults", json={"path": "/data/mutate/", "status": "reset"})
    reset = await expect_failure(http, config(sanity), article())
    assert (reset.permanent, reset.status_code) == (False, None)
    # The upload went through before the reset; the retry reuses the asset and patches.
    result = await WRITEBACK.write_back(
        http, config(sanity), article(), image_source(image_bytes(16, 16, "png")), ENV
    )
    content = await sim(http, sanity, "state")
    assert len(content["assets"]) == 1
    assert content["documents"]["post-1"]["mainImage"]["asset"]["_ref"] == result["asset_id"]


async def test_a_mutation_error_quotes_sanity(sanity: str, http: httpx.AsyncClient) -> None:
    fault = {
        "path": "/data/mutate/",
        "status": 409,
        "body": {
            "error": {
                "description": 'The mutation(s) failed: Document "post-1" not found',
                "type": "mutationError",
                "items": [
                    {
                        "error": {
                            "description": 'Document "post-1" not found',
                            "id": "post-1",
                            "type": "documentNotFoundError",
                        },
                        "index": 0,
                    }
                ],
            }
        },
    }
    await http.post(f"{sanity}/_sim/faults", json=fault)
    error = await expect_failure(http, config(sanity), article())
    assert error.status_code == 409
    assert not error.permanent
    assert 'Document "post-1" not found' in error.message


def test_the_config_block_is_a_contract() -> None:
    cfg = SanityWriteback.model_validate(
        {
            "base_url": "https://abc123.api.sanity.io",
            "dataset": "production",
            "token_env": "SANITY_TOKEN",
        }
    )
    assert cfg.field == "mainImage"
    with pytest.raises(ValidationError):
        SanityWriteback.model_validate(
            {
                "base_url": "https://abc123.api.sanity.io",
                "dataset": "production",
                "token_env": "T",
                "project": "abc123",
            }
        )
