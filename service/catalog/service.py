"""The registry as callers see it: every model with its account, capabilities, price and
live health (one Redis round trip for all of them), and the routes.

Nothing here reads a credential's value beyond whether it is set."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from service.catalog import health
from service.catalog.config import NumberRange, Price, RouteConfig, Sizes
from service.catalog.schemas import (
    CandidateOut,
    ConditionOut,
    ModelHealthOut,
    ModelList,
    ModelOut,
    OptionOut,
    PriceOut,
    RangeOut,
    RouteList,
    RouteOut,
    SizesOut,
    TokenPriceOut,
)
from service.kit.errors import ErrorDetail, NotFound
from service.providers.registry import ModelSpec, ProviderRegistry
from service.state import State


async def list_models(state: State) -> ModelList:
    registry = state.registry
    names = sorted(registry.models)
    healths = await health.snapshot(state.redis, registry.health, names)
    return ModelList(
        items=[model_out(registry, registry.models[name], healths[name]) for name in names]
    )


async def get_model(state: State, name: str) -> ModelOut:
    registry = state.registry
    spec = registry.model(name)
    if spec is None:
        hint = "; it is a route (see /v1/routes)" if name in registry.routes else ""
        raise NotFound(
            f"no model {name!r}{hint}",
            code="unknown_model",
            details=[ErrorDetail(field="name", message=f"unknown model {name!r}{hint}")],
        )
    healths = await health.snapshot(state.redis, registry.health, [name])
    return model_out(registry, spec, healths[name])


def list_routes(state: State) -> RouteList:
    routes = state.registry.routes
    return RouteList(items=[route_out(name, routes[name]) for name in sorted(routes)])


def model_out(registry: ProviderRegistry, spec: ModelSpec, seen: health.ModelHealth) -> ModelOut:
    account = registry.accounts.get(spec.provider)
    provider = registry.providers.get(spec.provider)
    kind = account.kind if account is not None else (provider.kind if provider else "")
    return ModelOut(
        name=spec.name,
        account=spec.provider,
        kind=kind,
        ref=spec.ref,
        media=spec.media,
        tasks=sorted(spec.tasks),
        sizes=_sizes(spec.sizes),
        max_reference_images=spec.max_reference_images,
        inputs=sorted(spec.inputs),
        negative_prompt=spec.negative_prompt,
        seed=spec.seed,
        durations=_range(spec.durations),
        fps=_range(spec.fps),
        resolutions=sorted(spec.resolutions) if spec.resolutions is not None else None,
        formats=sorted(spec.formats),
        options=(
            {name: OptionOut(**option.model_dump()) for name, option in spec.options.items()}
            if spec.options is not None
            else None
        ),
        price=_price(spec.price),
        charged_on_failure=spec.charged_on_failure,
        fallbacks=list(spec.fallbacks),
        max_attempts=spec.max_attempts,
        deadline_s=spec.deadline_s,
        available=account is None or not account.missing_env(),
        health=ModelHealthOut(**dataclasses.asdict(seen), cooled_down=seen.cooled_down),
    )


def route_out(name: str, route: RouteConfig) -> RouteOut:
    return RouteOut(
        name=name,
        strategy=route.strategy,
        candidates=[
            CandidateOut(
                model=candidate.model,
                when=ConditionOut(**candidate.when.model_dump()) if candidate.when else None,
                weight=candidate.weight,
            )
            for candidate in route.candidates
        ],
        fallbacks=list(route.fallbacks),
    )


def _sizes(sizes: Sizes | None) -> SizesOut | None:
    if sizes is None:
        return None
    return SizesOut(
        aspect_ratios=sizes.aspect_ratios,
        min=sizes.min,
        max=sizes.max,
        multiple_of=sizes.multiple_of,
        list_=sizes.list_,
    )


def _range(
    value: list[float] | list[int] | NumberRange | None,
) -> list[float] | list[int] | RangeOut | None:
    if isinstance(value, NumberRange):
        return RangeOut(min=value.min, max=value.max)
    return value


def _price(price: Price) -> PriceOut:
    tokens = price.per_token
    return PriceOut(
        per_image=_usd(price.per_image),
        per_megapixel=_usd(price.per_megapixel),
        per_second=_usd(price.per_second),
        per_run_second=_usd(price.per_run_second),
        per_token=(
            TokenPriceOut(input=_usd(tokens.input), output=_usd(tokens.output))
            if tokens is not None
            else None
        ),
        estimate=_usd(price.estimate) if price.estimate is not None else None,
    )


def _usd(amount: Decimal) -> float:
    return float(amount)
