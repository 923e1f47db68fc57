"""Finding a prediction whose create lost its answer, through Replicate's listing
(GET /v1/predictions: newest first, pages linked by `next`), against the simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest

from service.kit.base import utcnow
from service.providers.base import GenerationRequest, ProviderRetryableError
from service.providers.catalogue import account_config
from service.providers.replicate import ReplicateProvider
from simulators import SimConfig, SimulatorHandle, run_simulator

TOKEN_ENV = "DARKROOM_TEST_REPLICATE_TOKEN"
MODEL = "black-forest-labs/flux-schnell"


@pytest.fixture
async def sim(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SimulatorHandle]:
    monkeypatch.setenv(TOKEN_ENV, "sim-token")
    config = SimConfig(latency={"kind": "fixed", "s": 30}, list_page_size=2)
    async with run_simulator(config) as sim:
        yield sim


@pytest.fixture
async def provider(sim: SimulatorHandle) -> AsyncIterator[ReplicateProvider]:
    account = account_config(
        {"kind": "replicate", "base_url": sim.url, "token_env": TOKEN_ENV, "timeout_s": 5}
    )
    provider = ReplicateProvider("replicate", account)
    yield provider
    await provider.aclose()


def request(seed: int, model: str = MODEL) -> GenerationRequest:
    return GenerationRequest(
        prompt="a lighthouse", model_ref=model, width=512, height=512, format="png", seed=seed
    )


async def list_requests(sim: SimulatorHandle) -> int:
    return int((await sim.stats())["requests_by_route"].get("GET /v1/predictions", 0))


async def test_a_reset_create_is_found_and_nothing_else_is(
    sim: SimulatorHandle, provider: ReplicateProvider
) -> None:
    since = utcnow() - timedelta(seconds=1)
    made = [await provider.submit(request(seed)) for seed in range(3)]
    await sim.configure(reset=1.0)
    with pytest.raises(ProviderRetryableError) as lost:
        await provider.submit(request(7))
    assert lost.value.code == "connection_error"
    await sim.configure(reset=0.0)
    for seed in range(8, 11):  # made after it: the lookup pages past them
        await provider.submit(request(seed))

    found = await provider.find_submitted(request(7), since, exclude=frozenset())
    assert found is not None
    assert found.status == "pending"
    assert found.id not in {remote.id for remote in made}
    assert (await provider.poll(found)).data["input"]["seed"] == 7
    assert await list_requests(sim) == 2  # four newer ones on two pages of two, then it

    # An earlier attempt's prediction is not taken for the lost one...
    assert await provider.find_submitted(request(7), since, exclude=frozenset({found.id})) is None
    # ...nor is a prediction of another input, model or version.
    assert await provider.find_submitted(request(99), since, exclude=frozenset()) is None
    other_model = request(7, "black-forest-labs/flux-dev")
    assert await provider.find_submitted(other_model, since, exclude=frozenset()) is None
    assert await provider.find_submitted(request(0), since, exclude=frozenset()) is not None
    stats = await sim.stats()
    assert stats["creations_accepted"] == 7
    assert stats["duplicate_submissions"] == 0


async def test_the_lookup_stops_at_its_window(
    sim: SimulatorHandle, provider: ReplicateProvider
) -> None:
    for seed in range(6):
        await provider.submit(request(seed))
    before = await list_requests(sim)
    later = utcnow() + timedelta(seconds=5)
    assert await provider.find_submitted(request(0), later, exclude=frozenset()) is None
    assert await list_requests(sim) == before + 1


async def test_the_listing_is_newest_first_paged_and_filtered(
    sim: SimulatorHandle, provider: ReplicateProvider
) -> None:
    ids = [(await provider.submit(request(seed))).id for seed in range(5)]
    async with httpx.AsyncClient(base_url=sim.url) as client:
        refused = await client.get("/v1/predictions")
        assert refused.status_code == 401
        headers = {"Authorization": "Bearer sim-token"}
        seen: list[str] = []
        url: str | None = "/v1/predictions"
        while url is not None:
            page = (await client.get(url, headers=headers)).json()
            assert page["previous"] is None
            assert len(page["results"]) <= 2
            seen += [item["id"] for item in page["results"]]
            assert all("logs" not in item for item in page["results"])
            url = page["next"]
        assert seen == ids[::-1]

        future = (utcnow() + timedelta(minutes=1)).isoformat()
        empty = await client.get(
            "/v1/predictions", params={"created_after": future}, headers=headers
        )
        assert empty.json() == {"previous": None, "next": None, "results": []}
        bad = await client.get("/v1/predictions", params={"cursor": "%%%"}, headers=headers)
        assert bad.status_code == 400
        bad = await client.get("/v1/predictions", params={"created_after": "x"}, headers=headers)
        assert bad.status_code == 400
