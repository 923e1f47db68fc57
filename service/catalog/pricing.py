"""What a job is expected to cost (reserved against budgets at dispatch) and what it
cost in the end (from the provider's reported usage when there is one, else from the
price). Every figure is rounded to a millionth of a dollar (half to even), the
precision of the columns that keep it, so sums of rows equal sums of figures exactly."""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from service.catalog.config import Price
from service.providers.base import Output, ProviderError
from service.providers.registry import ModelSpec

MICRO = Decimal("0.000001")
MILLION = Decimal(1_000_000)
# The most one figure may be: what a NUMERIC(12,6) column holds. A price or a reported
# usage beyond it is a misconfiguration or a provider's nonsense; recording it must not
# fail (the attempt would be run again, and paid again).
MAX_USD = Decimal("999999.999999")
# Reported usage beyond this (seconds, tokens) is not believed: treated as not reported.
_MAX_USAGE = 1e9
# A usage-priced model with no `price.estimate` reserves this much usage per job.
ESTIMATED_RUN_S = Decimal(10)
ESTIMATED_INPUT_TOKENS = Decimal(100)
ESTIMATED_OUTPUT_TOKENS = Decimal(4_160)  # gpt-image-1, 1024x1024, high quality
# Where providers report run time and tokens (Replicate/Atlas, fal, OpenAI).
RUN_TIME_KEYS = ("predict_time", "inference_time")
INPUT_TOKEN_KEYS = ("input_tokens", "prompt_tokens")
OUTPUT_TOKEN_KEYS = ("output_tokens", "completion_tokens")


def usd(value: Decimal | float | int) -> Decimal:
    """A dollar figure (a float as it is written) at the precision the columns keep."""
    return Decimal(str(value)).quantize(MICRO)


def estimate(spec: ModelSpec, params: Mapping[str, Any]) -> Decimal:
    """What one job of this model reserves: its price for the size and duration asked
    (and, for a usage-priced model, `price.estimate` or a standard amount of usage)."""
    price = spec.price
    if price.estimate is not None:
        return _capped(price.estimate)
    fixed = _fixed(price, params.get("width"), params.get("height"), params.get("duration_s"))
    return _capped(fixed + _usage_part(price, {}))


def actual(spec: ModelSpec, params: Mapping[str, Any], output: Output) -> Decimal:
    """What a succeeded attempt cost: the provider's own dollar figure if it gave one;
    else the price applied to what was made (its size, its length) and to the usage the
    provider reported. A usage-priced model whose provider reported nothing costs its
    estimate: the best figure there is, and the one its budgets reserved."""
    if output.cost_usd:
        return _capped(output.cost_usd)
    price = spec.price
    if price.usage_based and not reported(price, output.usage):
        return estimate(spec, params)
    duration = output.duration_s if output.duration_s is not None else params.get("duration_s")
    fixed = _fixed(price, output.width, output.height, duration)
    return _capped(fixed + _usage_part(price, output.usage))


def failed(spec: ModelSpec, params: Mapping[str, Any], error: ProviderError) -> Decimal:
    """What a failed attempt cost: nothing, unless the model's provider bills a
    generation that ran and failed (`charged_on_failure`) and this one ran (`billable`;
    never one refused, canceled or aborted): then its reported usage, or, without any,
    the estimate of what was asked."""
    if not (spec.charged_on_failure and error.billable):
        return Decimal(0)
    price = spec.price
    if price.usage_based and reported(price, error.usage):
        return _capped(_usage_part(price, error.usage, estimate_missing=False))
    return estimate(spec, params)


def reported(price: Price, usage: Mapping[str, Any]) -> bool:
    """Whether the provider reported any of the usage this price is charged on."""
    keys: tuple[str, ...] = ()
    if price.per_run_second:
        keys += RUN_TIME_KEYS
    if price.per_token is not None:
        keys += INPUT_TOKEN_KEYS + OUTPUT_TOKEN_KEYS
    return any(_number(usage, (key,)) is not None for key in keys)


def _fixed(price: Price, width: Any, height: Any, duration_s: Any) -> Decimal:
    total = price.per_image
    if price.per_megapixel and _is_int(width) and _is_int(height):
        total += price.per_megapixel * Decimal(width * height) / MILLION
    seconds = _number({"s": duration_s}, ("s",))
    if price.per_second and seconds is not None:
        total += price.per_second * seconds
    return total.quantize(MICRO)


def _usage_part(
    price: Price, usage: Mapping[str, Any], *, estimate_missing: bool = True
) -> Decimal:
    """The usage-priced part: reported usage where there is some, else (when
    `estimate_missing`) the standard estimate."""
    total = Decimal(0)
    if price.per_run_second:
        run_s = _number(usage, RUN_TIME_KEYS)
        if run_s is None and estimate_missing:
            run_s = ESTIMATED_RUN_S
        if run_s is not None:
            total += price.per_run_second * run_s
    if price.per_token is not None:
        tokens_in = _number(usage, INPUT_TOKEN_KEYS)
        tokens_out = _number(usage, OUTPUT_TOKEN_KEYS)
        if estimate_missing:
            tokens_in = ESTIMATED_INPUT_TOKENS if tokens_in is None else tokens_in
            tokens_out = ESTIMATED_OUTPUT_TOKENS if tokens_out is None else tokens_out
        total += price.per_token.input * (tokens_in or Decimal(0)) / MILLION
        total += price.per_token.output * (tokens_out or Decimal(0)) / MILLION
    return total.quantize(MICRO)


def _number(usage: Mapping[str, Any], keys: tuple[str, ...]) -> Decimal | None:
    """The first of `keys` that holds a believable amount (finite, not negative, not
    absurd), exactly as the provider wrote it."""
    for key in keys:
        value = usage.get(key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        if math.isfinite(value) and 0 <= value <= _MAX_USAGE:
            return Decimal(str(value))
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 100_000


def _capped(value: Decimal) -> Decimal:
    return min(value, MAX_USD).quantize(MICRO)
