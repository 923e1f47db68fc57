"""Provider accounts pointed at the simulator, installed into a test's State."""

from __future__ import annotations

import json
from typing import Any

from service.dispatch.accounts import Dispatch
from service.providers.config import load_config
from service.providers.kinds import ProviderDeps
from service.providers.registry import build_registry
from service.state import State

SIM_TOKEN_ENV = "DARKROOM_TEST_SIM_TOKEN"
FAL_KEY_ENV = "DARKROOM_TEST_FAL_KEY"


def sim_config(
    url: str,
    *,
    replicate_limits: dict[str, Any] | None = None,
    openai_limits: dict[str, Any] | None = None,
    timeout_s: float = 5.0,
    price: float = 0.003,
    max_attempts: int = 3,
    deadline_s: float = 60.0,
) -> str:
    """A DARKROOM_CONFIG for one Replicate and one OpenAI account at the simulator."""
    config = {
        "providers": {
            "replicate": {
                "kind": "replicate",
                "base_url": url,
                "token_env": SIM_TOKEN_ENV,
                "limits": replicate_limits or {},
                "timeout_s": timeout_s,
            },
            "openai": {
                "kind": "openai",
                "base_url": url + "/v1",
                "token_env": SIM_TOKEN_ENV,
                "limits": openai_limits or {},
                "timeout_s": timeout_s,
            },
        },
        "models": {
            "flux-sim": {
                "provider": "replicate",
                "ref": "black-forest-labs/flux-schnell",
                "price": {"per_image": price},
                "max_attempts": max_attempts,
                "deadline_s": deadline_s,
            },
            "flux-sim-pinned": {
                "provider": "replicate",
                "ref": "black-forest-labs/flux-schnell:5599ed30703defd1d160a25a63321b4dec97101d",
                "max_attempts": max_attempts,
            },
            "gpt-sim": {
                "provider": "openai",
                "ref": "gpt-image-1",
                "price": {"per_image": price},
                "max_attempts": max_attempts,
            },
        },
    }
    return json.dumps(config)  # JSON is YAML


def fal_account(url: str) -> dict[str, Any]:
    """A fal account at the fal simulator, its key in FAL_KEY_ENV."""
    return {
        "kind": "fal",
        "base_url": url,
        "token_env": FAL_KEY_ENV,
        "webhook_jwks_url": f"{url}/.well-known/jwks.json",
        "limits": {"rate_per_s": 50},
        "timeout_s": 5,
    }


def account_config(name: str, account: dict[str, Any], models: dict[str, Any]) -> str:
    """A DARKROOM_CONFIG with one provider account, `name`, and its models (each a
    mapping of the model's settings but `provider`)."""
    config = {
        "providers": {name: account},
        "models": {model: {"provider": name, **spec} for model, spec in models.items()},
    }
    return json.dumps(config)  # JSON is YAML


async def use_config(state: State, text: str, tmp_path: Any) -> None:
    """Swap the State's providers for the ones in `text` (also for live servers built
    later from state.settings)."""
    path = tmp_path / "darkroom.yaml"
    path.write_text(text)
    state.settings.config = path
    await state.registry.aclose()
    state.registry = build_registry(
        load_config(path), ProviderDeps(redis=state.redis, settings=state.settings)
    )
    state.dispatch = Dispatch(state.redis, state.registry)
