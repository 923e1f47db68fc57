"""The generic write-back: a templated HTTP request ("PATCH the product with its image
URL") against the catalogue simulator, its secrets read from the environment, its errors
classified."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from service.integrations.kinds.base import Article, ImageSource, WritebackError
from service.integrations.writeback import WRITEBACKS
from service.integrations.writeback.generic import GenericWriteback, template_variables
from simulators.cms.base import run_cms
from simulators.cms.catalogue import DEFAULTS, build_app

TOKEN = DEFAULTS["token"]
ENV = {"CATALOGUE_AUTH": f"Bearer {TOKEN}"}
WRITER = WRITEBACKS["generic"]
DATA = b"\x89PNG" + bytes(4000)
IMAGE = ImageSource(
    filename="walnut-desk-cover.png",
    content_type="image/png",
    size=len(DATA),
    sha256=hashlib.sha256(DATA).hexdigest(),
    url="https://cdn.example.com/outputs/walnut-desk-cover.png",
    open=lambda: _chunks(),
)
ARTICLE = Article(
    event_type="product.created",
    dedupe_key="msg_1",
    ref={"product_id": "sku-1"},
    variables={"id": "sku-1", "title": "Walnut desk", "slug": "walnut-desk", "tags": ["desk"]},
)


async def _chunks() -> AsyncIterator[bytes]:
    yield DATA


def block(base: str, **changes: Any) -> dict[str, Any]:
    return {
        "method": "patch",
        "url": base + "/products/{{ ref.product_id }}",
        "headers": {
            "Authorization": {"env": "CATALOGUE_AUTH"},
            "X-Darkroom-Event": "{{ event_type }}",
        },
        "body": {
            "image": {
                "url": "{{ output.url }}",
                "alt": "{{ title }}",
                "bytes": "{{ output.bytes }}",
            },
            "sha256": "{{ output.sha256 }}",
            "labels": ["{{ slug }}-cover", "{{ tags | join(',') }}"],
            "primary": True,
        },
        **changes,
    }


class Catalogue:
    def __init__(self, url: str, http: httpx.AsyncClient) -> None:
        self.url = url
        self.http = http

    async def sim(self, method: str, path: str, body: Any = None) -> Any:
        response = await self.http.request(method, f"{self.url}{path}", json=body)
        response.raise_for_status()
        return response.json()

    async def write(
        self, article: Article = ARTICLE, env: dict[str, str] = ENV, **changes: Any
    ) -> dict[str, Any]:
        config = GenericWriteback.model_validate(block(self.url, **changes))
        return await WRITER.write_back(self.http, config, article, IMAGE, env)

    async def failure(self, **changes: Any) -> WritebackError:
        with pytest.raises(WritebackError) as raised:
            await self.write(**changes)
        return raised.value


@pytest.fixture
async def catalogue() -> AsyncIterator[Catalogue]:
    async with run_cms(partial(build_app, None)) as url:
        async with httpx.AsyncClient(timeout=10) as http:
            yield Catalogue(url, http)


async def test_the_rendered_request_patches_the_product(catalogue: Catalogue) -> None:
    result = await catalogue.write()
    assert result == {
        "method": "PATCH",
        "url": f"{catalogue.url}/products/sku-1",
        "status": 200,
    }
    state = await catalogue.sim("GET", "/_sim/state")
    product = state["products"]["sku-1"]
    assert product["name"] == "Walnut desk"
    assert product["image"] == {
        "url": IMAGE.url,
        "alt": "Walnut desk",
        "bytes": str(len(DATA)),  # a rendered template is a string
    }
    assert product["sha256"] == IMAGE.sha256
    assert product["labels"] == ["walnut-desk-cover", "desk"]
    assert product["primary"] is True
    (sent,) = await catalogue.sim("GET", "/_sim/requests")
    assert sent["method"] == "PATCH"
    assert sent["headers"]["x-darkroom-event"] == "product.created"
    assert sent["headers"]["content-type"] == "application/json"


async def test_a_missing_secret_is_permanent_and_sends_nothing(catalogue: Catalogue) -> None:
    error = await catalogue.failure(env={})
    assert error.permanent
    assert error.message == "environment variable CATALOGUE_AUTH is not set"
    assert await catalogue.sim("GET", "/_sim/requests") == []


async def test_a_template_error_is_permanent_and_sends_nothing(catalogue: Catalogue) -> None:
    error = await catalogue.failure(body={"name": "{{ subtitle }}"})
    assert error.permanent
    assert "body.name" in error.message
    assert "subtitle" in error.message
    error = await catalogue.failure(url="{{ slug }}/products")
    assert error.permanent
    assert "not an http(s) URL" in error.message
    assert await catalogue.sim("GET", "/_sim/requests") == []


async def test_receiver_refusals_are_permanent(catalogue: Catalogue) -> None:
    wrong = await catalogue.failure(env={"CATALOGUE_AUTH": "Bearer wrong-token"})
    assert (wrong.permanent, wrong.status_code) == (True, 401)
    assert "invalid or missing bearer token" in wrong.message
    missing = await catalogue.failure(url=catalogue.url + "/products/sku-404")
    assert (missing.permanent, missing.status_code) == (True, 404)
    assert "product sku-404 not found" in missing.message
    for status in (403, 410, 422):
        await catalogue.sim("POST", "/_sim/faults", {"status": status, "body": {"error": "no"}})
        error = await catalogue.failure()
        assert (error.permanent, error.status_code) == (True, status)


async def test_a_redirect_is_not_followed(catalogue: Catalogue) -> None:
    moved = {"status": 301, "headers": {"Location": "https://elsewhere.example.com/p/1"}}
    await catalogue.sim("POST", "/_sim/faults", moved)
    error = await catalogue.failure()
    assert (error.permanent, error.status_code) == (True, 301)
    assert "https://elsewhere.example.com/p/1" in error.message
    assert (await catalogue.sim("GET", "/_sim/state"))["history"]["sku-1"] == []


async def test_outages_and_rate_limits_are_retryable(catalogue: Catalogue) -> None:
    await catalogue.sim("POST", "/_sim/faults", {"status": 503})
    error = await catalogue.failure()
    assert (error.permanent, error.status_code, error.retry_after_s) == (False, 503, None)
    limited = {"status": 429, "headers": {"Retry-After": "12"}, "body": {"error": "slow"}}
    await catalogue.sim("POST", "/_sim/faults", limited)
    error = await catalogue.failure()
    assert (error.permanent, error.retry_after_s) == (False, 12.0)
    await catalogue.sim("POST", "/_sim/faults", {"status": "hang", "seconds": 5})
    config = GenericWriteback.model_validate(block(catalogue.url))
    async with httpx.AsyncClient(timeout=0.5) as impatient:
        with pytest.raises(WritebackError) as raised:
            await WRITER.write_back(impatient, config, ARTICLE, IMAGE, ENV)
    assert not raised.value.permanent
    assert "ReadTimeout" in raised.value.message
    assert (await catalogue.write())["status"] == 200  # and then it goes through


async def test_a_secret_echoed_back_is_blanked(catalogue: Catalogue) -> None:
    echo = {"status": 400, "body": {"error": f"header Authorization: Bearer {TOKEN} refused"}}
    await catalogue.sim("POST", "/_sim/faults", echo)
    error = await catalogue.failure()
    assert error.permanent
    assert TOKEN not in error.message
    assert "[redacted]" in error.message


def test_the_block_is_checked_when_saved() -> None:
    url = "https://shop.example.com"
    config = GenericWriteback.model_validate(block(url))
    assert config.method == "PATCH"
    for bad in (
        block(url, extra="x"),
        block(url, method="DELETE"),
        block(url, url="{{ unclosed"),
        block(url, headers={"X-A": "{% if %}"}),
        block(url, headers={"Host": "evil.example.com"}),
        block(url, headers={"Bad Name": "x"}),
        block(url, headers={"Authorization": {"env": "not a name"}}),
        block(url, headers={"Authorization": {"env": "A", "default": "x"}}),
        block(url, body={"deep": ["{{ broken"]}),
    ):
        with pytest.raises(ValidationError):
            GenericWriteback.model_validate(bad)


def test_the_template_variables() -> None:
    variables = template_variables(ARTICLE, IMAGE)
    assert variables["title"] == "Walnut desk"
    assert variables["output"] == {
        "url": IMAGE.url,
        "content_type": "image/png",
        "bytes": len(DATA),
        "sha256": IMAGE.sha256,
        "filename": "walnut-desk-cover.png",
    }
    assert variables["ref"] == {"product_id": "sku-1"}
    assert variables["event_type"] == "product.created"
