"""Which model a job runs on and what its parameters become for it, decided at submit.

A job names a model or a route. Either way, service.catalog.fit says whether the model
can do what the job asks (and maps what can be mapped). A route picks among its
candidates: those whose condition holds, whose model fits, and that are not cooling
down; by order (`first`), by estimated price (`cheapest`) or at random by weight
(`weighted`). The fallback chain is fitted here too, so a hop at run time never meets a
model that cannot do the job: params["fallbacks"] is the contract with the worker.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from service.catalog.config import Candidate, Condition, RouteConfig
from service.catalog.fit import Fit, Problem, Want, fit
from service.catalog.pricing import estimate
from service.providers.registry import ModelSpec, ProviderRegistry


@dataclass(frozen=True)
class Chosen:
    """The model a job runs on, its fit, and (for a route) params["routing"]."""

    spec: ModelSpec
    fit: Fit
    routing: dict[str, Any] | None = None


@dataclass
class _Fitting:
    index: int
    candidate: Candidate
    spec: ModelSpec
    fit: Fit
    cooling_s: float | None
    estimate: Decimal = field(default=Decimal(0))


def model_problem(model: str, registry: ProviderRegistry) -> str | None:
    """Why jobs cannot use this model, if they cannot: unknown, or its provider account
    has no token in this environment (it would fail at the provider anyway)."""
    spec = registry.model(model)
    if spec is None:
        known = sorted(registry.models) + sorted(registry.routes)
        return f"unknown model {model!r}; known: {known}"
    account = registry.accounts.get(spec.provider)
    missing = account.missing_env() if account is not None else []
    if missing:
        return (
            f"model {model!r} runs on provider {spec.provider!r}, whose credentials "
            f"({', '.join(missing)}) are not set"
        )
    return None


def name_problem(name: str, registry: ProviderRegistry) -> str | None:
    """Why jobs cannot name this (a route, or a model as model_problem says)."""
    return None if name in registry.routes else model_problem(name, registry)


def condition_problem(when: Condition | None, want: Want) -> str | None:
    """The first part of a candidate's condition that does not hold for the job."""
    if when is None:
        return None
    checks: list[tuple[str, Any, Any]] = [
        ("has_reference_images", when.has_reference_images, want.references > 0),
        ("has_mask", when.has_mask, want.has_mask),
        ("media", when.media, want.media),
        ("task", when.task, want.task),
    ]
    for key, expected, actual in checks:
        if expected is not None and expected != actual:
            return f"condition {key}={_text(expected)} does not hold"
    bounds = [
        ("width_gt", when.width_gt, want.width, 1),
        ("width_lt", when.width_lt, want.width, -1),
        ("height_gt", when.height_gt, want.height, 1),
        ("height_lt", when.height_lt, want.height, -1),
    ]
    for bound, limit, size, sign in bounds:
        if limit is not None and not (size - limit) * sign > 0:
            return f"condition {bound}={limit} does not hold ({bound.split('_')[0]} is {size})"
    return None


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _condition_keys(when: Condition | None) -> list[str]:
    return sorted(when.model_dump(exclude_none=True)) if when is not None else []


def choose_route(
    name: str,
    route: RouteConfig,
    registry: ProviderRegistry,
    want: Want,
    params: Mapping[str, Any],
    cooled: Mapping[str, float],
) -> Chosen | str:
    """The candidate this job runs on, or why none can take it (every candidate's reason).
    `skipped` lists the candidates passed over, in route order (for `first`, those before
    the one taken)."""
    passed: list[tuple[int, dict[str, Any]]] = []
    fitting: list[_Fitting] = []
    for index, candidate in enumerate(route.candidates):
        reason = condition_problem(candidate.when, want) or model_problem(candidate.model, registry)
        spec = registry.model(candidate.model)
        result: Fit | list[Problem] | None = None
        if reason is None and spec is not None:
            result = fit(spec, want)
            if isinstance(result, list):
                reason = "cannot: " + "; ".join(f"{p.field}: {p.message}" for p in result)
        if reason is not None or spec is None or not isinstance(result, Fit):
            passed.append((index, {"model": candidate.model, "reason": reason or "unknown model"}))
            continue
        fitting.append(_Fitting(index, candidate, spec, result, cooled.get(candidate.model)))
    if not fitting:
        reasons = "; ".join(f"{s['model']}: {s['reason']}" for _, s in passed)
        return f"no candidate of route {name!r} can run this job ({reasons})"
    healthy = [f for f in fitting if f.cooling_s is None]
    picked, reason = _pick(route, healthy or fitting, params)
    for other in fitting:
        if other.cooling_s is not None and other is not picked:
            passed.append(
                (other.index, {"model": other.candidate.model, "reason": _cooling(other.cooling_s)})
            )
    if picked.cooling_s is not None:
        reason += (
            f"; every candidate that fits is cooling down, so it runs anyway "
            f"({_cooling(picked.cooling_s)})"
        )
    skipped = [
        entry
        for index, entry in sorted(passed, key=lambda item: item[0])
        if route.strategy != "first" or index < picked.index
    ]
    routing = {
        "route": name,
        "strategy": route.strategy,
        "model": picked.spec.name,
        "reason": reason,
        "skipped": skipped,
    }
    return Chosen(picked.spec, picked.fit, routing)


def _cooling(seconds: float) -> str:
    return f"cooling down for {max(1, round(seconds))} s"


def _pick(
    route: RouteConfig, pool: list[_Fitting], params: Mapping[str, Any]
) -> tuple[_Fitting, str]:
    if route.strategy == "cheapest":
        for option in pool:
            option.estimate = estimate(option.spec, {**params, **option.fit.params})
        cheapest = min(pool, key=lambda option: option.estimate)  # min keeps the first tie
        return cheapest, f"cheapest candidate that fits (${cheapest.estimate} per job)"
    if route.strategy == "weighted":
        weights = [option.candidate.weight for option in pool]
        picked = random.choices(pool, weights=weights)[0]  # load spreading, not secrets
        total = sum(weights)
        names = ", ".join(option.spec.name for option in pool)
        return picked, (
            f"chosen at random by weight ({picked.candidate.weight:g} of {total:g}) "
            f"among the candidates that fit: {names}"
        )
    first = pool[0]
    keys = _condition_keys(first.candidate.when)
    condition = f"condition ({', '.join(keys)}) and " if keys else ""
    return first, f"first candidate whose {condition}capabilities fit"


def apply_fit(params: dict[str, Any], chosen: Fit) -> None:
    """The fit's parameters into the job's; what it mapped, recorded."""
    params.update(chosen.params)
    if chosen.mapped:
        params["mapped"] = chosen.mapped


def fallback_chain(
    chain: list[str],
    chosen: Chosen,
    registry: ProviderRegistry,
    want: Want,
    asked: Mapping[str, Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each fallback that can do the job, with the parameters it needs, and why the others
    were skipped. `asked`: the job's params before any model's fit.

    A hop's `params` are changes to the job's params (a value None deletes the key). They
    set every key that any model of the chain sets, so a hop gives the same params
    whichever hop, if any, came before it: `options` and `negative_prompt` too, once any
    hop leaves them behind (_leaving)."""
    hops_fitted: list[_Hop] = []
    skipped: list[dict[str, Any]] = []
    taken = {chosen.spec.name}
    for name in chain:
        if name in taken:
            continue
        taken.add(name)
        reason = model_problem(name, registry)
        spec = registry.model(name)
        if reason is not None or spec is None:
            skipped.append({"model": name, "reason": reason or "unknown model"})
            continue
        leaner, left = _leaving(spec, want)
        result = fit(spec, leaner)
        if isinstance(result, list):
            problems = "; ".join(f"{p.field}: {p.message}" for p in result)
            skipped.append({"model": name, "reason": f"cannot: {problems}"})
            continue
        hops_fitted.append(_Hop(name, result, *left))
    fits = [chosen.fit, *(hop.fit for hop in hops_fitted)]
    touched = list(dict.fromkeys(key for each in fits for key in each.params))
    if any(hop.dropped_options for hop in hops_fitted):
        touched.append("options")
    if any("negative_prompt" in hop.dropped for hop in hops_fitted):
        touched.append("negative_prompt")
    records = [hop.mapped() for hop in hops_fitted]
    any_mapped = bool(chosen.fit.mapped) or any(records)
    hops = []
    for hop, record in zip(hops_fitted, records, strict=True):
        changes = {key: hop.value(key, asked) for key in touched}
        if any_mapped:
            changes["mapped"] = record or None
        hops.append({"model": hop.name, "params": changes})
    return hops, skipped


# (the job's options the model takes, the names of those it does not, and what else the
# job gave that it does not take: "negative_prompt", "seed")
_Left = tuple[dict[str, Any], list[str], list[str]]


@dataclass(frozen=True)
class _Hop:
    """A fallback fitted, and what the job leaves behind on it (_Left)."""

    name: str
    fit: Fit
    options: dict[str, Any]
    dropped_options: list[str]
    dropped: list[str]

    def value(self, key: str, asked: Mapping[str, Any]) -> Any:
        if key == "options":
            return self.options or None
        if key == "negative_prompt" and key in self.dropped:
            return None
        return self.fit.params.get(key, asked.get(key))

    def mapped(self) -> dict[str, Any]:
        record = dict(self.fit.mapped)
        if self.dropped_options:
            record["dropped_options"] = self.dropped_options
        if self.dropped:
            record["dropped"] = self.dropped
        return record


def _leaving(spec: ModelSpec, want: Want) -> tuple[Want, _Left]:
    """What the job asks of a fallback, re-mapped for it. Options are model-specific (one
    model's steps mean nothing to another), so a fallback gets only those it declares
    (all, if it declares none); a negative prompt it cannot take is left out, and so is
    a seed (the job keeps its seed; this model is not sent it). The job's own model
    refuses all three instead: there the caller chose the model and asked for them."""
    options = dict(want.options)
    if spec.options is not None:
        options = {key: value for key, value in options.items() if key in spec.options}
    dropped_options = [key for key in want.options if key not in options]
    dropped = []
    if want.has_negative_prompt and not spec.negative_prompt:
        dropped.append("negative_prompt")
    if want.seed_given and not spec.seed:
        dropped.append("seed")
    leaner = replace(
        want,
        options=options,
        has_negative_prompt=want.has_negative_prompt and spec.negative_prompt,
        seed_given=want.seed_given and spec.seed,
    )
    return leaner, (options, dropped_options, dropped)
