"""What a job is expected to cost (reserved against budgets at dispatch) and what it
cost in the end (from the provider's reported usage when there is one, else from the
price). Every figure is rounded to a millionth of a dollar, the precision of the
columns that keep it, so sums of rows equal sums of figures exactly."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from service.catalog.config import Price
from service.providers.base import Output, ProviderError
from service.providers.registry import ModelSpec

MICRO = Decimal("0.000001")
MILLION = Decimal(1_000_000)
# A usage-priced model with no `price.estimate` reserves this much usage per job.
ESTIMATED_RUN_S = Decimal(10)
ESTIMATED_INPUT_TOKENS = Decimal(100)
ESTIMATED_OUTPUT_TOKENS = Decimal(4_160)  # gpt-image-1, 1024x1024, high quality
# Where providers report run time and tokens (Replicate/Atlas, fal, OpenAI).
_RUN_TIME_KEYS = ("predict_time", "inference_time")


def estimate(spec: ModelSpec, params: Mapping[str, Any]) -> Decimal:
    """What one job of this model reserves: its price for the size and duration asked."""
    price = spec.price
    if price.estimate is not None:
        return price.estimate.quantize(MICRO)
    return _fixed(price, params.get("width"), params.get("height"), params.get("duration_s")) + (
        _usage_part(price, {})
    )


def actual(spec: ModelSpec, params: Mapping[str, Any], output: Output) -> Decimal:
    """What a succeeded attempt cost: the provider's own dollar figure if it gave one;
    else the price applied to what was made (its size, its length) and to the usage the
    provider reported."""
    if output.cost_usd:
        return output.cost_usd.quantize(MICRO)
    duration = output.duration_s if output.duration_s is not None else params.get("duration_s")
    return _fixed(spec.price, output.width, output.height, duration) + _usage_part(
        spec.price, output.usage
    )


def failed(spec: ModelSpec, params: Mapping[str, Any], error: ProviderError) -> Decimal:
    """What a failed attempt cost: nothing, unless the model's provider bills a
    generation that ran and failed (`charged_on_failure`) and this one ran (`billable`):
    then its reported usage, or the price of what was asked."""
    if not (spec.charged_on_failure and error.billable):
        return Decimal(0)
    price = spec.price
    if price.usage_based and error.usage:
        return _usage_part(price, error.usage, estimate_missing=False)
    return estimate(spec, params)


def _fixed(price: Price, width: Any, height: Any, duration_s: Any) -> Decimal:
    total = price.per_image
    if price.per_megapixel and isinstance(width, int) and isinstance(height, int):
        total += price.per_megapixel * Decimal(width * height) / MILLION
    if price.per_second and duration_s is not None:
        total += price.per_second * Decimal(str(duration_s))
    return total.quantize(MICRO)


def _usage_part(
    price: Price, usage: Mapping[str, Any], *, estimate_missing: bool = True
) -> Decimal:
    """The usage-priced part: reported usage where there is some, else (for a reservation)
    the standard estimate."""
    total = Decimal(0)
    if price.per_run_second:
        run_s = _number(usage, _RUN_TIME_KEYS)
        if run_s is None and estimate_missing:
            run_s = ESTIMATED_RUN_S
        if run_s is not None:
            total += price.per_run_second * run_s
    if price.per_token is not None:
        tokens_in = _number(usage, ("input_tokens", "prompt_tokens"))
        tokens_out = _number(usage, ("output_tokens", "completion_tokens"))
        if estimate_missing:
            tokens_in = ESTIMATED_INPUT_TOKENS if tokens_in is None else tokens_in
            tokens_out = ESTIMATED_OUTPUT_TOKENS if tokens_out is None else tokens_out
        total += price.per_token.input * (tokens_in or Decimal(0)) / MILLION
        total += price.per_token.output * (tokens_out or Decimal(0)) / MILLION
    return total.quantize(MICRO)


def _number(usage: Mapping[str, Any], keys: tuple[str, ...]) -> Decimal | None:
    for key in keys:
        value = usage.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return Decimal(str(value))
    return None
