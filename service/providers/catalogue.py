"""The registry of provider kinds: every API Darkroom speaks, by the name configs use.

Adding a provider is its module (with its `KIND`), its simulator, and one line here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Field, TypeAdapter

from service.providers import (
    atlas,
    comfyui,
    command,
    declarative,
    fal,
    local,
    openai,
    replicate,
)
from service.providers.account import AccountConfig
from service.providers.base import Provider
from service.providers.kinds import AnyKind, ProviderDeps

KINDS: dict[str, AnyKind] = {
    kind.name: kind
    for kind in (
        local.KIND,
        openai.KIND,
        replicate.KIND,
        atlas.KIND,
        comfyui.KIND,
        fal.KIND,
        declarative.KIND,
        command.KIND,
    )
}

if TYPE_CHECKING:
    ProviderConfig = AccountConfig
else:  # one config model per kind, chosen by the account's `kind`
    ProviderConfig = Annotated[
        Union[tuple(kind.config for kind in KINDS.values())],  # noqa: UP007
        Field(discriminator="kind"),
    ]


def build_provider(name: str, config: AccountConfig, deps: ProviderDeps | None = None) -> Provider:
    """A missing token is not an error here (the service starts without keys); the
    provider's first call fails with `provider_not_configured` naming the variable."""
    return KINDS[config.kind].build(name, config, deps or ProviderDeps())


def account_config(raw: Mapping[str, Any]) -> AccountConfig:
    """One account's configuration, validated against the config model of its kind."""
    config: AccountConfig = TypeAdapter(ProviderConfig).validate_python(raw)
    return config
