"""Replicate: asynchronous predictions, finished by polling or by a signed webhook.

A prediction is created once and then only looked at: `submit` returns its id at once,
`poll` and `parse_callback` report its state, and `fetch_result` downloads the output
as soon as it has succeeded, because Replicate's output URLs expire after an hour.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

import httpx

from service.kit.signing import SignatureMismatch, WebhookVerificationError, verify_webhook
from service.providers.account import AccountConfig
from service.providers.base import (
    CONTENT_TYPES,
    AsyncProvider,
    CallbackRejected,
    Capabilities,
    GenerationRequest,
    Output,
    ProviderError,
    ProviderPermanentError,
    ProviderRetryableError,
    RemoteHandle,
    RemoteStatus,
)
from service.providers.http import ProviderHTTP, parse_json_object
from service.providers.images import checked_image
from service.providers.kinds import Kind, ProviderDeps
from service.providers.video import checked_video

# The aspect ratios FLUX-family models accept; others are sent as width and height only.
ASPECT_RATIOS = frozenset(
    {"1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"}
)
OUTPUT_FORMATS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
CALLBACK_TOLERANCE_S = 300
# A signature that does not match a fetched secret refetches it (it may have been
# rotated), at most this often, so forged callbacks cannot hammer the API.
_SECRET_REFRESH_S = 60.0

_STATUSES: dict[str, RemoteStatus] = {
    "starting": "pending",
    "processing": "pending",
    "succeeded": "succeeded",
    "failed": "failed",
    "canceled": "canceled",
    "aborted": "canceled",
}
# A failed prediction is retried unless its error says the input can never work: these
# words (in Replicate's and its models' error texts) are the only permanent failures.
_PERMANENT_FAILURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("content_policy", ("nsfw", "safety", "content policy", "sensitive", "flagged")),
    ("invalid_input", ("input validation", "invalid input", "validation error")),
    ("model_not_found", ("model not found", "version not found", "does not exist")),
)
# Listing pages looked through for a lost create before giving up (100 predictions each).
_LOOKUP_MAX_PAGES = 50
# Cancelling something that is gone or already finished is not an error.
_CANCEL_NOOP_STATUSES = frozenset({400, 404, 409, 410, 422})


class ReplicateConfig(AccountConfig):
    kind: Literal["replicate"]
    # Where the whsec_ secret for verifying this account's callbacks comes from, when not
    # fetched from Replicate (it serves it at GET /v1/webhooks/default/secret).
    webhook_secret_env: str | None = None


class ReplicateProvider(AsyncProvider):
    kind = "replicate"
    capabilities = Capabilities(
        media=frozenset({"image", "video"}),
        formats=frozenset(CONTENT_TYPES),
        inputs=frozenset({"reference", "mask"}),
        callbacks=True,
        cancel=True,
    )

    def __init__(
        self,
        name: str,
        account: ReplicateConfig,
        *,
        http: httpx.AsyncClient | None = None,
        deps: ProviderDeps | None = None,
    ) -> None:
        self.name = name
        self.account = account
        settings = deps.settings if deps is not None else None
        self._http = ProviderHTTP(name, account, http, settings=settings)
        self._secret: str | None = None
        self._secret_fetched_at = -math.inf
        self._secret_lock = asyncio.Lock()

    async def submit(self, request: GenerationRequest) -> RemoteHandle:
        path, body = prediction_request(request)
        if request.callback_url:
            body["webhook"] = request.callback_url
            body["webhook_events_filter"] = ["completed"]
        payload = await self._http.request_json("POST", path, json_body=body)
        handle = self.parse_remote(payload)
        # The id is all a poll needs: keep nothing else with the job while it runs.
        return handle if handle.finished else RemoteHandle(handle.id, handle.status)

    async def find_submitted(
        self, request: GenerationRequest, since: datetime, *, exclude: frozenset[str]
    ) -> RemoteHandle | None:
        """Page through the account's predictions, newest first, down to `since`, for one
        with this model (or version) and exactly this input. Too many pages to reach
        `since` is an error: resubmitting blind is what the lookup is there to avoid."""
        _, body = prediction_request(request)
        wanted = _Wanted(request.model_ref, body["input"])
        since_text = since.astimezone(UTC).isoformat().replace("+00:00", "Z")
        page = await self._http.request_json(
            "GET", f"v1/predictions?created_after={quote(since_text, '')}"
        )
        for _ in range(_LOOKUP_MAX_PAGES):
            results = page.get("results")
            if not isinstance(results, list):
                raise ProviderRetryableError(
                    "malformed_response", f"{self.name}: prediction list without results"
                )
            reached_since = False
            for item in results:
                created = _created_at(item)
                if created is not None and created < since:
                    reached_since = True
                    break
                # One whose output is gone (an hour after it ended) cannot be resumed.
                usable = not item.get("data_removed") and item.get("id") not in exclude
                if usable and wanted.matches(item):
                    return self.parse_remote(item)
            following = page.get("next")
            if reached_since or not isinstance(following, str) or not following:
                return None
            page = await self._http.get_json_url(following)
        raise ProviderRetryableError(
            "lookup_incomplete",
            f"{self.name}: over {_LOOKUP_MAX_PAGES} pages of predictions since {since_text}",
        )

    async def poll(self, handle: RemoteHandle) -> RemoteHandle:
        payload = await self._http.request_json("GET", f"v1/predictions/{quote(handle.id, '')}")
        return self.parse_remote(payload)

    async def fetch_result(self, remote: RemoteHandle, request: GenerationRequest) -> Output:
        if remote.status != "succeeded":
            raise remote.error or ProviderPermanentError(
                "invalid_state", f"{self.name}: prediction {remote.id} is {remote.status}"
            )
        url = _first_output(remote.data.get("output"))
        if url is None and remote.data.get("data_removed"):
            raise ProviderPermanentError(
                "output_expired", f"{self.name}: prediction {remote.id}'s output was removed"
            )
        if url is None:
            raise ProviderRetryableError(
                "malformed_response",
                f"{self.name}: prediction {remote.id} succeeded without an output URL",
            )
        data = await self._http.download(url)
        usage = run_usage(remote.data)
        if request.media == "video":
            return await checked_video(data, request, provider=self.name, usage=usage)
        return await checked_image(data, request.format, provider=self.name, usage=usage)

    async def cancel(self, handle: RemoteHandle) -> None:
        try:
            await self._http.request_json("POST", f"v1/predictions/{quote(handle.id, '')}/cancel")
        except ProviderError as exc:
            if exc.http_status not in _CANCEL_NOOP_STATUSES:
                raise

    async def parse_callback(self, headers: Mapping[str, str], body: bytes) -> RemoteHandle:
        """Verify the Standard Webhooks signature, then parse the prediction. A failure to
        fetch the signing secret raises ProviderError (try later), not CallbackRejected."""
        secret = await self._webhook_secret()
        try:
            verify_webhook(secret, headers, body, tolerance_s=CALLBACK_TOLERANCE_S)
        except SignatureMismatch as exc:
            fresh = await self._refetch_secret(stale=secret)
            if fresh is None:
                raise CallbackRejected(f"{self.name} callback: {exc}") from exc
            try:
                verify_webhook(fresh, headers, body, tolerance_s=CALLBACK_TOLERANCE_S)
            except WebhookVerificationError as again:
                raise CallbackRejected(f"{self.name} callback: {again}") from again
        except WebhookVerificationError as exc:
            raise CallbackRejected(f"{self.name} callback: {exc}") from exc
        try:
            return self.parse_remote(parse_json_object(self.name, body))
        except ProviderError as exc:
            raise CallbackRejected(
                f"{self.name} callback: body is not a prediction: {exc}"
            ) from exc

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _webhook_secret(self) -> str:
        """From `webhook_secret_env` when set; else fetched from Replicate once and cached."""
        env = self.account.webhook_secret_env
        if env:
            secret = os.environ.get(env)
            if not secret:
                raise CallbackRejected(
                    f"{self.name} callback: no webhook secret (set the environment variable {env})"
                )
            return secret
        async with self._secret_lock:
            if self._secret is None:
                self._secret = await self._fetch_secret()
            return self._secret

    async def _refetch_secret(self, *, stale: str) -> str | None:
        """A fresh secret if the cached one may have been rotated; None when the secret
        comes from the environment, is unchanged, or was fetched too recently."""
        if self.account.webhook_secret_env:
            return None
        async with self._secret_lock:
            if self._secret is not None and self._secret != stale:
                return self._secret  # another callback refreshed it meanwhile
            if time.monotonic() - self._secret_fetched_at < _SECRET_REFRESH_S:
                return None
            self._secret = await self._fetch_secret()
            return self._secret if self._secret != stale else None

    async def _fetch_secret(self) -> str:
        if not self._http.token:
            raise CallbackRejected(
                f"{self.name} callback: cannot fetch the webhook secret without a token "
                f"(set {self.account.token_env} or configure webhook_secret_env)"
            )
        payload = await self._http.request_json("GET", "v1/webhooks/default/secret")
        self._secret_fetched_at = time.monotonic()
        key = payload.get("key")
        if not isinstance(key, str) or not key:
            raise ProviderRetryableError(
                "malformed_response", f"{self.name}: webhook secret response has no key"
            )
        return key

    def parse_remote(self, payload: Mapping[str, Any]) -> RemoteHandle:
        """A handle from a prediction object (from a poll, a callback or a lookup);
        anything that is not one is `malformed_response`."""
        remote_id = payload.get("id")
        raw_status = payload.get("status")
        status = _STATUSES.get(raw_status) if isinstance(raw_status, str) else None
        if not isinstance(remote_id, str) or not remote_id or status is None:
            raise ProviderRetryableError(
                "malformed_response",
                f"{self.name}: not a prediction (id={remote_id!r}, status={raw_status!r})",
            )
        kept = {key: value for key, value in payload.items() if key != "logs"}
        error = self._prediction_error(remote_id, raw_status, payload)
        return RemoteHandle(id=remote_id, status=status, data=kept, error=error)

    def _prediction_error(
        self, remote_id: str, status: Any, payload: Mapping[str, Any]
    ) -> ProviderError | None:
        if status == "failed":
            return prediction_failure(
                self.name, remote_id, payload.get("error"), run_usage(payload)
            )
        if status == "aborted":
            return ProviderRetryableError(
                "aborted", f"{self.name}: prediction {remote_id} was aborted before it ran"
            )
        if status == "canceled":
            return ProviderPermanentError(
                "canceled", f"{self.name}: prediction {remote_id} was canceled"
            )
        return None


def prediction_request(request: GenerationRequest) -> tuple[str, dict[str, Any]]:
    """The path and body that create a prediction: by model (`owner/name`, the latest
    version) or by an exact version (`owner/name:version`)."""
    model, _, version = request.model_ref.partition(":")
    owner, slash, name = model.partition("/")
    by_version = ":" in request.model_ref
    if not (owner and slash and name) or "/" in name or (by_version and not version):
        raise ProviderPermanentError(
            "invalid_input",
            f"replicate model ref must be owner/name or owner/name:version, "
            f"got {request.model_ref!r}",
        )
    body: dict[str, Any] = {"input": prediction_input(request)}
    if version:
        body["version"] = version
        return "v1/predictions", body
    return f"v1/models/{quote(owner, '')}/{quote(name, '')}/predictions", body


def prediction_input(request: GenerationRequest) -> dict[str, Any]:
    """The prediction's input. A job mapped to an aspect ratio (a model that takes ratios,
    service.catalog.fit) sends only the ratio: the model picks the size (FLUX: 16:9 is
    1344x768), and width and height would be refused or, worse, ignored unseen. Else
    width and height, with the ratio guessed from them for FLUX-family models."""
    values: dict[str, Any] = {"prompt": request.prompt}
    if request.aspect_ratio is not None:
        values["aspect_ratio"] = request.aspect_ratio
    else:
        values |= {"width": request.width, "height": request.height}
        ratio = aspect_ratio(request.width, request.height)
        if ratio is not None:
            values["aspect_ratio"] = ratio
    values["seed"] = request.seed
    if request.media == "video":
        # Replicate's video models name these alike; anything else goes in `options`.
        if request.duration_s is not None:
            values["duration"] = request.duration_s
        if request.fps is not None:
            values["fps"] = request.fps
    else:
        values["output_format"] = OUTPUT_FORMATS[request.format]
        values["num_outputs"] = 1
    if request.negative_prompt:
        values["negative_prompt"] = request.negative_prompt
    reference, mask = request.input("reference"), request.input("mask")
    if reference is not None:  # the file's URL when it has one, else the bytes inline
        values["image"] = reference.url or reference.data_uri()
    if mask is not None:
        values["mask"] = mask.url or mask.data_uri()
    values.update(request.options)
    return values


def aspect_ratio(width: int, height: int) -> str | None:
    if width <= 0 or height <= 0:
        return None
    divisor = math.gcd(width, height)
    ratio = f"{width // divisor}:{height // divisor}"
    return ratio if ratio in ASPECT_RATIOS else None


def _first_output(output: Any) -> str | None:
    if isinstance(output, list) and output:
        output = output[0]
    return output if isinstance(output, str) and output else None


def prediction_failure(
    provider: str, remote_id: str, error: Any, usage: Mapping[str, Any] | None = None
) -> ProviderError:
    """The one place a `failed` prediction is classified. Permanent only when the error
    says the input can never work (content policy, invalid input, no such model);
    anything else (out of memory, a worker crash, a timeout, no reason at all) is worth
    another attempt, as a 5xx is.

    A failed prediction ran, and Replicate bills the time it ran (`usage`, its
    predict_time): it is `billable`, and costs that on a model `charged_on_failure`. A
    canceled or aborted one never is."""
    text = " ".join(str(error).split()) if error else ""
    message = f"{provider}: prediction {remote_id} failed: {text or 'no reason given'}"
    lowered = text.lower()
    for code, words in _PERMANENT_FAILURES:
        if any(word in lowered for word in words):
            return ProviderPermanentError(code, message, billable=True, usage=usage)
    return ProviderRetryableError("provider_failed", message, billable=True, usage=usage)


def run_usage(prediction: Mapping[str, Any]) -> dict[str, Any]:
    """What a prediction used, as Replicate reports it (`metrics.predict_time`, the
    seconds it ran: what hardware-priced models are billed on)."""
    metrics = prediction.get("metrics")
    if isinstance(metrics, Mapping) and metrics.get("predict_time") is not None:
        return {"predict_time": metrics["predict_time"]}
    return {}


class _Wanted:
    """What a create sent, to recognise its prediction in a listing: the model (or the
    exact version) and the input, compared as JSON values."""

    def __init__(self, model_ref: str, input_: Mapping[str, Any]) -> None:
        self.model, _, self.version = model_ref.partition(":")
        self.input = dict(input_)

    def matches(self, item: Any) -> bool:
        if not isinstance(item, Mapping) or item.get("input") != self.input:
            return False
        if self.version:
            return bool(item.get("version") == self.version)
        return bool(item.get("model") == self.model)


def _created_at(item: Any) -> datetime | None:
    raw = item.get("created_at") if isinstance(item, Mapping) else None
    if not isinstance(raw, str):
        return None
    try:
        created = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return created if created.tzinfo is not None else None


KIND = Kind(
    "replicate",
    ReplicateConfig,
    lambda name, config, deps: ReplicateProvider(name, config, http=deps.http, deps=deps),
)
