"""How a provider module declares the kind of API it speaks.

Each provider module defines `KIND = Kind(name, config model, factory)`; the catalogue
(service.providers.catalogue) lists them, and that is the whole registration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import httpx

from service.providers.account import AccountConfig
from service.providers.base import Provider

if TYPE_CHECKING:
    from arq.connections import ArqRedis

    from service.config import Settings

ConfigT = TypeVar("ConfigT", bound=AccountConfig)


@dataclass(frozen=True)
class ProviderDeps:
    """What a provider may need besides its configuration.

    `http`: a client to use instead of the provider's own (tests inject one).
    `redis`: state shared by every worker process (OAuth tokens); None in processes that
    never call providers. `settings`: the service's settings (the SSRF guard's
    allow-list for output downloads); None means the process's settings."""

    http: httpx.AsyncClient | None = None
    redis: ArqRedis | None = None
    settings: Settings | None = None


@dataclass(frozen=True)
class Kind(Generic[ConfigT]):
    name: str
    config: type[ConfigT]
    factory: Callable[[str, ConfigT, ProviderDeps], Provider]

    def build(self, name: str, config: AccountConfig, deps: ProviderDeps) -> Provider:
        if not isinstance(config, self.config):
            raise TypeError(f"provider {name!r}: config is not a {self.config.__name__}")
        return self.factory(name, config, deps)


AnyKind = Kind[Any]
