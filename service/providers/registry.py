"""Which models exist, which provider account serves each, and the account's limits.

Built from the configuration (service.providers.config): jobs name models by their keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from service.providers.account import AccountConfig, Limits
from service.providers.base import InputRole, MediaKind, Provider
from service.providers.catalogue import build_provider
from service.providers.config import DarkroomConfig, load_config
from service.providers.kinds import ProviderDeps


@dataclass(frozen=True)
class ModelSpec:
    name: str
    provider: str
    ref: str
    price_per_image: Decimal = Decimal(0)
    price_per_second: Decimal = Decimal(0)
    max_attempts: int = 3
    deadline_s: float = 900.0
    media: MediaKind = "image"
    inject: dict[str, str] = field(default_factory=dict)
    # The input images (reference, mask) this model takes.
    inputs: frozenset[InputRole] = frozenset()

    def price(self, duration_s: float | None) -> Decimal:
        """What one output is expected to cost: per image, or per second of video."""
        if self.media == "video" and duration_s is not None and self.price_per_second:
            return (self.price_per_second * Decimal(str(duration_s))).quantize(Decimal("0.000001"))
        return self.price_per_image


@dataclass
class ProviderRegistry:
    models: dict[str, ModelSpec]
    providers: dict[str, Provider] = field(default_factory=dict)
    accounts: dict[str, AccountConfig] = field(default_factory=dict)

    def model(self, name: str) -> ModelSpec | None:
        return self.models.get(name)

    def provider_for(self, spec: ModelSpec) -> Provider:
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


def build_registry(config: DarkroomConfig, deps: ProviderDeps | None = None) -> ProviderRegistry:
    providers = {
        name: build_provider(name, account, deps) for name, account in config.providers.items()
    }
    return ProviderRegistry(
        models={
            name: ModelSpec(
                name=name,
                provider=model.provider,
                ref=model.ref,
                price_per_image=model.price.per_image,
                price_per_second=model.price.per_second,
                max_attempts=model.max_attempts,
                deadline_s=model.deadline_s,
                media=model.media,
                inject=dict(model.inject),
                inputs=providers[model.provider].model_inputs(model.inject),
            )
            for name, model in config.models.items()
        },
        providers=providers,
        accounts=dict(config.providers),
    )


def default_registry() -> ProviderRegistry:
    return build_registry(load_config(None))
