"""Which models exist, which provider account serves each, and the account's limits.

Built from the configuration (service.providers.config): jobs name models by their keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from service.providers.base import ImageProvider
from service.providers.build import build_provider
from service.providers.config import DarkroomConfig, Limits, ProviderAccount, load_config


@dataclass(frozen=True)
class ModelSpec:
    name: str
    provider: str
    ref: str
    price_per_image: Decimal = Decimal(0)
    max_attempts: int = 3
    deadline_s: float = 900.0


@dataclass
class ProviderRegistry:
    models: dict[str, ModelSpec]
    providers: dict[str, ImageProvider] = field(default_factory=dict)
    accounts: dict[str, ProviderAccount] = field(default_factory=dict)

    def model(self, name: str) -> ModelSpec | None:
        return self.models.get(name)

    def provider_for(self, spec: ModelSpec) -> ImageProvider:
        return self.providers[spec.provider]

    def limits(self, account: str) -> Limits:
        config = self.accounts.get(account)
        return config.limits if config is not None else Limits()

    def timeout_s(self, account: str) -> float:
        config = self.accounts.get(account)
        return config.timeout_s if config is not None else 120.0

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()


def build_registry(config: DarkroomConfig) -> ProviderRegistry:
    return ProviderRegistry(
        models={
            name: ModelSpec(
                name=name,
                provider=model.provider,
                ref=model.ref,
                price_per_image=model.price.per_image,
                max_attempts=model.max_attempts,
                deadline_s=model.deadline_s,
            )
            for name, model in config.models.items()
        },
        providers={
            name: build_provider(name, account) for name, account in config.providers.items()
        },
        accounts=dict(config.providers),
    )


def default_registry() -> ProviderRegistry:
    return build_registry(load_config(None))
