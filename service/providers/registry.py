"""Which models exist and which provider serves each.

Issue #2 ships one model, `local/procedural`; #3 loads more from the YAML file named
by DARKROOM_CONFIG. Jobs name models by these keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from service.providers.base import ImageProvider
from service.providers.local import LocalRenderer


@dataclass(frozen=True)
class ModelSpec:
    name: str
    provider: str
    ref: str
    price_per_image: Decimal = Decimal(0)


@dataclass
class ProviderRegistry:
    models: dict[str, ModelSpec]
    providers: dict[str, ImageProvider] = field(default_factory=dict)

    def model(self, name: str) -> ModelSpec | None:
        return self.models.get(name)

    def provider_for(self, spec: ModelSpec) -> ImageProvider:
        return self.providers[spec.provider]


def default_registry() -> ProviderRegistry:
    local = LocalRenderer()
    return ProviderRegistry(
        models={
            "local/procedural": ModelSpec("local/procedural", provider="local", ref="procedural")
        },
        providers={local.name: local},
    )
