"""fal: the queue API (queue.fal.run), finished by polling or by a signed webhook.

A request is queued with `POST {base}/{model}` (`Authorization: Key <key>`), and from
then on addressed by its app id, `owner/alias` without the endpoint's sub-path (as fal's
own clients do): `fal-ai/flux/dev` is read back at `fal-ai/flux/requests/{id}`. fal queues
rather than refuses work, so an account needs no concurrency limit (config may set one);
while a request waits, its `queue_position` is reported on the job.

A request that ended badly is COMPLETED with an `error` in its status; its result then
answers with the app's own status and message (422 for a bad argument), which is the
error the job gets.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import quote, urlencode

from service.providers.account import AccountConfig
from service.providers.base import (
    AsyncProvider,
    CallbackRejected,
    Capabilities,
    GenerationRequest,
    Output,
    ProviderError,
    ProviderPermanentError,
    ProviderRetryableError,
    RemoteHandle,
)
from service.providers.fal_signing import FalSignatureVerifier
from service.providers.http import ProviderHTTP, classify_error_response, parse_json_object
from service.providers.images import checked_image
from service.providers.kinds import Kind, ProviderDeps
from service.providers.video import checked_video

DEFAULT_BASE_URL = "https://queue.fal.run"
DEFAULT_JWKS_URL = "https://rest.alpha.fal.ai/.well-known/jwks.json"
APP_NAMESPACES = frozenset({"workflows", "comfy"})
JWKS_BODY_LIMIT = 256 * 1024
# Cancelling what is gone is not an error. fal answers 400 (ALREADY_COMPLETED) for a
# request that has left its queue: one that started runs to its end, and is billed.
_CANCEL_NOOP_STATUSES = frozenset({404, 409, 410})
_STATUS_CODE = re.compile(r"status code:?\s*(\d{3})", re.IGNORECASE)


class FalConfig(AccountConfig):
    kind: Literal["fal"]
    base_url: str = DEFAULT_BASE_URL
    token_env: str | None = "FAL_KEY"
    webhook_jwks_url: str = DEFAULT_JWKS_URL


def app_id(model_ref: str) -> str:
    """`fal-ai/flux/dev` -> `fal-ai/flux`; `workflows/owner/app/x` -> `workflows/owner/app`."""
    parts = [part for part in model_ref.strip("/").split("/") if part]
    keep = 3 if parts and parts[0] in APP_NAMESPACES else 2
    return "/".join(parts[:keep])


def fal_arguments(request: GenerationRequest) -> dict[str, Any]:
    """The endpoint's input, by fal's conventions: an image endpoint takes
    `image_size: {width, height}`; a video endpoint `duration` (seconds, a string as most
    of fal's video models want), `resolution` ("720p") and `aspect_ratio`. One reference
    image goes as `image_url`, several as `image_urls`, a mask as `mask_url`, all as data
    URIs. The model's allowed `options` go last and win."""
    args: dict[str, Any] = {"prompt": request.prompt, "seed": request.seed}
    if request.negative_prompt:
        args["negative_prompt"] = request.negative_prompt
    if request.media == "video":
        duration = request.duration_s or 5.0
        args["duration"] = str(int(duration)) if duration == int(duration) else str(duration)
        args["resolution"] = f"{min(request.width, request.height)}p"  # the short side
        divisor = math.gcd(request.width, request.height)
        args["aspect_ratio"] = f"{request.width // divisor}:{request.height // divisor}"
        if request.fps:
            args["fps"] = request.fps
    else:
        args["image_size"] = {"width": request.width, "height": request.height}
        args["num_images"] = 1
        args["output_format"] = "jpeg" if request.format == "jpeg" else "png"
    references = request.references()
    if len(references) == 1:
        args["image_url"] = references[0].data_uri()
    elif references:
        args["image_urls"] = [item.data_uri() for item in references]
    mask = request.input("mask")
    if mask is not None:
        args["mask_url"] = mask.data_uri()
    return args | dict(request.options)


class FalProvider(AsyncProvider):
    kind = "fal"
    capabilities = Capabilities(
        media=frozenset({"image", "video"}),
        formats=frozenset({"png", "jpeg", "webp", "mp4", "webm"}),
        inputs=frozenset({"reference", "mask"}),
        callbacks=True,
        cancel=True,
    )

    def __init__(self, name: str, config: FalConfig, deps: ProviderDeps | None = None) -> None:
        self.name = name
        self.config = config
        deps = deps or ProviderDeps()
        self._http = ProviderHTTP(
            name, config, deps.http, settings=deps.settings, auth_scheme="Key"
        )
        self.verifier = FalSignatureVerifier(name, self._fetch_jwks)

    async def submit(self, request: GenerationRequest) -> RemoteHandle:
        path = request.model_ref.strip("/")
        if request.callback_url:
            path += "?" + urlencode({"fal_webhook": request.callback_url})
        payload = await self._http.request_json("POST", path, json_body=fal_arguments(request))
        request_id = payload.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            raise ProviderRetryableError(
                "malformed_response", f"{self.name}: submit answered without a request_id"
            )
        data = {"model": request.model_ref, "app": app_id(request.model_ref)}
        return RemoteHandle(request_id, "pending", data, queue_position=_position(payload))

    async def poll(self, handle: RemoteHandle) -> RemoteHandle:
        app = str(handle.data.get("app") or app_id(str(handle.data.get("model", ""))))
        status = await self._http.request_json(
            "GET", f"{self._request_path(app, handle.id)}/status"
        )
        state = status.get("status")
        data = dict(handle.data)
        if state == "IN_QUEUE":
            return RemoteHandle(handle.id, "pending", data, queue_position=_position(status))
        if state == "IN_PROGRESS":
            return RemoteHandle(handle.id, "pending", data)
        if state != "COMPLETED":
            raise ProviderRetryableError(
                "malformed_response", f"{self.name}: unknown status {str(state)[:50]!r}"
            )
        if isinstance(status.get("metrics"), Mapping):
            data["metrics"] = dict(status["metrics"])
        return await self._completed(app, handle.id, data, status)

    async def _completed(
        self, app: str, request_id: str, data: dict[str, Any], status: Mapping[str, Any]
    ) -> RemoteHandle:
        """Read the result of a COMPLETED request: the output, or the app's error."""
        error_text = status.get("error")
        if status.get("error_type") == "request_cancelled":
            error = ProviderRetryableError("canceled", f"{self.name}: {error_text or 'cancelled'}")
            return RemoteHandle(request_id, "canceled", data, error)
        try:
            result = await self._http.request_json("GET", self._request_path(app, request_id))
        except ProviderError as exc:
            # Without an `error` in the status, a 5xx may be fal's passing fault: poll again.
            if not error_text and exc.retryable:
                raise
            return RemoteHandle(request_id, "failed", data, exc)
        return RemoteHandle(request_id, "succeeded", data | {"result": result})

    async def fetch_result(self, handle: RemoteHandle, request: GenerationRequest) -> Output:
        if handle.status != "succeeded":
            raise handle.error or ProviderPermanentError(
                "invalid_state", f"{self.name}: request {handle.id} is {handle.status}"
            )
        result = handle.data.get("result")
        if not isinstance(result, Mapping):  # a webhook without its payload (too large)
            path = self._request_path(app_id(request.model_ref), handle.id)
            result = await self._http.request_json("GET", path)
        usage = _usage(handle.data, result)
        if request.media == "video":
            data = await self._http.download(self._output_url(handle.id, result, "video"))
            return await checked_video(data, request, provider=self.name, usage=usage)
        flags = result.get("has_nsfw_concepts")
        if flags is True or (isinstance(flags, list) and any(flag is True for flag in flags)):
            raise ProviderPermanentError(
                "content_policy", f"{self.name}: request {handle.id} was flagged as NSFW"
            )
        data = await self._http.download(self._output_url(handle.id, result, "image"))
        return await checked_image(data, request.format, provider=self.name, usage=usage)

    async def cancel(self, handle: RemoteHandle) -> None:
        app = str(handle.data.get("app") or app_id(str(handle.data.get("model", ""))))
        try:
            await self._http.request_json("PUT", f"{self._request_path(app, handle.id)}/cancel")
        except ProviderError as exc:
            if exc.http_status == 400:
                raise ProviderPermanentError(
                    "not_cancelled",
                    f"{self.name}: request {handle.id} had left fal's queue; fal runs it to "
                    "its end",
                    http_status=400,
                ) from exc
            if exc.http_status not in _CANCEL_NOOP_STATUSES:
                raise

    async def parse_callback(self, headers: Mapping[str, str], body: bytes) -> RemoteHandle:
        """Verify the signature (keys from the JWKS), then read `{request_id, status: OK|
        ERROR, payload, error}`. A failure to fetch the keys raises ProviderError (try
        later), not CallbackRejected."""
        request_id = await self.verifier.verify(headers, body)
        try:
            message = parse_json_object(self.name, body)
        except ProviderError as exc:
            raise CallbackRejected(f"{self.name} callback: body is not JSON: {exc}") from exc
        if message.get("request_id") != request_id:
            raise CallbackRejected(f"{self.name} callback: request_id differs from its header")
        payload = message.get("payload")
        if message.get("status") == "OK":
            data = {"result": payload} if isinstance(payload, Mapping) else {}
            return RemoteHandle(request_id, "succeeded", data)
        if message.get("status") == "ERROR":
            return RemoteHandle(request_id, "failed", {}, self._callback_error(message))
        raise CallbackRejected(f"{self.name} callback: unknown status")

    def _callback_error(self, message: Mapping[str, Any]) -> ProviderError:
        """fal says `error: "Invalid status code: 422"` and puts the app's body in
        `payload`: classified as the same answer from the result URL would be."""
        text = str(message.get("error") or "")
        found = _STATUS_CODE.search(text)
        status = int(found.group(1)) if found else 500
        payload = message.get("payload")
        body = text.encode() if payload is None else _json_bytes(payload, text)
        return classify_error_response(self.name, status, {}, body)

    async def aclose(self) -> None:
        await self._http.aclose()

    def _request_path(self, app: str, request_id: str) -> str:
        if not app:
            raise ProviderPermanentError("invalid_state", f"{self.name}: handle has no app id")
        return f"{app}/requests/{quote(request_id, safe='')}"

    def _output_url(self, request_id: str, result: Mapping[str, Any], media: str) -> str:
        """`video.url`, or the first of `images[].url` (or `image.url`)."""
        item: Any = result.get(media)
        if item is None and media == "image":
            images = result.get("images")
            item = images[0] if isinstance(images, list) and images else None
        url = item.get("url") if isinstance(item, Mapping) else None
        if not isinstance(url, str) or not url:
            raise ProviderRetryableError(
                "malformed_response", f"{self.name}: request {request_id} has no {media} URL"
            )
        return url

    async def _fetch_jwks(self) -> bytes:
        return await self._http.download(self.config.webhook_jwks_url, limit=JWKS_BODY_LIMIT)


def _position(payload: Mapping[str, Any]) -> int | None:
    value = payload.get("queue_position")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _usage(data: Mapping[str, Any], result: Mapping[str, Any]) -> dict[str, Any]:
    usage: dict[str, Any] = {}
    metrics = data.get("metrics")
    if isinstance(metrics, Mapping) and isinstance(metrics.get("inference_time"), int | float):
        usage["inference_time"] = metrics["inference_time"]
    if isinstance(result.get("seed"), int):
        usage["seed"] = result["seed"]
    return usage


def _json_bytes(payload: Any, fallback: str) -> bytes:
    try:
        return json.dumps(payload).encode()
    except (TypeError, ValueError):
        return fallback.encode()


def _factory(name: str, config: FalConfig, deps: ProviderDeps) -> FalProvider:
    return FalProvider(name, config, deps)


KIND = Kind("fal", FalConfig, _factory)
