"""The HTTP request histogram (by route template, never the raw path), request ids on
every answer (given or generated, 500s included) and in the request's log lines, and
the optional bearer token of /metrics."""

from __future__ import annotations

import uuid

import httpx
import pytest

from service.app import create_app
from service.state import State
from tests.conftest import Caller
from tests.metrics.scraping import scrape, total, value

HISTOGRAM = "darkroom_http_request_duration_seconds_count"


async def test_requests_are_counted_by_route_template(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    before = await scrape(client)
    for _ in range(2):
        missing = await client.get(f"/v1/batches/{uuid.uuid4()}", headers=caller.headers)
        assert missing.status_code == 404
    assert (await client.get(f"/no/such/{uuid.uuid4()}")).status_code == 404
    after = await scrape(client)

    route = {"route": "/v1/batches/{batch_id}", "method": "GET", "status": "404"}
    assert value(after, HISTOGRAM, **route) - value(before, HISTOGRAM, **route) == 2
    unmatched = {"route": "unmatched", "method": "GET", "status": "404"}
    assert value(after, HISTOGRAM, **unmatched) - value(before, HISTOGRAM, **unmatched) == 1
    # No raw path ever became a label.
    assert not any("/no/such" in str(labels) for _, labels in after)
    assert total(after, HISTOGRAM, route="/metrics") >= 1


SANE = "checkout-7f3a:req/42"
INSANE = {
    "too long": "a" * 129,
    "a space": "two words",
    "a quote": 'say"hi',
    "empty": "",
}


async def test_a_sane_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"x-request-id": SANE})
    assert response.headers["x-request-id"] == SANE


async def test_an_insane_request_id_is_replaced(client: httpx.AsyncClient) -> None:
    for why, given in INSANE.items():
        response = await client.get("/healthz", headers={"x-request-id": given})
        generated = response.headers["x-request-id"]
        assert generated != given, why
        assert len(generated) == 32, why
        assert int(generated, 16) >= 0, why


async def test_every_answer_carries_an_id_and_every_line_of_the_request_has_it(
    state: State, capfd: pytest.CaptureFixture[str]
) -> None:
    app = create_app(state.settings)
    app.state.darkroom = state

    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/boom", boom)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        generated = await client.get("/healthz")
        unauthorised = await client.get("/v1/batches", headers={"x-request-id": "req-401"})
        crashed = await client.get("/boom", headers={"x-request-id": "req-500"})

    assert len(generated.headers["x-request-id"]) == 32
    assert unauthorised.status_code == 401
    assert unauthorised.headers["x-request-id"] == "req-401"
    assert crashed.status_code == 500
    assert crashed.json()["error"]["code"] == "internal_error"
    assert crashed.headers["x-request-id"] == "req-500"

    lines = capfd.readouterr().err.splitlines()
    failure = [line for line in lines if "unhandled_error" in line]
    assert failure, lines
    assert all("request_id=req-500" in line for line in failure)
    access = [line for line in lines if " request " in line and "path=/boom" in line]
    assert access, lines
    assert "request_id=req-500" in access[0]
    assert "status=500" in access[0]
    assert any("request_id=req-401" in line and "status=401" in line for line in lines)


async def test_the_metrics_token_is_asked_for_when_set(client: httpx.AsyncClient) -> None:
    token = "m" * 32
    client._transport.app.state.darkroom.settings.metrics_token = token  # type: ignore[attr-defined]
    try:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": token}):
            refused = await client.get("/metrics", headers=headers)
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "unauthorized"
            assert refused.headers["www-authenticate"] == "Bearer"
        await scrape(client, {"authorization": f"Bearer {token}"})
    finally:
        client._transport.app.state.darkroom.settings.metrics_token = None  # type: ignore[attr-defined]


async def test_metrics_is_not_in_the_api_schema(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert "/metrics" not in schema["paths"]
