"""The providers and models file (DARKROOM_CONFIG), with defaults shipped in the package.

Each account is validated against the config model of the kind it names
(service.providers.catalogue). Secrets never live in the file: an account names the
environment variables that hold its token or credentials, read when they are used.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import ErrorDetails

from service.catalog.config import Budgets, Health, ModelConfig, RouteConfig, check_names
from service.providers.catalogue import KINDS, ProviderConfig


class DarkroomConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    providers: dict[str, ProviderConfig] = {}
    models: dict[str, ModelConfig] = {}
    routes: dict[str, RouteConfig] = {}
    budgets: Budgets = Budgets()
    health: Health = Health()

    @model_validator(mode="after")
    def _names_are_known(self) -> DarkroomConfig:
        check_names(self.models, self.routes, self.budgets, set(self.providers))
        return self


class ConfigError(Exception):
    """The configuration file is missing, unreadable or invalid; the message says where."""


# libyaml's loader where PyYAML has it (its wheels do): every State reads the
# configuration, and the pure-Python loader takes ~25 ms for the shipped defaults.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def default_config_text() -> str:
    return resources.files("service.providers").joinpath("defaults.yaml").read_text()


def parse_config(text: str, *, source: str) -> DarkroomConfig:
    try:
        raw = yaml.load(text, Loader=_LOADER) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: expected a mapping with 'providers', 'models', 'routes' and 'budgets'"
        )
    try:
        return DarkroomConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_problem(err) for err in exc.errors())
        raise ConfigError(f"{source}: {problems}") from exc


def _problem(error: ErrorDetails) -> str:
    where = _where(error["loc"])
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        given = error.get("input", {}).get("kind") if isinstance(error.get("input"), dict) else None
        what = f"unknown kind {given!r}" if given is not None else "no kind given"
        return f"{where}.kind: {what}; the kinds are {', '.join(sorted(KINDS))}"
    return f"{where}: {error['msg']}"


def _where(loc: tuple[int | str, ...]) -> str:
    """The dotted path of a problem, without the kind pydantic puts after the account name
    (providers.fal.fal.base_url is providers.fal.base_url)."""
    parts = list(loc)
    if len(parts) > 2 and parts[0] == "providers" and parts[2] in KINDS:
        del parts[2]
    return ".".join(str(part) for part in parts)


def load_config(path: Path | None) -> DarkroomConfig:
    """The shipped defaults, or the file at `path` in their place. The built-in `local`
    account and its `local/procedural` (image) and `local/procedural-video` models are
    always there."""
    if path is None:
        config = parse_config(default_config_text(), source="built-in defaults")
    else:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"DARKROOM_CONFIG={path}: {exc.strerror or exc}") from exc
        config = parse_config(text, source=str(path))
    config.providers.setdefault("local", KINDS["local"].config(kind="local"))
    config.models.setdefault("local/procedural", ModelConfig(provider="local", ref="procedural"))
    config.models.setdefault(
        "local/procedural-video", ModelConfig(provider="local", ref="procedural", media="video")
    )
    return config
