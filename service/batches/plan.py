"""A batch's jobs resolved before anything is stored: defaults applied, each job's model
chosen (a route picks one), checked and mapped against what that model can do, its
fallbacks fitted, and its cost estimated. A submit stores this plan; a dry run shows it."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.batches.media import check_chains, implied_media, resolve_media
from service.batches.routing import (
    Chosen,
    apply_fit,
    choose_route,
    fallback_chain,
    model_problem,
)
from service.batches.schemas import BatchCreate, JobCreate, JobFields
from service.catalog import health
from service.catalog.fit import Problem, Want, fit, task_of, task_problem
from service.catalog.pricing import estimate
from service.config import Settings
from service.kit.errors import ErrorDetail, InvalidInput
from service.logging import get_logger
from service.providers.base import MediaKind
from service.providers.registry import ProviderRegistry
from service.storage.naming import output_file_name, safe_output_stem

log = get_logger(__name__)
MAX_DETAILS = 100


@dataclass
class PlannedJob:
    # prompt, model, route, params, metadata, parent: the job row's fields.
    fields: dict[str, Any]
    estimate_usd: Decimal


def route_candidates(body: BatchCreate, registry: ProviderRegistry, settings: Settings) -> set[str]:
    """The models of every route the batch's jobs name: the ones whose health matters."""
    defaults = body.defaults or JobFields()
    names: set[str] = set()
    for job in body.jobs:
        route = registry.routes.get(job.model or defaults.model or settings.default_model)
        if route is not None:
            names.update(candidate.model for candidate in route.candidates)
    return names


async def cooled_models(redis: Redis | None, names: Iterable[str]) -> dict[str, float]:
    """The models cooling down, with the seconds they have left. Health is advice: with
    Redis away every model counts as healthy."""
    wanted = sorted(names)
    if redis is None or not wanted:
        return {}
    try:
        return await health.cooled_down(redis, wanted)
    except (RedisError, OSError) as exc:
        log.warning("health_unavailable", error=str(exc))
        return {}


def plan_jobs(
    body: BatchCreate,
    registry: ProviderRegistry,
    settings: Settings,
    cooled: Mapping[str, float],
) -> list[PlannedJob]:
    """Every job resolved, or a 422 naming every job and field that cannot be."""
    defaults = body.defaults or JobFields()
    errors: list[ErrorDetail] = []
    planned: list[PlannedJob] = []
    taken: dict[str, int] = {}
    # Jobs that ask the same thing of the same model get the same choice and mapping: a
    # 10,000-job batch usually asks a handful of different things.
    memo: dict[tuple[Any, ...], _Choice] = {}
    seeds = _fresh_seeds(len(body.jobs))
    for index, job in enumerate(body.jobs):
        fields = _resolve_one(job, defaults, settings, seeds[index])
        cost, problems = _choose_model(
            index, job, defaults, fields, registry, settings, cooled, memo
        )
        errors += problems
        params = fields["params"]
        if params["output_name"]:  # named before its format was known
            params["output_name"] = output_file_name(
                params["output_name"].rsplit(".", 1)[0], params["format"]
            )
        name = params["output_name"]
        if name:  # a name that sanitised to nothing is named by index below
            clash = taken.get(name.lower())
            if clash is not None:
                errors.append(
                    ErrorDetail(
                        field=f"jobs[{index}].output_name",
                        message=f"writes the same file {name!r} as jobs[{clash}]",
                    )
                )
            taken.setdefault(name.lower(), index)
        planned.append(PlannedJob(fields, cost))
    _name_unnamed_jobs([p.fields for p in planned], taken)
    errors += check_chains(body.jobs, [p.fields["params"].get("media", "image") for p in planned])
    if errors:
        first = errors[0]
        raise InvalidInput(f"{first.field}: {first.message}", details=errors[:MAX_DETAILS])
    return planned


def _choose_model(
    index: int,
    job: JobCreate,
    defaults: JobFields,
    fields: dict[str, Any],
    registry: ProviderRegistry,
    settings: Settings,
    cooled: Mapping[str, float],
    memo: dict[tuple[Any, ...], _Choice],
) -> tuple[Decimal, list[ErrorDetail]]:
    """Pick the job's model (a route's choice or the one named), fit and map the job to
    it and fit its fallbacks; returns the job's estimate and what is wrong."""
    where = f"jobs[{index}]"
    name = fields["model"]
    route = registry.routes.get(name)
    spec = registry.model(name) if route is None else None
    media = implied_media(job, defaults, spec)
    params = fields["params"]
    errors = resolve_media(index, job, defaults, media, params, settings.default_format)
    asked_task = job.task or defaults.task
    if asked_task is not None:
        params["task"] = asked_task
    # A weighted route picks at random for each job: its choice is never reused.
    key = None
    if route is None or route.strategy != "weighted":
        key = _memo_key(name, job, defaults, params, media)
    known = memo.get(key) if key is not None and not errors else None
    if known is not None:
        fields["model"], fields["route"] = known.model, known.route
        params.update(known.params)
        return known.estimate, errors
    want = want_of(job, defaults, params, media)
    chosen: Chosen | None = None
    if route is not None:
        # Named once, on the task, not once per candidate under `model`.
        contradiction = task_problem(want)
        if contradiction is not None:
            return Decimal(0), [*errors, _detail(where, job, contradiction)]
        picked = choose_route(name, route, registry, want, params, cooled)
        if isinstance(picked, str):
            return Decimal(0), [*errors, ErrorDetail(field=f"{where}.model", message=picked)]
        chosen = picked
    else:
        problem = model_problem(name, registry)
        if problem is not None or spec is None:
            message = problem or f"unknown model {name!r}"
            return Decimal(0), [*errors, ErrorDetail(field=f"{where}.model", message=message)]
        result = fit(spec, want)
        if isinstance(result, list):
            seen = {error.field for error in errors}
            for each in result:
                detail = _detail(where, job, each)
                if detail.field not in seen:
                    errors.append(detail)
            return Decimal(0), errors
        chosen = Chosen(spec, result)
    asked = dict(params)
    fields["model"] = chosen.spec.name
    fields["route"] = name if route is not None else None
    apply_fit(params, chosen.fit)
    chain = list(route.fallbacks) if route is not None and route.fallbacks else []
    chain = chain or list(chosen.spec.fallbacks)
    hops, skipped = fallback_chain(chain, chosen, registry, want, asked)
    routing = dict(chosen.routing or {})
    if skipped:
        routing["skipped_fallbacks"] = skipped
    if routing:
        params["routing"] = routing
    if hops:
        params["fallbacks"] = hops
    cost = estimate(chosen.spec, params)
    if key is not None and not errors:
        changed = {k: v for k, v in params.items() if k not in asked or asked[k] is not v}
        memo[key] = _Choice(fields["model"], fields["route"], changed, cost)
    return cost, errors


@dataclass(frozen=True)
class _Choice:
    """What _choose_model decided for one kind of job, to give the next job like it."""

    model: str
    route: str | None
    params: dict[str, Any]
    estimate: Decimal


def _memo_key(
    name: str, job: JobCreate, defaults: JobFields, params: Mapping[str, Any], media: MediaKind
) -> tuple[Any, ...]:
    """Everything want_of reads, without building the Want (most jobs are memo hits)."""
    options = params.get("options")
    return (
        name,
        media,
        job.task or defaults.task,
        len(job.reference_images or []) + (1 if job.input is not None else 0),
        job.mask is not None,
        params["width"],
        params["height"],
        params["format"],
        params.get("duration_s"),
        params.get("fps"),
        _asked(job, defaults, "duration_s"),
        _asked(job, defaults, "fps"),
        (job.resolution or defaults.resolution) if media == "video" else None,
        bool(params.get("negative_prompt")),
        (job.seed if job.seed is not None else defaults.seed) is not None,
        json.dumps(options, sort_keys=True, default=str) if options else "",
    )


def _detail(where: str, job: JobCreate, problem: Problem) -> ErrorDetail:
    """A fit problem as a 422 detail; a chained job's only reference image is its parent's
    output, so a model that takes none is blamed on `input`."""
    if problem.field == "reference_images" and not job.reference_images and job.input:
        return ErrorDetail(
            field=f"{where}.input",
            message=problem.message.replace("reference images", "input image")
            + ", so no other job's output",
        )
    return ErrorDetail(field=f"{where}.{problem.field}", message=problem.message)


def want_of(
    job: JobCreate, defaults: JobFields, params: Mapping[str, Any], media: MediaKind
) -> Want:
    """What the job asks of its model, defaults applied."""
    references = len(job.reference_images or []) + (1 if job.input is not None else 0)
    has_mask = job.mask is not None
    task = task_of(media, references=references, has_mask=has_mask, asked=job.task or defaults.task)
    options = params.get("options")
    return Want(
        media=media,
        task=task,
        width=params["width"],
        height=params["height"],
        format=params["format"],
        duration_s=params.get("duration_s"),
        fps=params.get("fps"),
        duration_asked=_asked(job, defaults, "duration_s"),
        fps_asked=_asked(job, defaults, "fps"),
        resolution=(job.resolution or defaults.resolution) if media == "video" else None,
        has_negative_prompt=bool(params.get("negative_prompt")),
        seed_given=(job.seed if job.seed is not None else defaults.seed) is not None,
        references=references,
        has_mask=has_mask,
        options=dict(options) if isinstance(options, dict) else {},
    )


def _asked(job: JobCreate, defaults: JobFields, name: str) -> bool:
    """Whether the job (or the batch's defaults) set this field, rather than Darkroom."""
    return getattr(job, name) is not None or getattr(defaults, name) is not None


def _fresh_seeds(count: int) -> memoryview:
    """`count` uniform 32-bit seeds from one read of the OS's CSPRNG: what
    secrets.randbelow(2**32) gives, without its ~12 us a job."""
    return memoryview(secrets.token_bytes(4 * count)).cast("I")


def _resolve_one(
    job: JobCreate, defaults: JobFields, settings: Settings, fresh_seed: int
) -> dict[str, Any]:
    fmt = job.format or defaults.format or settings.default_format
    seed = job.seed if job.seed is not None else defaults.seed
    stem = safe_output_stem(job.output_name) if job.output_name else ""
    params = {
        "width": job.width or defaults.width or settings.default_width,
        "height": job.height or defaults.height or settings.default_height,
        "format": fmt,
        # An unseeded job gets a seed now, so what it made can be made again.
        "seed": seed if seed is not None else fresh_seed,
        "output_name": output_file_name(stem, fmt) if stem else "",
    }
    return {
        "prompt": job.prompt,
        "model": job.model or defaults.model or settings.default_model,
        "route": None,
        "params": params,
        "metadata": {**(defaults.metadata or {}), **(job.metadata or {})},
        "parent": job.input.job if job.input is not None else None,
    }


def _name_unnamed_jobs(resolved: list[dict[str, Any]], taken: dict[str, int]) -> None:
    for index, fields in enumerate(resolved):
        params = fields["params"]
        if params["output_name"]:
            continue
        name = output_file_name(f"{index:05d}", params["format"])
        if name.lower() in taken:
            name = output_file_name(f"{index:05d}-{secrets.token_hex(4)}", params["format"])
        params["output_name"] = name
        taken[name.lower()] = index


def estimates(planned: list[PlannedJob]) -> tuple[float, dict[str, float]]:
    """The batch's estimate and its split by model, in USD (exact sums of the jobs')."""
    by_model: dict[str, Decimal] = {}
    for job in planned:
        model = job.fields["model"]
        by_model[model] = by_model.get(model, Decimal(0)) + job.estimate_usd
    total = sum(by_model.values(), Decimal(0))
    return float(total), {model: float(usd) for model, usd in sorted(by_model.items())}
