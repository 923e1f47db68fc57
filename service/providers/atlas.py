"""Atlas Cloud: images and videos as asynchronous predictions, finished by polling.

`submit` posts to `generateImage` or `generateVideo` (by the job's media) and keeps the
prediction's id; `poll` reads `prediction/{id}`; `fetch_result` downloads the output
as soon as it is completed (output URLs are temporary) and checks it decodes.

Atlas documents two response shapes, and both are read: the prediction wrapped in
`{"code": 200, "data": {...}}` with `outputs: [url]`, or the prediction at the top level
with `output: {"image_url" | "video_url": url}`. Errors come as `{"code", "msg"}`,
sometimes inside a 200, and a failed prediction says why in `error` (and `error_code`:
1039 is content moderation). Atlas sends no callbacks a worker could rely on, and
offers no cancel: predictions are polled to their end.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import quote

from service.providers.account import AccountConfig
from service.providers.base import (
    IMAGE_FORMATS,
    VIDEO_FORMATS,
    AsyncProvider,
    Capabilities,
    GenerationRequest,
    Output,
    ProviderError,
    ProviderPermanentError,
    ProviderRetryableError,
    RemoteHandle,
    RemoteStatus,
)
from service.providers.http import ProviderHTTP, classify_error_response
from service.providers.images import checked_image
from service.providers.kinds import Kind, ProviderDeps

_STATUSES: dict[str, RemoteStatus] = {
    "created": "pending",
    "queued": "pending",
    "pending": "pending",
    "starting": "pending",
    "processing": "pending",
    "in_progress": "pending",
    "completed": "succeeded",
    "succeeded": "succeeded",
    "success": "succeeded",
    "failed": "failed",
    "error": "failed",
    "canceled": "canceled",
    "cancelled": "canceled",
}
# Atlas's platform code for an input or output refused by content moderation.
MODERATION_CODE = 1039
# A failed prediction is retried unless its error says the input can never work.
_PERMANENT_FAILURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("content_policy", ("moderation", "sensitive", "nsfw", "content policy", "safety")),
    ("invalid_input", ("invalid", "validation", "not supported", "unsupported")),
)
# The bulky or useless parts of a prediction that need not be stored with the job.
_DROPPED_KEYS = frozenset({"logs", "input", "has_nsfw_contents"})
_MESSAGE_CHARS = 500


class AtlasConfig(AccountConfig):
    """An Atlas Cloud account: `base_url` is the API's origin (the `/api/v1/model/...`
    paths are added; a base_url that already ends in `/api/v1` works too)."""

    kind: Literal["atlas"] = "atlas"
    base_url: str = "https://api.atlascloud.ai"
    token_env: str | None = "ATLASCLOUD_API_KEY"


class AtlasProvider(AsyncProvider):
    kind = "atlas"
    capabilities = Capabilities(
        media=frozenset({"image", "video"}),
        # Atlas's videos are MP4; a WebM job gets them transcoded (service.providers.video).
        formats=frozenset({*IMAGE_FORMATS, *VIDEO_FORMATS}),
        inputs=frozenset({"reference"}),
    )

    def __init__(self, name: str, config: AtlasConfig, deps: ProviderDeps) -> None:
        self.name = name
        self.config = config
        self._http = ProviderHTTP(name, config, deps.http, settings=deps.settings)
        base = config.base_url.rstrip("/")
        self._prefix = "model" if base.endswith("/api/v1") else "api/v1/model"

    async def submit(self, request: GenerationRequest) -> RemoteHandle:
        endpoint, body = generation_request(request)
        payload = await self._http.request_json(
            "POST", f"{self._prefix}/{endpoint}", json_body=body
        )
        return self.parse_prediction(payload)

    async def poll(self, handle: RemoteHandle) -> RemoteHandle:
        payload = await self._http.request_json(
            "GET", f"{self._prefix}/prediction/{quote(handle.id, '')}"
        )
        return self.parse_prediction(payload)

    async def fetch_result(self, handle: RemoteHandle, request: GenerationRequest) -> Output:
        if handle.status != "succeeded":
            raise handle.error or ProviderPermanentError(
                "invalid_state", f"{self.name}: prediction {handle.id} is {handle.status}"
            )
        url = output_url(handle.data, request.media)
        if url is None:
            raise ProviderRetryableError(
                "malformed_response",
                f"{self.name}: prediction {handle.id} completed without an output URL",
            )
        data = await self._http.download(url)
        usage = _usage(handle.data)
        if request.media == "video":
            # Imported here: only a video job needs PyAV's decoder.
            # (the ignore: video.py lands on main beside this module)
            from service.providers.video import (  # type: ignore[import-not-found,unused-ignore]
                checked_video,
            )

            output: Output = await checked_video(data, request, provider=self.name, usage=usage)
            return output
        return await checked_image(data, request.format, provider=self.name, usage=usage)

    async def aclose(self) -> None:
        await self._http.aclose()

    def parse_prediction(self, payload: Mapping[str, Any]) -> RemoteHandle:
        """A handle from either shape of a prediction (a submit's answer or a poll's);
        an error envelope inside a 200 is classified as its code says, anything else
        that is not a prediction is `malformed_response`."""
        record = self._record(payload)
        raw_id = record.get("id", record.get("predictionId"))
        raw_status = record.get("status")
        status = _STATUSES.get(raw_status.lower()) if isinstance(raw_status, str) else None
        if not isinstance(raw_id, str) or not raw_id or status is None:
            raise ProviderRetryableError(
                "malformed_response",
                f"{self.name}: not a prediction (id={raw_id!r}, status={raw_status!r})",
            )
        kept = {key: value for key, value in record.items() if key not in _DROPPED_KEYS}
        error: ProviderError | None = None
        if status == "failed":
            error = prediction_failure(
                self.name, raw_id, record.get("error"), record.get("error_code")
            )
            # It ran and failed: billed where the model is charged_on_failure.
            error.billable, error.usage = True, _usage(record)
        elif status == "canceled":
            error = ProviderPermanentError(
                "canceled", f"{self.name}: prediction {raw_id} was canceled"
            )
        return RemoteHandle(raw_id, status, kept, error)

    def _record(self, payload: Mapping[str, Any]) -> Mapping[str, Any]:
        code = payload.get("code")
        data = payload.get("data")
        if isinstance(code, int) and not isinstance(code, bool) and code not in (0, 200):
            body = json.dumps(payload).encode()
            raise classify_error_response(self.name, code, {}, body)
        return data if isinstance(data, Mapping) else payload


def generation_request(request: GenerationRequest) -> tuple[str, dict[str, Any]]:
    """The endpoint and body that start a generation. The model's `options` are added
    last and may set any field but `model`."""
    if request.input("mask") is not None:
        raise ProviderPermanentError("invalid_input", "atlas models take no mask")
    references = request.references()
    if len(references) > 1:
        raise ProviderPermanentError(
            "invalid_input",
            f"atlas takes one reference image (image_url), got {len(references)}",
        )
    body: dict[str, Any] = {"model": request.model_ref, "prompt": request.prompt}
    if request.media == "video":
        endpoint = "generateVideo"
        body |= _size(request) or {"width": request.width, "height": request.height}
        if request.duration_s is not None:
            whole = float(request.duration_s).is_integer()
            body["duration"] = int(request.duration_s) if whole else request.duration_s
        if request.fps is not None:
            body["fps"] = request.fps
    else:
        endpoint = "generateImage"
        body |= _size(request) or {"size": f"{request.width}*{request.height}"}
        body["output_format"] = request.format
    body["seed"] = request.seed
    if request.negative_prompt:
        body["negative_prompt"] = request.negative_prompt
    if references:
        reference = references[0]
        body["image_url"] = reference.url or reference.data_uri()
    body |= {key: value for key, value in request.options.items() if key != "model"}
    return endpoint, body


def _size(request: GenerationRequest) -> dict[str, Any]:
    """A job mapped to an aspect ratio (a model that takes ratios, service.catalog.fit)
    sends `aspect_ratio` alone, as Atlas's ratio models name it; the model picks the
    size. Empty when the job was not mapped: it sends its width and height."""
    return {"aspect_ratio": request.aspect_ratio} if request.aspect_ratio is not None else {}


def output_url(record: Mapping[str, Any], media: str) -> str | None:
    """The first output URL in either shape: `outputs: [url | {"url"}]`, or `output`
    as `{"<media>_url" | "url"}`, a URL, or a list of them."""
    for candidate in (record.get("outputs"), record.get("output")):
        if isinstance(candidate, Mapping):
            candidate = [candidate.get(f"{media}_url") or candidate.get("url")]
        elif isinstance(candidate, str):
            candidate = [candidate]
        if not isinstance(candidate, list):
            continue
        for item in candidate:
            url = item.get("url") if isinstance(item, Mapping) else item
            if isinstance(url, str) and url:
                return url
    return None


def prediction_failure(
    provider: str, prediction_id: str, error: Any, error_code: Any
) -> ProviderError:
    """Why a prediction failed, classified: moderation (error_code 1039) and invalid
    input are permanent; anything else (a worker crash, a timeout, no reason) may
    succeed on another attempt."""
    reason = " ".join(error.split()) if isinstance(error, str) and error.strip() else None
    text = reason or "no reason given"
    if len(text) > _MESSAGE_CHARS:
        text = text[: _MESSAGE_CHARS - 3] + "..."
    if error_code is not None and not isinstance(error_code, bool | dict | list):
        text += f" (error_code {error_code})"
    message = f"{provider}: prediction {prediction_id} failed: {text}"
    if error_code == MODERATION_CODE or str(error_code) == str(MODERATION_CODE):
        return ProviderPermanentError("content_policy", message)
    lowered = (reason or "").lower()
    for code, words in _PERMANENT_FAILURES:
        if any(word in lowered for word in words):
            return ProviderPermanentError(code, message)
    return ProviderRetryableError("generation_failed", message)


def _usage(record: Mapping[str, Any]) -> dict[str, Any]:
    metrics = record.get("metrics")
    if isinstance(metrics, Mapping) and metrics.get("predict_time") is not None:
        return {"predict_time": metrics["predict_time"]}
    return {}


def build(name: str, config: AtlasConfig, deps: ProviderDeps) -> AtlasProvider:
    return AtlasProvider(name, config, deps)


KIND = Kind("atlas", AtlasConfig, build)
