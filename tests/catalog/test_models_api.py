"""GET /v1/models, /v1/models/{name} and /v1/routes from a configuration that declares
capabilities, prices and routes: what a caller sees, live health included, and never a
credential."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.catalog import health
from service.state import State
from tests.conftest import Caller
from tests.jobs.sim_accounts import use_config

TOKEN_ENV = "DARKROOM_TEST_MODELS_TOKEN"
TOKEN = "r8_secret-token-never-shown"
MISSING_ENV = "DARKROOM_TEST_MODELS_UNSET_TOKEN"
NOWHERE = "http://127.0.0.1:9"  # never called: these tests only read the registry

CONFIG: dict[str, Any] = {
    "providers": {
        "replicate": {"kind": "replicate", "base_url": NOWHERE, "token_env": TOKEN_ENV},
        "openai": {"kind": "openai", "base_url": NOWHERE + "/v1", "token_env": MISSING_ENV},
    },
    "models": {
        "flux-schnell": {
            "provider": "replicate",
            "ref": "black-forest-labs/flux-schnell",
            "media": "image",
            "tasks": ["text-to-image"],
            "sizes": {"aspect_ratios": ["1:1", "16:9"]},
            "max_reference_images": 0,
            "negative_prompt": False,
            "options": {"num_inference_steps": {"type": "int", "min": 1, "max": 4}},
            "price": {"per_image": 0.003},
            "fallbacks": ["gpt-image-1"],
        },
        "gpt-image-1": {
            "provider": "openai",
            "ref": "gpt-image-1",
            "sizes": {"list": ["1024x1024", "1536x1024"]},
            "formats": ["png", "webp"],
            "price": {"per_token": {"input": 5, "output": 40}, "estimate": 0.04},
            "charged_on_failure": True,
            "max_attempts": 2,
            "deadline_s": 120,
        },
        "seedance": {
            "provider": "replicate",
            "ref": "bytedance/seedance-1-lite",
            "media": "video",
            "durations": [5, 10],
            "fps": {"min": 12, "max": 30},
            "resolutions": ["720p", "480p"],
            "price": {"per_second": 0.036},
        },
    },
    "routes": {
        "cover-image": {
            "strategy": "first",
            "candidates": [
                {"model": "seedance", "when": {"media": "video"}},
                {"model": "flux-schnell", "weight": 2},
            ],
            "fallbacks": ["gpt-image-1"],
        }
    },
    "health": {"window": 10, "threshold": 0.5, "min_attempts": 4, "cooldown_s": 300},
}


@pytest.fixture
async def configured(state: State, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> State:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    monkeypatch.delenv(MISSING_ENV, raising=False)
    await use_config(state, json.dumps(CONFIG), tmp_path)
    return state


async def get(client: httpx.AsyncClient, caller: Caller, path: str) -> Any:
    response = await client.get(path, headers=caller.headers)
    assert response.status_code == 200, response.text
    assert TOKEN not in response.text
    assert TOKEN_ENV not in response.text
    return response.json()


async def test_models_need_an_api_key(client: httpx.AsyncClient, configured: State) -> None:
    for path in ("/v1/models", "/v1/models/flux-schnell", "/v1/routes"):
        response = await client.get(path)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"


async def test_every_model_is_listed_by_name_with_its_capabilities_and_price(
    client: httpx.AsyncClient, caller: Caller, configured: State
) -> None:
    items = (await get(client, caller, "/v1/models"))["items"]

    names = [item["name"] for item in items]
    assert names == sorted(names)
    assert set(names) == {
        "flux-schnell",
        "gpt-image-1",
        "seedance",
        "local/procedural",
        "local/procedural-video",
    }
    by_name = {item["name"]: item for item in items}
    flux = by_name["flux-schnell"]
    assert flux["account"] == "replicate"
    assert flux["kind"] == "replicate"
    assert flux["ref"] == "black-forest-labs/flux-schnell"
    assert flux["media"] == "image"
    assert flux["tasks"] == ["text-to-image"]
    assert flux["sizes"] == {
        "aspect_ratios": ["1:1", "16:9"],
        "min": None,
        "max": None,
        "multiple_of": None,
        "list": None,
    }
    assert flux["max_reference_images"] == 0
    assert "reference" not in flux["inputs"]
    assert flux["negative_prompt"] is False
    assert flux["seed"] is True
    assert flux["options"] == {
        "num_inference_steps": {
            "type": "int",
            "min": 1.0,
            "max": 4.0,
            "values": None,
            "description": None,
        }
    }
    assert flux["price"] == {
        "per_image": 0.003,
        "per_megapixel": 0.0,
        "per_second": 0.0,
        "per_run_second": 0.0,
        "per_token": None,
        "estimate": None,
    }
    assert flux["charged_on_failure"] is False
    assert flux["fallbacks"] == ["gpt-image-1"]
    assert flux["max_attempts"] == 3
    assert flux["available"] is True
    assert flux["health"] == {
        "attempts": 0,
        "failures": 0,
        "error_rate": None,
        "latency_ms_mean": None,
        "latency_ms_p50": None,
        "latency_ms_p95": None,
        "cooled_down": False,
        "cooled_down_for_s": 0.0,
    }

    gpt = by_name["gpt-image-1"]
    assert (gpt["account"], gpt["kind"]) == ("openai", "openai")
    assert gpt["sizes"]["list"] == ["1024x1024", "1536x1024"]
    assert gpt["formats"] == ["png", "webp"]
    assert gpt["options"] is None
    assert gpt["price"]["per_token"] == {"input": 5.0, "output": 40.0}
    assert gpt["price"]["estimate"] == 0.04
    assert gpt["charged_on_failure"] is True
    assert (gpt["max_attempts"], gpt["deadline_s"]) == (2, 120.0)
    assert gpt["available"] is False  # its token's variable is not set

    video = by_name["seedance"]
    assert video["media"] == "video"
    assert "text-to-video" in video["tasks"]
    assert video["durations"] == [5.0, 10.0]
    assert video["fps"] == {"min": 12.0, "max": 30.0}
    assert video["resolutions"] == ["480p", "720p"]
    assert video["price"]["per_second"] == 0.036
    assert video["sizes"] is None

    local = by_name["local/procedural"]
    assert (local["account"], local["kind"], local["available"]) == ("local", "local", True)


async def test_one_model_by_a_name_with_a_slash(
    client: httpx.AsyncClient, caller: Caller, configured: State
) -> None:
    model = await get(client, caller, "/v1/models/local/procedural")
    assert model["name"] == "local/procedural"
    flux = await get(client, caller, "/v1/models/flux-schnell")
    assert flux["price"]["per_image"] == 0.003


async def test_an_unknown_model_is_a_404_naming_it(
    client: httpx.AsyncClient, caller: Caller, configured: State
) -> None:
    response = await client.get("/v1/models/acme/nope", headers=caller.headers)
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "unknown_model"
    assert "acme/nope" in error["message"]
    assert error["details"] == [{"field": "name", "message": "unknown model 'acme/nope'"}]
    route = await client.get("/v1/models/cover-image", headers=caller.headers)
    assert route.status_code == 404
    assert "/v1/routes" in route.json()["error"]["message"]


async def test_health_shows_after_outcomes_and_a_cooled_model_shows_it(
    client: httpx.AsyncClient, caller: Caller, configured: State
) -> None:
    config = configured.registry.health
    for latency in (100, 300):
        await health.record(configured.redis, config, "flux-schnell", ok=True, latency_ms=latency)
    await health.record(configured.redis, config, "flux-schnell", ok=False, latency_ms=20)
    for _ in range(config.min_attempts):
        await health.record(configured.redis, config, "seedance", ok=False, latency_ms=None)

    flux = (await get(client, caller, "/v1/models/flux-schnell"))["health"]
    assert flux["attempts"] == 3
    assert flux["failures"] == 1
    assert flux["error_rate"] == pytest.approx(1 / 3, abs=1e-3)
    assert flux["latency_ms_mean"] == 200.0
    assert flux["latency_ms_p50"] == 100
    assert flux["cooled_down"] is False

    items = (await get(client, caller, "/v1/models"))["items"]
    seedance = next(item for item in items if item["name"] == "seedance")["health"]
    assert seedance["cooled_down"] is True
    assert 0 < seedance["cooled_down_for_s"] <= 300
    assert seedance["attempts"] == 0  # a clean slate once it comes back


async def test_routes_are_listed_with_their_candidates(
    client: httpx.AsyncClient, caller: Caller, configured: State
) -> None:
    items = (await get(client, caller, "/v1/routes"))["items"]
    assert len(items) == 1
    route = items[0]
    assert route["name"] == "cover-image"
    assert route["strategy"] == "first"
    assert route["fallbacks"] == ["gpt-image-1"]
    video, flux = route["candidates"]
    assert video["model"] == "seedance"
    assert video["when"]["media"] == "video"
    assert video["when"]["has_reference_images"] is None
    assert video["weight"] == 1.0
    assert flux == {"model": "flux-schnell", "when": None, "weight": 2.0}
