"""Replicate's HTTP API (api.replicate.com/v1) and its output file host, at the root.

Errors are problem+json (`{"title", "detail", "status"}`) like Replicate's, except the 502,
which is the CDN's HTML page. Injected 5xx are answered before anything is created;
`reset`, `hang`, `malformed_json` and `huge_body` break the *response* of a prediction
that was created and runs (and would be billed): a client that blindly resubmits makes a
duplicate, which `duplicate_submissions` counts.

Also as Replicate: `Authorization: Token ...` is accepted besides Bearer; `Prefer: wait`
(or `wait=n`) holds the create response until the prediction ends (at most n s, 60 s);
`input.num_outputs` (1-4) gives that many output URLs (`{id}.{ext}`, `{id}_1.{ext}`, ...).
Webhooks go out for the `start` and `completed` events of `webhook_events_filter` (all
events when it is absent); `output` and `logs` events are never sent, as nothing streams.
Output files need no auth, like replicate.delivery. An `aspect_ratio` without width and
height makes FLUX's size for it (16:9 is 1344x768; `megapixels: "0.25"` halves each side);
width and height, when given, win (a model whose ratio may be "custom").
`GET /v1/predictions` lists the predictions made since reset, newest first,
`list_page_size` a page, linked by `next` URLs with an opaque cursor, filtered by
`created_after` / `created_before`: what a client needs to find a prediction whose create
lost its answer. `prediction_failed` makes
predictions end `failed` with Replicate's transient or permanent error texts.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulators import faults
from simulators.images import (
    MAX_SIDE,
    NOT_IMAGE,
    content_type,
    image_bytes,
    size_from_aspect_ratio,
)
from simulators.predictions import (
    ALL_EVENTS,
    NSFW_ERROR,
    PERMANENT_ERRORS,
    TRANSIENT_ERRORS,
    Lifecycle,
    Prediction,
    new_prediction_id,
)
from simulators.responses import (
    bad_gateway,
    bearer_token,
    dump,
    json_body,
    json_response,
    whole_seconds,
)
from simulators.state import Rejection, SimState

PROBLEM = "application/problem+json"
OUTPUT_FORMATS = ("webp", "jpg", "png")
# FLUX's `megapixels` input: the size of what an aspect ratio makes.
MEGAPIXELS = {"1": 1.0, "0.25": 0.25}
MAX_WAIT_S = 60


def problem(status: int, title: str, detail: str, **extra: Any) -> Response:
    return json_response(
        {"title": title, "detail": detail, "status": status, **extra}, status, media_type=PROBLEM
    )


def invalid(field: str, description: str) -> Response:
    return problem(
        422,
        "Input validation failed",
        f"- {field}: {description}\n",
        invalid_fields=[{"type": "invalid", "field": field, "description": description}],
    )


def throttled(rejection: Rejection, mode: str) -> Response:
    seconds = whole_seconds(rejection.wait_s)
    detail = "Request was throttled."
    if rejection.cause == "concurrency":
        detail = "Too many predictions are running at once."
    if mode == "body":
        unit = "second" if seconds == 1 else "seconds"
        detail = f"{detail[:-1]}. Expected available in {seconds} {unit}."
        return problem(429, "Too Many Requests", detail, retry_after=seconds)
    response = problem(429, "Too Many Requests", detail)
    if mode == "retry_after":
        response.headers["retry-after"] = str(seconds)
    return response


def parse_input(payload: Any) -> tuple[int, int, str, int] | Response:
    """(width, height, file extension, number of outputs) of a prediction's input."""
    if not isinstance(payload, dict):
        return invalid("input", "input is required and must be an object")
    if not isinstance(payload.get("prompt"), str) or not payload["prompt"]:
        return invalid("input.prompt", "prompt is required")
    ext = payload.get("output_format", "webp")
    if ext not in OUTPUT_FORMATS:
        return invalid("input.output_format", 'must be one of "webp", "jpg", "png"')
    width, height = payload.get("width"), payload.get("height")
    ratio = payload.get("aspect_ratio")
    if ratio is not None and ratio != "custom" and (width is None or height is None):
        megapixels = payload.get("megapixels", "1")
        if not isinstance(megapixels, str) or megapixels not in MEGAPIXELS:
            return invalid("input.megapixels", 'must be one of "1", "0.25"')
        size = size_from_aspect_ratio(str(ratio), MEGAPIXELS[megapixels])
        if size is None:
            return invalid("input.aspect_ratio", f"{ratio!r} is not a valid aspect ratio")
        width, height = size
    width, height = width or 1024, height or 1024
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_SIDE:
            return invalid(f"input.{name}", f"must be an integer from 1 to {MAX_SIDE}")
    outputs = payload.get("num_outputs", 1)
    if not isinstance(outputs, int) or not 1 <= outputs <= 4:
        return invalid("input.num_outputs", "must be an integer from 1 to 4")
    return width, height, ext, outputs


def _version_of(model: str) -> str:
    return hashlib.sha256(model.encode()).hexdigest()


def _model_and_version(reference: Any) -> tuple[str, str] | None:
    """`version` as Replicate accepts it: "id", "owner/name:id" or "owner/name"."""
    if not isinstance(reference, str) or not reference:
        return None
    model, _, version = reference.rpartition(":")
    if "/" in reference and not model:  # "owner/name": the model's latest version
        return reference, _version_of(reference)
    return model or "sim/model", version


def routes(state: SimState, lifecycle: Lifecycle) -> list[Route]:
    def authorised(request: Request) -> bool:
        return bearer_token(request, "Bearer", "Token") == state.config.token

    def unauthenticated() -> Response:
        return problem(401, "Unauthenticated", "You did not pass a valid authentication token")

    async def create(request: Request, model_version: tuple[str, str] | None) -> Response:
        """Both creation routes: `model_version` comes from the path, or else from the
        body's `version`."""
        state.count_creation_request()
        if not authorised(request):
            return unauthenticated()
        body = await json_body(request)
        if not isinstance(body, dict):
            return problem(400, "Bad Request", "The request body is not a JSON object")
        model_version = model_version or _model_and_version(body.get("version"))
        if model_version is None:
            return invalid("version", "version is required")
        model, version = model_version
        parsed = parse_input(body.get("input"))
        if isinstance(parsed, Response):
            return parsed
        webhook, events = body.get("webhook"), body.get("webhook_events_filter")
        if webhook is not None and not isinstance(webhook, str):
            return invalid("webhook", "must be a URL")
        if events is not None and not (isinstance(events, list) and set(events) <= ALL_EVENTS):
            return invalid("webhook_events_filter", f"events must be in {sorted(ALL_EVENTS)}")
        rejection = state.admit("replicate")
        if rejection is not None:
            return throttled(rejection, state.config.rate_limit_hint)
        fault = state.draw_fault()
        if fault == "error_500":
            return problem(500, "Internal Server Error", "An unexpected error occurred.")
        if fault == "error_502":
            return bad_gateway()
        if fault == "error_503":
            return problem(503, "Service Unavailable", "The service is temporarily unavailable.")
        prediction = _create_prediction(request, body, model, version, parsed)
        wait = _prefer_wait(request.headers.get("prefer", ""))
        if wait and fault is None:
            await prediction.wait(wait)
        return await _respond(request, prediction, fault)

    def _create_prediction(
        request: Request,
        body: dict[str, Any],
        model: str,
        version: str,
        parsed: tuple[int, int, str, int],
    ) -> Prediction:
        width, height, ext, outputs = parsed
        payload: dict[str, Any] = body["input"]
        state.record_accepted("replicate", f"{model}:{version}", payload)
        events = body.get("webhook_events_filter")
        prediction = Prediction(
            id=new_prediction_id(),
            model=model,
            version=version,
            input=payload,
            base_url=_base_url(request),
            width=width,
            height=height,
            ext=ext,
            outputs=outputs,
            webhook=body.get("webhook"),
            events=frozenset(events) if events is not None else ALL_EVENTS,
            failure=NSFW_ERROR
            if state.config.content_policy_word in payload["prompt"]
            else state.draw_failure(TRANSIENT_ERRORS, PERMANENT_ERRORS),
            not_image=state.draw_not_image(),
        )
        lifecycle.launch(prediction, state.sample_latency())
        return prediction

    async def _respond(request: Request, prediction: Prediction, fault: str | None) -> Response:
        if fault == "reset":
            return await faults.drop_connection(request)
        if fault == "huge_body":
            prediction_json = prediction.to_json() | {"logs": faults.HUGE_PLACEHOLDER}
            return faults.huge(dump(prediction_json), b"x", state.config.huge_body_bytes, 201)
        body = dump(prediction.to_json())
        if fault == "malformed_json":
            return faults.malformed(body, 201)
        response = Response(body, status_code=201, media_type="application/json")
        if fault == "hang":
            return await faults.hang(request, state.config.hang_s, response)
        return response

    async def create_for_model(request: Request) -> Response:
        params = request.path_params
        model = f"{params['owner']}/{params['name']}"
        return await create(request, (model, _version_of(model)))

    async def create_for_version(request: Request) -> Response:
        return await create(request, None)

    async def list_predictions(request: Request) -> Response:
        """Newest first, a page at a time; `next` is a full URL with an opaque cursor
        (the position below which the next page starts), so predictions created while a
        client pages do not shift what it sees. `created_after` / `created_before`
        (ISO 8601) narrow the list, as Replicate's do."""
        if not authorised(request):
            return unauthenticated()
        bounds = [_datetime_param(request, name) for name in ("created_after", "created_before")]
        for name, bound in zip(("created_after", "created_before"), bounds, strict=True):
            if bound is False:
                return problem(400, "Bad Request", f"{name} must be an ISO 8601 date-time")
        after, before = (b if isinstance(b, float) else None for b in bounds)
        cursor = _decode_cursor(request.query_params.get("cursor"))
        if cursor is None:
            return problem(400, "Bad Request", "Invalid cursor.")
        created = state.created
        position = min(cursor if cursor >= 0 else len(created), len(created))
        results: list[dict[str, Any]] = []
        while position > 0 and len(results) < state.config.list_page_size:
            position -= 1
            prediction = created[position]
            if after is not None and prediction.created_at < after:
                position = 0
                break
            if before is None or prediction.created_at <= before:
                results.append(_listed(prediction))
        following = None
        if position > 0:
            query = request.url.include_query_params(cursor=_encode_cursor(position))
            following = str(query)
        return json_response({"previous": None, "next": following, "results": results})

    async def get_prediction(request: Request) -> Response:
        if not authorised(request):
            return unauthenticated()
        prediction = state.predictions.get(request.path_params["prediction_id"])
        if prediction is None:
            return problem(404, "Not found", "Not found.")
        return json_response(prediction.to_json())

    async def cancel_prediction(request: Request) -> Response:
        if not authorised(request):
            return unauthenticated()
        prediction = state.predictions.get(request.path_params["prediction_id"])
        if prediction is None:
            return problem(404, "Not found", "Not found.")
        lifecycle.cancel(prediction)
        return json_response(prediction.to_json())

    async def webhook_secret(request: Request) -> Response:
        if not authorised(request):
            return unauthenticated()
        return json_response({"key": state.config.webhook_secret})

    async def output_file(request: Request) -> Response:
        stem, _, ext = request.path_params["name"].rpartition(".")
        prediction = state.predictions.get(stem.partition("_")[0])
        if prediction is not None and prediction.status == "succeeded":
            if f"{stem}.{ext}" in prediction.file_names():
                data = NOT_IMAGE if prediction.not_image else None
                data = data or image_bytes(prediction.width, prediction.height, ext)
                return Response(data, media_type=content_type(ext))
        return Response(b"Not Found", status_code=404, media_type="text/plain")

    return [
        Route("/v1/models/{owner}/{name}/predictions", create_for_model, methods=["POST"]),
        Route("/v1/predictions", create_for_version, methods=["POST"]),
        Route("/v1/predictions", list_predictions, methods=["GET"]),
        Route("/v1/predictions/{prediction_id}", get_prediction, methods=["GET"]),
        Route("/v1/predictions/{prediction_id}/cancel", cancel_prediction, methods=["POST"]),
        Route("/v1/webhooks/default/secret", webhook_secret, methods=["GET"]),
        Route("/files/{name}", output_file, methods=["GET"]),
    ]


def _base_url(request: Request) -> str:
    host = request.headers.get("host")
    if not host:
        server_host, server_port = request.scope.get("server") or ("127.0.0.1", 80)
        host = f"{server_host}:{server_port}"
    return f"{request.scope.get('scheme', 'http')}://{host}"


def _prefer_wait(prefer: str) -> float:
    """Seconds asked for by `Prefer: wait` (60) or `Prefer: wait=n` (1..60); 0 if absent."""
    for part in prefer.split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "wait":
            return float(min(MAX_WAIT_S, max(1, int(value)))) if value.isdigit() else MAX_WAIT_S
    return 0.0


def _listed(prediction: Prediction) -> dict[str, Any]:
    """A prediction as the list shows it: without its logs."""
    item = prediction.to_json()
    item.pop("logs", None)
    return item


def _encode_cursor(position: int) -> str:
    return base64.urlsafe_b64encode(f"p={position}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> int | None:
    """-1 for the first page, the position for a cursor, None for a malformed one."""
    if cursor is None:
        return -1
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    name, _, value = text.partition("=")
    return int(value) if name == "p" and value.isdigit() else None


def _datetime_param(request: Request, name: str) -> float | bool | None:
    """The parameter as a POSIX time; None when absent, False when not a date-time."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        return False
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
