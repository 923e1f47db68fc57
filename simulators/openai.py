"""OpenAI's image generation API (POST /v1/images/generations), GPT image models.

Synchronous, as OpenAI is: the response comes after the sampled latency, with the images
inline as base64. Errors are `{"error": {"message", "type", "param", "code"}}`, except
the 502, which is the CDN's HTML page. A content-policy rejection is a 400 answered before
any work; injected 5xx are answered before any work too. `reset`, `hang`,
`malformed_json` and `huge_body` break the response of a generation that did run.

Auth: `Bearer <SimConfig.token>`, or, when the OAuth token server is enabled
(simulators.oauth), only the tokens it issued, unexpired and unrevoked (401 otherwise).
Image edits (POST /v1/images/edits) share `serve` with generations: simulators.openai_edits.

Sizes: gpt-image-1, gpt-image-1-mini and gpt-image-1.5 accept only 1024x1024, 1536x1024,
1024x1536 and auto (as OpenAI does); any other model accepts any WxH up to 4096.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulators import faults
from simulators.images import MAX_SIDE, NOT_IMAGE_B64, image_b64
from simulators.responses import (
    bad_gateway,
    bearer_token,
    dump,
    json_body,
    json_response,
    whole_seconds,
)
from simulators.state import Rejection, SimState

if TYPE_CHECKING:
    from simulators.oauth import TokenServer

FIXED_SIZES = {"gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5"}
SIZES = ("1024x1024", "1024x1536", "1536x1024")
FORMATS = ("png", "jpeg", "webp")
QUALITIES = ("low", "medium", "high", "auto")
# Output tokens of one 1024x1024 image by quality; other sizes scale with the area.
SQUARE_TOKENS = {"low": 272, "medium": 1056, "high": 4160}
RATE_LIMITS_URL = "https://platform.openai.com/account/rate-limits"


def openai_error(
    status: int,
    message: str,
    kind: str,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    error = {"message": message, "type": kind, "param": param, "code": code}
    return json_response({"error": error}, status, headers)


def invalid_value(param: str, value: object, allowed: tuple[str, ...]) -> Response:
    listed = ", ".join(f"'{a}'" for a in allowed[:-1]) + f", and '{allowed[-1]}'"
    message = f"Invalid value: '{value}'. Supported values are: {listed}."
    return openai_error(400, message, "invalid_request_error", "invalid_value", param)


def try_again_in(seconds: float) -> str:
    """OpenAI's way of writing a wait: 120ms, 1.2s, 6m0s."""
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    return f"{int(seconds // 60)}m{seconds % 60:.0f}s"


def throttled(rejection: Rejection, model: str, rate_per_s: float | None, mode: str) -> Response:
    if rejection.cause == "rate":
        limit = max(1, round((rate_per_s or 1) * 60))
        message = (
            f"Rate limit reached for {model} in organization org-simulator on images per "
            f"minute (IPM): Limit {limit}, Used {limit}, Requested 1."
        )
    else:
        message = f"Too many concurrent requests for {model}."
    headers: dict[str, str] = {}
    if mode == "body":
        message += f" Please try again in {try_again_in(rejection.wait_s)}."
    elif mode == "retry_after":
        headers["retry-after"] = str(whole_seconds(rejection.wait_s))
        headers["retry-after-ms"] = str(max(1, math.ceil(rejection.wait_s * 1000)))
    message += f" Visit {RATE_LIMITS_URL} to learn more."
    return openai_error(429, message, "requests", "rate_limit_exceeded", headers=headers)


def parse_request(body: Any) -> tuple[str, str, int, int, int, str, str] | Response:
    """(model, prompt, n, width, height, format, quality) of a generation request."""
    if not isinstance(body, dict):
        message = "We could not parse the JSON body of your request."
        return openai_error(400, message, "invalid_request_error")
    model, prompt = body.get("model") or "gpt-image-1", body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        message = "Missing required parameter: 'prompt'."
        return openai_error(400, message, "invalid_request_error", "missing_required_parameter")
    n = body.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10:
        return invalid_value("n", n, tuple(str(i) for i in range(1, 11)))
    size = body.get("size") or "auto"
    fmt = body.get("output_format") or "png"
    quality = body.get("quality") or "auto"
    if fmt not in FORMATS:
        return invalid_value("output_format", fmt, FORMATS)
    if quality not in QUALITIES:
        return invalid_value("quality", quality, QUALITIES)
    if size == "auto":
        return model, prompt, n, 1024, 1024, fmt, quality
    if model in FIXED_SIZES and size not in SIZES:
        return invalid_value("size", size, (*SIZES, "auto"))
    width, _, height = str(size).partition("x")
    if not (width.isdigit() and height.isdigit()) or not (
        16 <= int(width) <= MAX_SIDE and 16 <= int(height) <= MAX_SIDE
    ):
        return invalid_value("size", size, (*SIZES, "auto"))
    return model, prompt, n, int(width), int(height), fmt, quality


def usage(prompt: str, n: int, width: int, height: int, quality: str) -> dict[str, Any]:
    per_image = SQUARE_TOKENS.get(quality, SQUARE_TOKENS["medium"])
    output_tokens = n * round(per_image * width * height / (1024 * 1024))
    input_tokens = max(1, math.ceil(len(prompt) / 4))
    return {
        "total_tokens": input_tokens + output_tokens,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "input_tokens_details": {"text_tokens": input_tokens, "image_tokens": 0},
    }


def unauthorized(request: Request, state: SimState, tokens: TokenServer | None) -> Response | None:
    """The 401 for a request without a good bearer token; None when it may go on. With
    the token server enabled, only the tokens it issued (unexpired, unrevoked) are good."""
    token = bearer_token(request)
    if token is None:
        message = (
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
        return openai_error(401, message, "invalid_request_error")
    if tokens is not None and tokens.config.enabled:
        reason = tokens.check(token)
        if reason is None:
            return None
        code = "access_token_expired" if "expired" in reason else "invalid_access_token"
        return openai_error(401, reason, "invalid_request_error", code)
    if token != state.config.token:
        message = f"Incorrect API key provided: {token[:3]}***{token[-4:]}."
        return openai_error(401, message, "invalid_request_error", "invalid_api_key")
    return None


@dataclass(frozen=True)
class Generation:
    """One accepted-for-checks request (generation or edit) and how to draw its image."""

    model: str
    prompt: str
    n: int
    width: int
    height: int
    format: str
    quality: str
    record: Any  # what identifies the request (duplicate detection)
    draw: Callable[[], str]  # base64 of the output image


async def serve(state: SimState, request: Request, job: Generation) -> Response:
    """Limits, injected faults, the content policy, latency, then the answer: the same
    for a generation and an edit."""
    rejection = state.admit("openai")
    if rejection is not None:
        config = state.config
        return throttled(rejection, job.model, config.rate_per_s, config.rate_limit_hint)
    fault = state.draw_fault()
    if fault == "error_500":
        message = "The server had an error while processing your request. Sorry about that!"
        return openai_error(500, message, "server_error")
    if fault == "error_502":
        return bad_gateway()
    if fault == "error_503":
        return openai_error(503, "The server is overloaded or not ready yet.", "server_error")
    if state.config.content_policy_word in job.prompt:
        message = (
            "Your request was rejected as a result of our safety system. Your prompt may "
            "contain text that is not allowed by our safety system."
        )
        return openai_error(400, message, "image_generation_user_error", "content_policy_violation")
    state.record_accepted("openai", job.model, job.record)
    started = time.monotonic()
    latency = state.sample_latency()
    work = object()
    limits = state.limits["openai"]
    limits.start(work, started + (state.config.hang_s if fault == "hang" else latency))
    try:
        if fault == "reset":
            return await faults.drop_connection(request)
        if fault == "hang" and await faults.wait_for_disconnect(request, state.config.hang_s):
            return Response(status_code=499)  # the client gave up; nobody will read this
        if fault != "hang":
            await asyncio.sleep(latency)
        b64 = NOT_IMAGE_B64 if state.draw_not_image() else job.draw()
        payload = {
            "created": int(time.time()),
            "background": "opaque",
            "data": [{"b64_json": b64}] * job.n,
            "output_format": job.format,
            "quality": "medium" if job.quality == "auto" else job.quality,
            "size": f"{job.width}x{job.height}",
            "usage": usage(job.prompt, job.n, job.width, job.height, job.quality),
        }
        headers = {
            "x-request-id": f"req_{secrets.token_hex(16)}",
            "openai-processing-ms": str(round((time.monotonic() - started) * 1000)),
        }
        state.record_completion()
        return _respond(state, payload, headers, fault)
    finally:
        limits.finish(work)


def routes(state: SimState, tokens: TokenServer | None = None) -> list[Route]:
    async def generate(request: Request) -> Response:
        state.count_creation_request()
        refusal = unauthorized(request, state, tokens)
        if refusal is not None:
            return refusal
        body = await json_body(request)
        parsed = parse_request(body)
        if isinstance(parsed, Response):
            return parsed
        model, prompt, n, width, height, fmt, quality = parsed
        job = Generation(
            model,
            prompt,
            n,
            width,
            height,
            fmt,
            quality,
            record=body,
            draw=lambda: image_b64(width, height, fmt),
        )
        return await serve(state, request, job)

    return [Route("/v1/images/generations", generate, methods=["POST"])]


def _respond(
    state: SimState, payload: dict[str, Any], headers: dict[str, str], fault: str | None
) -> Response:
    if fault == "huge_body":
        payload["data"] = [{"b64_json": faults.HUGE_PLACEHOLDER}]
        return faults.huge(dump(payload), b"A", state.config.huge_body_bytes, 200)
    body = dump(payload)
    if fault == "malformed_json":
        return faults.malformed(body, 200, headers)
    return Response(body, headers=headers, media_type="application/json")
