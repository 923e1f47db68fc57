"""The providers and models file: shipped defaults, a file of one's own, and errors that
say where the file is wrong."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from service.providers.config import ConfigError, load_config
from service.providers.registry import build_registry
from tests.conftest import Caller


def test_the_shipped_defaults_are_the_issues_contract() -> None:
    config = load_config(None)
    replicate = config.providers["replicate"]
    assert (replicate.kind, replicate.base_url, replicate.token_env) == (
        "replicate",
        "https://api.replicate.com",
        "REPLICATE_API_TOKEN",
    )
    assert replicate.limits.model_dump() == {"rate_per_s": 10, "burst": 10, "max_concurrent": 50}
    openai = config.providers["openai"]
    assert openai.base_url == "https://api.openai.com/v1"
    assert openai.limits.model_dump() == {"rate_per_s": 5, "burst": 5, "max_concurrent": 10}
    assert config.models["flux-schnell"].ref == "black-forest-labs/flux-schnell"
    gpt = config.models["gpt-image-1"]
    assert gpt.price.per_token is not None
    assert (gpt.price.per_token.input, gpt.price.per_token.output) == (10, 40)
    assert gpt.sizes is not None
    assert gpt.sizes.exact() == [(1024, 1024), (1536, 1024), (1024, 1536)]
    flux = config.models["flux-schnell"]
    assert flux.price.per_image == Decimal("0.003")
    assert flux.sizes is not None
    assert "16:9" in (flux.sizes.aspect_ratios or [])
    assert flux.max_reference_images == 0
    assert config.models["local/procedural"].provider == "local"


def test_a_file_replaces_the_defaults_and_local_is_always_there(tmp_path: Path) -> None:
    path = tmp_path / "darkroom.yaml"
    path.write_text(
        "providers:\n"
        "  second-replicate:\n"
        "    kind: replicate\n"
        "    base_url: https://replicate.example\n"
        "    token_env: SECOND_TOKEN\n"
        "    limits: {rate_per_s: 2.5, max_concurrent: 3}\n"
        "models:\n"
        "  sdxl: {provider: second-replicate, ref: stability-ai/sdxl, price: {per_image: 0.01}}\n"
    )
    config = load_config(path)
    assert set(config.providers) == {"second-replicate", "local"}
    assert set(config.models) == {"sdxl", "local/procedural", "local/procedural-video"}
    registry = build_registry(config)
    assert registry.limits("second-replicate").rate_per_s == 2.5
    assert registry.limits("second-replicate").burst == 1
    spec = registry.model("sdxl")
    assert spec is not None
    assert (spec.provider, spec.price.per_image) == ("second-replicate", Decimal("0.01"))
    assert registry.providers["second-replicate"].kind == "replicate"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("providers: [1, 2", "not valid YAML"),
        ("- just a list", "expected a mapping"),
        ("models:\n  m: {provider: nowhere, ref: x}\n", "models.m.provider: unknown provider"),
        ("providers:\n  p: {kind: midjourney}\n", "providers.p.kind"),
        ("providers:\n  p: {kind: openai, limits: {rate_per_s: -1}}\n", "limits.rate_per_s"),
        ("providers:\n  p: {kind: openai, token: sk-123}\n", "providers.p.token"),
    ],
)
def test_a_broken_file_says_where(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "darkroom.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(path) in str(raised.value)
    assert where in str(raised.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"DARKROOM_CONFIG=.*nope\.yaml"):
        load_config(tmp_path / "nope.yaml")


async def test_jobs_for_a_provider_without_its_token_are_refused(
    client: httpx.AsyncClient, caller: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    body = {"jobs": [{"prompt": "a"}, {"prompt": "b", "model": "flux-schnell"}]}
    response = await client.post("/v1/batches", json=body, headers=caller.headers)
    assert response.status_code == 422
    [detail] = response.json()["error"]["details"]
    assert detail["field"] == "jobs[1].model"
    assert "REPLICATE_API_TOKEN" in detail["message"]


def model_error(tmp_path: Path, capabilities: str) -> str:
    """The error of a file whose one model, m, declares `capabilities` (YAML flow)."""
    path = tmp_path / "darkroom.yaml"
    path.write_text(
        "providers: {local: {kind: local}}\n"
        f"models:\n  m: {{provider: local, ref: procedural, {capabilities}}}\n"
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    return str(raised.value)


@pytest.mark.parametrize(
    ("capabilities", "where", "why"),
    [
        (
            "sizes: {max: 48, multiple_of: 64}",
            "models.m.sizes",
            "multiple_of 64 is larger than max 48",
        ),
        (
            "sizes: {min: 1000, max: 1020, multiple_of: 64}",
            "models.m.sizes",
            "no multiple of 64 lies between 1000 and 1020",
        ),
        (
            "options: {steps: {type: int, values: [1.0, 2.0]}}",
            "models.m.options.steps.values",
            "1.0 is not an integer, as the option's type says",
        ),
        (
            "options: {hd: {type: bool, values: [1, 0]}}",
            "models.m.options.hd.values",
            "1 is not true or false",
        ),
        (
            "options: {sampler: {type: string, values: [euler, 2]}}",
            "models.m.options.sampler.values",
            "2 is not a string",
        ),
        (
            "options: {guidance: {type: float, values: [1.5, .nan]}}",
            "models.m.options.guidance.values",
            "nan is not a number",
        ),
        (
            "options: {steps: {type: int, min: 1, max: 4, values: [2, 8]}}",
            "models.m.options.steps.values",
            "8 is outside min..max",
        ),
        (
            "options: {steps: {type: int, values: []}}",
            "models.m.options.steps.values",
            "at least 1",
        ),
        (
            "options: {steps: {type: int, min: 4, max: 1}}",
            "models.m.options.steps.max",
            "max 1 is below min 4",
        ),
        (
            "options: {hd: {type: bool, min: 0}}",
            "models.m.options.hd.min",
            "a bool option has no min",
        ),
        (
            "options: {sampler: {type: string, max: 3}}",
            "models.m.options.sampler.max",
            "a string option has no max",
        ),
        (
            "options: {guidance: {type: float, min: .nan}}",
            "models.m.options.guidance.min",
            "finite",
        ),
        (
            "options: {guidance: {type: float, max: .inf}}",
            "models.m.options.guidance.max",
            "finite",
        ),
        (
            "tasks: [text-to-image, text-to-video]",
            "models.m.tasks",
            "text-to-video is a video task; this model makes images",
        ),
        (
            "media: video, tasks: [image-to-image]",
            "models.m.tasks",
            "image-to-image is an image task; this model makes videos",
        ),
        (
            "media: video, durations: {min: 10, max: 5}",
            "models.m.durations.range.max",
            "max 5 is below min 10",
        ),
        ("media: video, durations: [5, .inf]", "models.m.durations.list.1", "finite"),
        ("media: video, durations: {max: .nan}", "models.m.durations.range.max", "finite"),
        ("media: video, durations: []", "models.m.durations.list", "at least 1"),
        (
            "media: video, fps: {min: 24.2, max: 24.8}",
            "models.m.fps",
            "no whole fps lies between 24.2 and 24.8",
        ),
        ("deadline_s: .inf", "models.m.deadline_s", "finite"),
    ],
)
def test_a_capability_that_cannot_hold_is_a_config_error(
    tmp_path: Path, capabilities: str, where: str, why: str
) -> None:
    message = model_error(tmp_path, capabilities)
    assert f"{where}: " in message
    assert why in message


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("health: {cooldown_s: .inf}\n", "health.cooldown_s"),
        ("health: {threshold: .nan}\n", "health.threshold"),
        ("routes: {r: {candidates: [{model: m, weight: .inf}]}}\n", "routes.r.candidates.0.weight"),
        ("routes: {r: {candidates: [{model: m, weight: .nan}]}}\n", "routes.r.candidates.0.weight"),
    ],
)
def test_an_infinite_or_nan_number_is_a_config_error(tmp_path: Path, text: str, where: str) -> None:
    """inf passes every lower bound (a cooldown that never ends), NaN every comparison."""
    path = tmp_path / "darkroom.yaml"
    path.write_text(
        "providers: {local: {kind: local}}\n"
        "models: {m: {provider: local, ref: procedural}}\n" + text
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert f"{where}: " in str(raised.value)
    assert "finite" in str(raised.value)
