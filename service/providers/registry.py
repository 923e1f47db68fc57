"""Which models exist, what each can do and costs, which provider account serves each,
the routes that pick a model, and the budgets.

Built from the configuration (service.providers.config): jobs name models (or routes) by
their keys. A capability a model does not declare is taken from its provider account.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from service.catalog.config import (
    VIDEO_TASKS,
    Budgets,
    Health,
    ModelConfig,
    NumberRange,
    Option,
    Price,
    ResolutionName,
    RouteConfig,
    Sizes,
    Task,
)
from service.providers.account import AccountConfig, Limits
from service.providers.base import MEDIA_OF_FORMAT, InputRole, MediaKind, Provider
from service.providers.catalogue import build_provider
from service.providers.config import DarkroomConfig, load_config
from service.providers.kinds import ProviderDeps

# A model that takes reference images and does not say how many takes up to this.
DEFAULT_MAX_REFERENCES = 8


@dataclass(frozen=True)
class ModelSpec:
    """A model with every capability resolved (what it declares, else its account's)."""

    name: str
    provider: str
    ref: str
    price: Price = field(default_factory=Price)
    max_attempts: int = 3
    deadline_s: float = 900.0
    media: MediaKind = "image"
    inject: Mapping[str, str] = field(default_factory=dict)
    # The input images (reference, mask) this model takes.
    inputs: frozenset[InputRole] = frozenset()
    tasks: frozenset[Task] = frozenset({"text-to-image"})
    sizes: Sizes | None = None
    max_reference_images: int = 0
    negative_prompt: bool = True
    seed: bool = True
    durations: list[float] | NumberRange | None = None
    fps: list[int] | NumberRange | None = None
    resolutions: frozenset[ResolutionName] | None = None
    formats: frozenset[str] = frozenset({"png", "jpeg", "webp"})
    # None: any options pass through to the provider; a mapping: only these.
    options: Mapping[str, Option] | None = None
    charged_on_failure: bool = False
    fallbacks: tuple[str, ...] = ()


def model_spec(name: str, model: ModelConfig, provider: Provider) -> ModelSpec:
    inputs = provider.model_inputs(model.inject)
    if model.max_reference_images == 0:
        inputs = inputs - {"reference"}
    takes_reference = "reference" in inputs
    max_references = model.max_reference_images
    if max_references is None:
        max_references = DEFAULT_MAX_REFERENCES if takes_reference else 0
    formats = frozenset(
        fmt
        for fmt in (model.formats or provider.capabilities.formats)
        if MEDIA_OF_FORMAT.get(fmt) == model.media
    )
    return ModelSpec(
        name=name,
        provider=model.provider,
        ref=model.ref,
        price=model.price,
        max_attempts=model.max_attempts,
        deadline_s=model.deadline_s,
        media=model.media,
        inject=dict(model.inject),
        inputs=inputs,
        tasks=frozenset(model.tasks) if model.tasks else _default_tasks(model.media, inputs),
        sizes=model.sizes,
        max_reference_images=max_references,
        negative_prompt=model.negative_prompt,
        seed=model.seed,
        durations=model.durations,
        fps=model.fps,
        resolutions=frozenset(model.resolutions) if model.resolutions else None,
        formats=formats or frozenset(f for f, m in MEDIA_OF_FORMAT.items() if m == model.media),
        options=dict(model.options) if model.options is not None else None,
        charged_on_failure=model.charged_on_failure,
        fallbacks=tuple(model.fallbacks),
    )


def _default_tasks(media: MediaKind, inputs: frozenset[InputRole]) -> frozenset[Task]:
    if media == "video":
        video: set[Task] = {"text-to-video"}
        if "reference" in inputs:
            video.add("image-to-video")
        return frozenset(video)
    image: set[Task] = {"text-to-image"}
    if "reference" in inputs:
        image.add("image-to-image")
    if "mask" in inputs:
        image.add("inpaint")
    return frozenset(image)


def is_video_task(task: Task) -> bool:
    return task in VIDEO_TASKS


@dataclass
class ProviderRegistry:
    models: dict[str, ModelSpec]
    providers: dict[str, Provider] = field(default_factory=dict)
    accounts: dict[str, AccountConfig] = field(default_factory=dict)
    routes: dict[str, RouteConfig] = field(default_factory=dict)
    budgets: Budgets = field(default_factory=Budgets)
    health: Health = field(default_factory=Health)

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
            name: model_spec(name, model, providers[model.provider])
            for name, model in config.models.items()
        },
        providers=providers,
        accounts=dict(config.providers),
        routes=dict(config.routes),
        budgets=config.budgets,
        health=config.health,
    )


def default_registry() -> ProviderRegistry:
    return build_registry(load_config(None))
