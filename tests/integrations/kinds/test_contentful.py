"""Contentful: webhooks verified as Contentful signs them, entries read per locale, and the
cover written back through the simulated Content Management API (upload, asset, process,
publish, link with version checks), errors classified."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.integrations.kinds import KINDS
from service.integrations.kinds.base import (
    REPLAY_WINDOW_MS,
    Article,
    ImageSource,
    InboundRequest,
    KindOptions,
    PayloadError,
    SignatureError,
    WritebackError,
)
from service.integrations.kinds.contentful import ContentfulKind, canonical_request, sign
from service.integrations.writeback import WRITEBACKS
from service.integrations.writeback.contentful import ContentfulWriteback, asset_id_for
from simulators.cms.base import run_cms
from simulators.cms.contentful import DEFAULTS, build_app, signed_webhook
from tests.integrations.kinds.support import image_source, now_ms

SECRET = DEFAULTS["signing_secret"]
TOKEN = DEFAULTS["token"]
SPACE = DEFAULTS["space_id"]
HOOK_PATH = "/v1/hooks/3f1c0a52-8d1e-4c59-9d0b-1f0e7d1c2a44"
KIND = ContentfulKind()
ENTRY_FIELDS = {
    "title": {"en-US": "Night trains of Europe", "de-DE": "Nachtzüge Europas"},
    "description": {"en-US": "Sleeper routes are back.", "de-DE": "Schlafwagen sind zurück."},
    "slug": {"en-US": "night-trains"},
    "tags": {"en-US": ["travel", "rail"]},
    "author": {"en-US": {"sys": {"type": "Link", "linkType": "Entry", "id": "author-ana"}}},
}


def request_of(headers: dict[str, str], body: bytes, path: str = HOOK_PATH) -> InboundRequest:
    lower = {name.lower(): value for name, value in headers.items()}
    return InboundRequest(method="POST", path=path, query={}, headers=lower, body=body)


def entry(version: int = 2, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"tags": [{"sys": {"type": "Link", "linkType": "Tag", "id": "featured"}}]},
        "sys": {
            "type": "Entry",
            "id": "5KsDBWseXY6QegucYAoacS",
            "space": {"sys": {"type": "Link", "linkType": "Space", "id": SPACE}},
            "environment": {"sys": {"type": "Link", "linkType": "Environment", "id": "master"}},
            "contentType": {"sys": {"type": "Link", "linkType": "ContentType", "id": "blogPost"}},
            "version": version,
            "publishedVersion": version - 1,
        },
        "fields": ENTRY_FIELDS if fields is None else fields,
    }


# -- verification ----------------------------------------------------------------------


def test_toolkit_known_answers_verify() -> None:
    """Signatures made by @contentful/node-apps-toolkit's signRequest (published as test
    vectors by a third party) verify: path escaping, header trimming and ordering agree."""
    secret = "a" * 32 + "b" * 32
    signed_at = 1767225600000
    body = (
        b'{"sys":{"id":"5KsDBWseXY6QegucYAoacS","type":"Entry"},'
        b'"fields":{"title":{"en-US":"Hello, World!"}}}'
    )
    plain = {
        "content-type": "application/vnd.contentful.management.v1+json",
        "x-contentful-topic": "ContentManagement.Entry.publish",
        "x-contentful-signature": (
            "8dec81505760a10b542fbc36d3aa0a772b11f759eca7b2351daaf5bba8c7c6f1"
        ),
        "x-contentful-signed-headers": (
            "content-type,x-contentful-signed-headers,x-contentful-timestamp,x-contentful-topic"
        ),
        "x-contentful-timestamp": str(signed_at),
    }
    with_query = {
        "x-contentful-webhook-name": " My Hook ",
        "x-contentful-signature": (
            "c8c83deb1a865012752f66594e6228056c826fd7227a70361b3a304e124555ec"
        ),
        "x-contentful-signed-headers": (
            "x-contentful-signed-headers,x-contentful-timestamp,x-contentful-webhook-name"
        ),
        "x-contentful-timestamp": str(signed_at),
    }
    inbound = {"secret": secret}
    KIND.verify(
        request_of(plain, body, "/trigger/SW5zdGFuY2VGbG93Q29uZmlnOjE="), inbound, signed_at
    )
    KIND.verify(request_of(with_query, body, "/trigger/abc?foo=bar baz&x=1"), inbound, signed_at)
    with pytest.raises(SignatureError, match="does not match"):
        KIND.verify(request_of(with_query, body, "/trigger/abc?foo=bar&x=1"), inbound, signed_at)


def test_simulator_webhook_verifies_within_the_window() -> None:
    headers, body = signed_webhook(SECRET, entry(), path=HOOK_PATH)
    KIND.verify(request_of(headers, body), {"secret": SECRET}, now_ms())
    stamp = int(headers["x-contentful-timestamp"])
    for skew in (-REPLAY_WINDOW_MS + 1000, REPLAY_WINDOW_MS - 1000):
        KIND.verify(request_of(headers, body), {"secret": SECRET}, stamp + skew)


def tampered(change: Callable[[dict[str, str], bytes], tuple[dict[str, str], bytes]]) -> str:
    headers, body = signed_webhook(SECRET, entry(), path=HOOK_PATH)
    headers, body = change(dict(headers), body)
    with pytest.raises(SignatureError) as raised:
        KIND.verify(request_of(headers, body), {"secret": SECRET}, now_ms())
    return str(raised.value)


def test_forged_stale_and_tampered_requests_are_refused() -> None:
    forged = signed_webhook("f" * 64, entry(), path=HOOK_PATH)
    with pytest.raises(SignatureError, match="does not match"):
        KIND.verify(request_of(*forged), {"secret": SECRET}, now_ms())
    old = now_ms() - REPLAY_WINDOW_MS - 5000
    stale = signed_webhook(SECRET, entry(), path=HOOK_PATH, timestamp_ms=old)
    with pytest.raises(SignatureError, match="window"):
        KIND.verify(request_of(*stale), {"secret": SECRET}, now_ms())
    ahead = signed_webhook(SECRET, entry(), path=HOOK_PATH, timestamp_ms=now_ms() + 600_000)
    with pytest.raises(SignatureError, match="window"):
        KIND.verify(request_of(*ahead), {"secret": SECRET}, now_ms())

    assert "does not match" in tampered(lambda h, b: (h, b.replace(b"Night", b"Day")))
    # A save dressed up as a publish: the topic is a signed header.
    topic = "ContentManagement.Entry.save"
    assert "does not match" in tampered(lambda h, b: ({**h, "x-contentful-topic": topic}, b))
    assert "not in the request" in tampered(
        lambda h, b: ({k: v for k, v in h.items() if k != "x-contentful-topic"}, b)
    )
    # Moving the timestamp (to replay later) breaks the signature.
    later = str(int(time.time() * 1000) + 1000)
    assert "does not match" in tampered(lambda h, b: ({**h, "x-contentful-timestamp": later}, b))
    assert "missing" in tampered(
        lambda h, b: ({k: v for k, v in h.items() if k != "x-contentful-signature"}, b)
    )
    assert "not a time" in tampered(lambda h, b: ({**h, "x-contentful-timestamp": "soon"}, b))
    headers, body = signed_webhook(SECRET, entry(), path=HOOK_PATH)
    with pytest.raises(SignatureError, match="does not match"):
        KIND.verify(request_of(headers, body, "/v1/hooks/another"), {"secret": SECRET}, now_ms())


def test_a_timestamp_outside_the_signed_headers_is_refused() -> None:
    """Signed correctly by the canonical rules, but the list of signed headers leaves the
    timestamp out: refused, since nothing would bind the timestamp to the request."""
    stamp = now_ms()
    headers = {
        "content-type": "application/vnd.contentful.management.v1+json",
        "x-contentful-topic": "ContentManagement.Entry.publish",
        "x-contentful-signed-headers": "content-type,x-contentful-signed-headers",
        "x-contentful-timestamp": str(stamp),
    }
    body = json.dumps(entry()).encode()
    picked = {k: headers[k] for k in ("content-type", "x-contentful-signed-headers")}
    canonical = canonical_request("POST", HOOK_PATH, picked, body, stamp)
    headers["x-contentful-signature"] = sign(SECRET, canonical)
    with pytest.raises(SignatureError, match="not among the signed headers"):
        KIND.verify(request_of(headers, body), {"secret": SECRET}, stamp)


def test_inbound_block_is_checked() -> None:
    assert KIND.check_inbound({"secret": SECRET}) == {"secret": SECRET}
    for bad in ({}, {"secret": "short"}, {"secret": "x" * 63 + "!"}, {"secret": SECRET, "t": 1}):
        with pytest.raises(ValueError, match="inbound"):
            KIND.check_inbound(bad)
    assert KINDS["contentful"].default_events == ("Entry.publish",)


# -- reading ---------------------------------------------------------------------------


def read(payload: Any, topic: str = "ContentManagement.Entry.publish", **options: Any) -> Article:
    headers, body = signed_webhook(SECRET, payload if isinstance(payload, dict) else {}, topic)
    return KIND.read(request_of(headers, body), payload, KindOptions(**options))


def test_an_entry_reads_into_template_variables_per_locale() -> None:
    article = read(entry(version=7))
    assert article.event_type == "Entry.publish"
    assert article.dedupe_key == "5KsDBWseXY6QegucYAoacS:7"
    assert article.ref == {
        "entry_id": "5KsDBWseXY6QegucYAoacS",
        "space_id": SPACE,
        "environment_id": "master",
        "content_type": "blogPost",
        "version": 7,
        "published_version": 6,
    }
    variables = article.variables
    assert variables["title"] == "Night trains of Europe"
    assert variables["excerpt"] == "Sleeper routes are back."
    assert variables["slug"] == "night-trains"
    assert variables["tags"] == ["travel", "rail", "featured"]
    assert variables["authors"] == ["author-ana"]
    assert (variables["id"], variables["language"], variables["status"]) == (
        "5KsDBWseXY6QegucYAoacS",
        "en-US",
        "published",
    )
    assert variables["url"] == ""
    assert variables["raw"]["sys"]["version"] == 7

    german = read(entry(), locale="de-DE").variables
    assert german["title"] == "Nachtzüge Europas"
    assert german["excerpt"] == "Schlafwagen sind zurück."
    assert german["slug"] == "nachtzuge-europas"  # no German slug: made from the title
    assert german["language"] == "de-DE"


def test_a_save_reads_as_a_draft_event() -> None:
    article = read(entry(version=9), topic="ContentManagement.Entry.save")
    assert article.event_type == "Entry.save"
    assert article.variables["status"] == "draft"
    assert article.event_type not in KIND.default_events
    auto = read(entry(version=10), topic="ContentManagement.Entry.auto_save")
    assert auto.event_type == "Entry.auto_save"
    assert auto.dedupe_key != article.dedupe_key


def test_an_unpublish_without_fields_still_reads() -> None:
    deleted = {"sys": {"type": "DeletedEntry", "id": "abc", "version": 4}}
    article = read(deleted, topic="ContentManagement.Entry.unpublish")
    assert (article.event_type, article.variables["status"]) == ("Entry.unpublish", "unpublished")
    assert "title" not in article.variables


@pytest.mark.parametrize(
    ("payload", "options", "field"),
    [
        (entry(fields={"slug": {"en-US": "x"}}), {}, "fields.title.en-US"),
        (entry(), {"locale": "fr-FR"}, "fields.title.fr-FR"),
        ({**entry(), "fields": None}, {}, "fields"),
        ({"fields": {}}, {}, "sys"),
        ({"sys": {"type": "Entry", "version": 1}, "fields": ENTRY_FIELDS}, {}, "sys.id"),
        ({"sys": {"type": "Entry", "id": "a"}, "fields": ENTRY_FIELDS}, {}, "sys.version"),
        ([1, 2], {}, "sys"),
    ],
)
def test_a_missing_field_is_named(payload: Any, options: dict[str, Any], field: str) -> None:
    with pytest.raises(PayloadError) as raised:
        read(payload, **options)
    assert raised.value.field == field


def test_a_topic_is_required() -> None:
    with pytest.raises(PayloadError) as raised:
        KIND.read(request_of({}, b"{}"), entry(), KindOptions())
    assert raised.value.field == "x-contentful-topic"


# -- write-back ------------------------------------------------------------------------

IMAGE_BYTES = bytes(range(256)) * 1200  # 300 KB: several chunks
ENV = {"CONTENTFUL_CMA_TOKEN": TOKEN}
WRITER = WRITEBACKS["contentful"]


def image_of(data: bytes = IMAGE_BYTES, name: str = "night-trains-cover.webp") -> ImageSource:
    return image_source(data, name, content_type="image/webp", chunk=64 * 1024)


def config_for(url: str, **changes: Any) -> ContentfulWriteback:
    block = {
        "base_url": url,
        "upload_url": url,
        "space_id": SPACE,
        "token_env": "CONTENTFUL_CMA_TOKEN",
    }
    return ContentfulWriteback.model_validate({**block, **changes})


class Cms:
    """The running simulator, and an article read from the webhook it sent."""

    def __init__(self, url: str, http: httpx.AsyncClient) -> None:
        self.url = url
        self.http = http

    async def sim(self, method: str, path: str, body: Any = None) -> Any:
        response = await self.http.request(method, f"{self.url}{path}", json=body)
        response.raise_for_status()
        return response.json()

    async def published_article(self, entry_id: str = "post-1") -> Article:
        """Seed an entry and publish it; read the webhook that publish sends, verified and
        read as Darkroom does."""
        await self.sim("POST", "/_sim/entries", {"id": entry_id, "fields": ENTRY_FIELDS})
        published = (await self.state())["entries"][entry_id]
        headers, body = signed_webhook(SECRET, published, path=HOOK_PATH)
        request = request_of(headers, body)
        KIND.verify(request, {"secret": SECRET}, now_ms())
        return KIND.read(request, json.loads(body), KindOptions())

    async def state(self) -> Any:
        return await self.sim("GET", "/_sim/state")

    async def requests(self, method: str, fragment: str) -> list[dict[str, Any]]:
        log = await self.sim("GET", "/_sim/requests")
        return [r for r in log if r["method"] == method and fragment in r["path"]]

    async def fault(self, **spec: Any) -> None:
        await self.sim("POST", "/_sim/faults", spec)


@pytest.fixture
async def cms() -> AsyncIterator[Cms]:
    async with run_cms(partial(build_app, {"process_polls": 2})) as url:
        async with httpx.AsyncClient(timeout=10) as http:
            yield Cms(url, http)


async def write(cms: Cms, article: Article, image: ImageSource | None = None, **config: Any) -> Any:
    return await WRITER.write_back(
        cms.http, config_for(cms.url, **config), article, image or image_of(), ENV
    )


async def test_write_back_links_a_published_asset_and_republishes(cms: Cms) -> None:
    article = await cms.published_article()
    result = await write(cms, article)
    asset_id = asset_id_for(image_of())
    assert result["asset_id"] == asset_id
    assert (result["uploaded"], result["linked"], result["published"]) == (True, True, True)
    state = await cms.state()
    entry_now = state["entries"]["post-1"]
    link = {"sys": {"type": "Link", "linkType": "Asset", "id": asset_id}}
    assert entry_now["fields"]["coverImage"] == {"en-US": link}
    assert entry_now["fields"]["title"] == ENTRY_FIELDS["title"]  # nothing else lost
    # Published again, with the link: nothing pending.
    assert entry_now["sys"]["publishedVersion"] == entry_now["sys"]["version"] - 1
    asset = state["assets"][asset_id]
    assert asset["sys"]["publishedVersion"] == asset["sys"]["version"] - 1
    file = asset["fields"]["file"]["en-US"]
    assert file["fileName"] == "night-trains-cover.webp"
    assert file["contentType"] == "image/webp"
    assert result["image_url"] == "https:" + file["url"]
    # The bytes arrived whole, streamed with a length (not chunked).
    (upload,) = state["uploads"].values()
    assert upload == {"size": len(IMAGE_BYTES), "sha256": hashlib.sha256(IMAGE_BYTES).hexdigest()}
    (sent,) = await cms.requests("POST", "/uploads")
    assert sent["headers"]["content-length"] == str(len(IMAGE_BYTES))
    assert sent["headers"]["content-type"] == "application/octet-stream"


async def test_a_second_write_back_changes_nothing(cms: Cms) -> None:
    article = await cms.published_article()
    await write(cms, article)
    before = await cms.state()
    puts = len(await cms.requests("PUT", "/"))
    again = await write(cms, article)
    assert (again["uploaded"], again["linked"], again["published"]) == (False, False, True)
    assert await cms.state() == before
    assert len(await cms.requests("PUT", "/")) == puts
    assert len(await cms.requests("POST", "/uploads")) == 1


async def test_an_interrupted_write_back_resumes_without_uploading_again(cms: Cms) -> None:
    article = await cms.published_article()
    await cms.fault(method="PUT", path="/entries/post-1$", status=503, count=1)
    with pytest.raises(WritebackError) as raised:
        await write(cms, article)
    assert (raised.value.permanent, raised.value.status_code) == (False, 503)
    result = await write(cms, article)
    assert (result["uploaded"], result["linked"], result["published"]) == (False, True, True)
    assert len(await cms.requests("POST", "/uploads")) == 1


async def test_a_failed_republish_is_retried_without_relinking(cms: Cms) -> None:
    article = await cms.published_article()
    await cms.fault(method="PUT", path="/entries/post-1/published", status=500, count=1)
    with pytest.raises(WritebackError) as raised:
        await write(cms, article)
    assert not raised.value.permanent
    result = await write(cms, article)
    assert (result["linked"], result["published"]) == (False, True)
    entry_now = (await cms.state())["entries"]["post-1"]
    assert entry_now["sys"]["publishedVersion"] == entry_now["sys"]["version"] - 1


async def test_version_conflicts_are_retried(cms: Cms) -> None:
    article = await cms.published_article()
    # An editor saves just before each of the writer's next two updates.
    await cms.sim("POST", "/_sim/entries/post-1/edit", {"conflicts": 2})
    result = await write(cms, article)
    assert result["linked"] is True
    assert len(await cms.requests("PUT", "/entries/post-1")) == 3  # two 409s, then done
    entry_now = (await cms.state())["entries"]["post-1"]
    assert entry_now["fields"]["coverImage"]["en-US"]["sys"]["id"] == result["asset_id"]
    assert "editorNote" in entry_now["fields"]  # the editor's save is kept
    # The editor's changes are pending: the entry is not published behind their back.
    assert result["published"] is False
    assert entry_now["sys"]["publishedVersion"] < entry_now["sys"]["version"] - 1


async def test_endless_conflicts_are_retryable(cms: Cms) -> None:
    article = await cms.published_article()
    await cms.sim("POST", "/_sim/entries/post-1/edit", {"conflicts": 50})
    with pytest.raises(WritebackError) as raised:
        await write(cms, article)
    assert (raised.value.permanent, raised.value.status_code) == (False, 409)


async def test_a_draft_with_pending_edits_is_linked_but_not_published(cms: Cms) -> None:
    article = await cms.published_article()
    await cms.sim("POST", "/_sim/entries/post-1/edit", {})
    result = await write(cms, article, field="heroImage", locale="de-DE")
    assert (result["linked"], result["published"]) == (True, False)
    entry_now = (await cms.state())["entries"]["post-1"]
    assert entry_now["fields"]["heroImage"]["de-DE"]["sys"]["id"] == result["asset_id"]


async def test_an_asset_left_unprocessed_is_finished(cms: Cms) -> None:
    article = await cms.published_article()
    await cms.fault(method="PUT", path="/process$", status=502, count=1)
    with pytest.raises(WritebackError):
        await write(cms, article)
    result = await write(cms, article)
    assert result["linked"] is True
    assert len(await cms.requests("POST", "/uploads")) == 2  # the first upload never processed


@pytest.mark.parametrize(
    ("setup", "env", "status", "words"),
    [
        ({}, {"CONTENTFUL_CMA_TOKEN": "CFPAT-wrong"}, 401, "AccessTokenInvalid"),
        ({}, {}, None, "CONTENTFUL_CMA_TOKEN is not set"),
        ({"space_id": "otherspace"}, ENV, 404, "NotFound"),
    ],
)
async def test_permanent_failures(
    cms: Cms, setup: dict[str, Any], env: dict[str, str], status: int | None, words: str
) -> None:
    article = await cms.published_article()
    with pytest.raises(WritebackError) as raised:
        await WRITER.write_back(cms.http, config_for(cms.url, **setup), article, image_of(), env)
    assert raised.value.permanent
    assert raised.value.status_code == status
    assert words in raised.value.message
    assert "CFPAT" not in raised.value.message


async def test_a_deleted_entry_is_permanent(cms: Cms) -> None:
    article = await cms.published_article()
    gone = Article(article.event_type, article.dedupe_key, {**article.ref, "entry_id": "gone"})
    with pytest.raises(WritebackError) as raised:
        await write(cms, gone)
    assert (raised.value.permanent, raised.value.status_code) == (True, 404)
    assert "NotFound" in raised.value.message
    assert "entry gone" in raised.value.message


async def test_a_refused_publish_is_permanent(cms: Cms) -> None:
    article = await cms.published_article()
    body = {"sys": {"type": "Error", "id": "ValidationFailed"}, "message": "Validation error"}
    await cms.fault(method="PUT", path="/entries/post-1/published", status=422, body=body)
    with pytest.raises(WritebackError) as raised:
        await write(cms, article)
    assert (raised.value.permanent, raised.value.status_code) == (True, 422)
    assert "ValidationFailed" in raised.value.message


async def test_rate_limits_and_outages_are_retryable(cms: Cms) -> None:
    article = await cms.published_article()
    limited = {"sys": {"type": "Error", "id": "RateLimitExceeded"}, "message": "Slow down"}
    reset = {"X-Contentful-RateLimit-Reset": "3"}
    await cms.fault(method="POST", path="/uploads", status=429, body=limited, headers=reset)
    with pytest.raises(WritebackError) as raised:
        await write(cms, article)
    assert (raised.value.permanent, raised.value.retry_after_s) == (False, 3.0)
    assert "RateLimitExceeded" in raised.value.message
    await cms.fault(method="GET", path="/assets/", status=503, headers={"Retry-After": "7"})
    with pytest.raises(WritebackError) as raised:
        await write(cms, article)
    assert (raised.value.permanent, raised.value.retry_after_s) == (False, 7.0)


async def test_an_unreachable_api_is_retryable() -> None:
    async with run_cms(build_app) as url:
        pass  # stopped: nothing listens there now
    article = Article("Entry.publish", "e:2", {"entry_id": "post-1", "version": 2})
    async with httpx.AsyncClient(timeout=2) as http:
        with pytest.raises(WritebackError) as raised:
            await WRITER.write_back(http, config_for(url), article, image_of(), ENV)
    assert not raised.value.permanent
    assert "ConnectError" in raised.value.message


def test_config_block_is_the_contract() -> None:
    config = ContentfulWriteback.model_validate({"space_id": SPACE, "token_env": "CF_TOKEN"})
    assert config.model_dump() == {
        "base_url": "https://api.contentful.com",
        "upload_url": "https://upload.contentful.com",
        "space_id": SPACE,
        "environment": "master",
        "token_env": "CF_TOKEN",
        "field": "coverImage",
        "locale": "en-US",
    }
    for bad in (
        {"space_id": SPACE, "token_env": "CF_TOKEN", "token": "secret"},
        {"space_id": SPACE},
        {"space_id": "a/b", "token_env": "CF_TOKEN"},
        {"space_id": SPACE, "token_env": "CF TOKEN"},
        {"space_id": SPACE, "token_env": "T", "base_url": "ftp://x"},
    ):
        with pytest.raises(ValidationError):
            ContentfulWriteback.model_validate(bad)


def test_the_asset_id_follows_the_image() -> None:
    assert asset_id_for(image_of()) == asset_id_for(image_of())
    assert asset_id_for(image_of()) != asset_id_for(image_of(IMAGE_BYTES[:-1]))
    assert asset_id_for(image_of()) != asset_id_for(image_of(name="other.webp"))
    assert len(asset_id_for(image_of())) <= 64


async def test_the_simulator_publishes_and_sends_a_signed_webhook(cms: Cms) -> None:
    """`/_sim/publish` bumps the version as a publish does and POSTs the webhook, which a
    receiver verifies with the raw path and query it was sent to."""
    received: list[InboundRequest] = []

    async def hook(request: Request) -> Response:
        raw_path = request.scope["raw_path"].decode()
        query = request.scope["query_string"].decode()
        path = f"{raw_path}?{query}" if query else raw_path
        received.append(
            InboundRequest("POST", path, {}, dict(request.headers), await request.body())
        )
        return Response(status_code=202)

    async def ready(request: Request) -> Response:  # what run_cms waits for
        return Response("{}", media_type="application/json")

    routes = [Route(HOOK_PATH, hook, methods=["POST"]), Route("/_sim/config", ready)]
    receiver = partial(Starlette, routes=routes)
    await cms.sim("POST", "/_sim/entries", {"id": "post-9", "fields": ENTRY_FIELDS})
    async with run_cms(receiver) as target:
        for topic in ("ContentManagement.Entry.publish", "ContentManagement.Entry.save"):
            spec = {"url": f"{target}{HOOK_PATH}?src=cf", "entry_id": "post-9", "topic": topic}
            assert (await cms.sim("POST", "/_sim/publish", spec))["status"] == 202
    published, saved = received
    for request in received:
        KIND.verify(request, {"secret": SECRET}, now_ms())
    first = KIND.read(published, json.loads(published.body), KindOptions())
    second = KIND.read(saved, json.loads(saved.body), KindOptions())
    assert (first.event_type, second.event_type) == ("Entry.publish", "Entry.save")
    # Seeded (1) and published (2); published again (3); saved (4).
    assert (first.ref["version"], first.ref["published_version"]) == (3, 2)
    assert second.ref["version"] == 4
    assert first.dedupe_key != second.dedupe_key
