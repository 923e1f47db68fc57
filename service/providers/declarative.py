"""Declarative HTTP (kind `http`): any JSON API from configuration alone.

The account's configuration (service.providers.declarative_config) says which request
to send, with a body template, and where the output is in the answer. Without `id`,
the API is synchronous: the submit's answer holds the output (a URL or base64) and a
worker waits for it (`DeclarativeSyncProvider`). With `id`, `poll` and `status`, the
answer holds an id; the engine stores it and polls until the status says the output is
there (`DeclarativeAsyncProvider`).

Errors are classified from the configured statuses (`errors`), then as for every other
provider (service.providers.http). Output URLs are the provider's choice: they are
fetched through the SSRF guard.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from service.config import get_settings
from service.kit.jsonpath import JsonPathNotFound
from service.kit.ssrf import guarded_client
from service.kit.templating import TemplateError, render_value
from service.kit.tls import tls_context
from service.providers.base import (
    CONTENT_TYPES,
    AsyncProvider,
    Capabilities,
    GenerationRequest,
    InputRole,
    Output,
    ProviderError,
    ProviderPermanentError,
    ProviderRateLimited,
    ProviderRetryableError,
    RemoteHandle,
    SyncProvider,
)
from service.providers.declarative_config import (
    INPUT_VARIABLES,
    EnvValue,
    ErrorsSpec,
    HttpConfig,
    RequestSpec,
    compiled_path,
)
from service.providers.http import (
    CONNECT_TIMEOUT_S,
    JSON_BODY_LIMIT,
    USER_AGENT,
    ProviderHTTP,
    classify_error_response,
    error_details,
    exchange,
    join_url,
    retry_after_hint,
)
from service.providers.images import checked_image
from service.providers.kinds import Kind, ProviderDeps
from service.providers.video import checked_video

__all__ = ["KIND", "DeclarativeAsyncProvider", "DeclarativeSyncProvider", "HttpConfig"]

# Request text and provider ids go into paths quoted (no '/', '?', '#' of their own);
# the model's ref may hold '/' (an operator writes it: `fal-ai/flux/dev`).
_PATH_SAFE = {"ref": "/"}


def request_variables(request: GenerationRequest) -> dict[str, Any]:
    """What a submit template may read (declarative_config.SUBMIT_VARIABLES)."""
    return {
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt or "",
        "ref": request.model_ref,
        "width": request.width,
        "height": request.height,
        "seed": request.seed,
        "format": request.format,
        "media": request.media,
        "duration_s": request.duration_s,
        "fps": request.fps,
        "options": dict(request.options),
        **{name: _input(request, role) for name, role in INPUT_VARIABLES.items()},
    }


def _input(request: GenerationRequest, role: InputRole) -> str | None:
    image = request.input(role)
    if image is None:
        return None
    return image.url or image.data_uri()


def render_body(value: Any, variables: dict[str, Any], where: str) -> Any:
    """Render every string in a body template by the typing rule (templating.render_value);
    numbers, booleans and nulls stay as written. A failure names its place."""
    if isinstance(value, dict):
        return {key: render_body(item, variables, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [render_body(item, variables, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, str):
        try:
            return render_value(value, variables)
        except TemplateError as exc:
            raise ProviderPermanentError("template_error", f"{where}: {exc}") from None
    return value


def render_path(source: str, variables: dict[str, Any], where: str) -> str:
    quoted = {
        key: quote(value, safe=_PATH_SAFE.get(key, "")) if isinstance(value, str) else value
        for key, value in variables.items()
    }
    try:
        return str(render_value(source, quoted))
    except TemplateError as exc:
        raise ProviderPermanentError("template_error", f"{where}: {exc}") from None


def classify(
    provider: str, errors: ErrorsSpec, status: int, headers: Mapping[str, str], body: bytes
) -> ProviderError:
    """The configured meaning of a status first; otherwise the shared classification."""
    default = classify_error_response(provider, status, headers, body)
    text = default.message
    if status in errors.rate_limited:
        _, _, data = error_details(body)
        hint = _body_hint(errors, data) if errors.retry_after else None
        if hint is None:
            hint = retry_after_hint(headers, data, text)
        return ProviderRateLimited(text, retry_after_s=hint, http_status=status)
    if status in errors.permanent:
        code = default.code if not default.retryable else "permanent_status"
        return ProviderPermanentError(code, text, http_status=status)
    if status in errors.retryable:
        code = default.code if default.retryable else "retryable_status"
        return ProviderRetryableError(code, text, http_status=status)
    return default


def _body_hint(errors: ErrorsSpec, data: Any) -> float | None:
    assert errors.retry_after is not None
    value = compiled_path(errors.retry_after).get(data)
    if value is None or isinstance(value, bool | dict | list):
        return None
    # Seconds or an HTTP date, read the way a Retry-After header is.
    return retry_after_hint({"retry-after": str(value)}, None, "")


class _Declarative:
    """What both shapes share: building and sending a configured request, classifying
    its errors, and turning an answer into a checked output."""

    kind = "http"
    capabilities = Capabilities(
        media=frozenset({"image", "video"}),
        formats=frozenset(CONTENT_TYPES),
        inputs=frozenset({"reference", "mask"}),
    )

    def __init__(self, name: str, config: HttpConfig, deps: ProviderDeps) -> None:
        self.name = name
        self.config = config
        self._deps = deps
        self._client = deps.http or httpx.AsyncClient(follow_redirects=False, verify=tls_context())
        self._owns_client = deps.http is None
        # Output URLs are the provider's choice: ProviderHTTP fetches them through the
        # SSRF guard (an injected client, a test's, serves both). Made on first use.
        self._downloads: ProviderHTTP | None = None
        self._guarded: httpx.AsyncClient | None = None
        self._timeout = httpx.Timeout(config.timeout_s, connect=CONNECT_TIMEOUT_S)
        # A slow-dripping body could dodge the per-read timeout; this bounds the whole call.
        self._deadline_s = CONNECT_TIMEOUT_S + config.timeout_s

    def model_inputs(self, inject: Mapping[str, str]) -> frozenset[InputRole]:
        """Only the input images the configured body sends."""
        return self.config.input_roles()

    def _headers(self, with_body: bool) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if with_body:
            headers["Content-Type"] = "application/json"
        token = self.config.token()
        if self.config.token_env and not token:
            raise self._not_configured(self.config.token_env, "token_env")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        for header, value in self.config.headers.items():
            if isinstance(value, EnvValue):
                secret = os.environ.get(value.env)
                if not secret:
                    raise self._not_configured(value.env, f"headers.{header}")
                headers[header] = value.prefix + secret
            else:
                headers[header] = value
        return headers

    def _not_configured(self, variable: str, where: str) -> ProviderPermanentError:
        return ProviderPermanentError(
            "provider_not_configured",
            f"{self.name}: set the environment variable {variable} ({where})",
        )

    async def _call(self, spec: RequestSpec, variables: dict[str, Any], where: str) -> Any:
        """Send one configured request; its JSON answer, or a classified ProviderError."""
        path = render_path(spec.path, variables, f"{self.name}: {where}.path")
        body = None
        if spec.body is not None:
            body = render_body(spec.body, variables, f"{self.name}: {where}.body")
        headers = self._headers(body is not None)
        try:
            content = None if body is None else json.dumps(body).encode()
        except (TypeError, ValueError) as exc:  # `{{ range(3) }}` gives no JSON value
            raise ProviderPermanentError(
                "template_error", f"{self.name}: {where}.body: not JSON: {exc}"
            ) from None
        request = self._client.build_request(
            spec.method,
            join_url(self.config.base_url, path),
            content=content,
            headers=headers,
            timeout=self._timeout,
        )
        raw = await self._send(request)
        try:
            return json.loads(raw)
        except ValueError as exc:
            text = raw[:200].decode("utf-8", "replace")
            raise ProviderRetryableError(
                "malformed_response", f"{self.name}: {where} answer is not JSON: {text!r}"
            ) from exc

    async def _send(self, request: httpx.Request) -> bytes:
        status, headers, body = await exchange(
            self.name, self._client, request, JSON_BODY_LIMIT, self._deadline_s
        )
        if 200 <= status < 300:
            return body
        raise classify(self.name, self.config.errors, status, headers, body)

    def _result_value(self, document: Any) -> str:
        result = self.config.result
        try:
            value = compiled_path(result.path).find(document)
        except JsonPathNotFound as exc:
            raise ProviderRetryableError(
                "malformed_response", f"{self.name}: result.{result.key}: {exc}"
            ) from exc
        if not isinstance(value, str) or not value:
            raise ProviderRetryableError(
                "malformed_response",
                f"{self.name}: result.{result.key} {result.path} is not a string",
            )
        return value

    def _check_media(self, request: GenerationRequest) -> None:
        """Refuse before paying: the answer holds an image or a video, as configured."""
        result = self.config.result
        if request.media != result.media:
            raise ProviderPermanentError(
                "unsupported_media",
                f"{self.name}: the account's result gives {result.key}, not a {request.media}",
            )

    async def _output(self, value: str, request: GenerationRequest) -> Output:
        result = self.config.result
        if result.video_url:
            data = await self._download_http().download(value)
            return await checked_video(data, request, provider=self.name)
        if result.image_url:
            data = await self._download_http().download(value)
        else:
            data = self._decode_b64(value)
        return await checked_image(data, request.format, provider=self.name)

    def _decode_b64(self, value: str) -> bytes:
        if value.startswith("data:"):
            value = value.partition(",")[2]
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProviderRetryableError(
                "malformed_response", f"{self.name}: result.image_b64 is not valid base64"
            ) from exc

    def _download_http(self) -> ProviderHTTP:
        if self._downloads is None:
            downloads = self._deps.http
            if downloads is None:
                settings = self._deps.settings or get_settings()
                downloads = self._guarded = guarded_client(settings)
            self._downloads = ProviderHTTP(
                self.name, self.config, self._client, downloads=downloads
            )
        return self._downloads

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
        if self._guarded is not None:
            await self._guarded.aclose()


class DeclarativeSyncProvider(_Declarative, SyncProvider):
    """The submit's answer holds the output."""

    async def generate(self, request: GenerationRequest) -> Output:
        self._check_media(request)
        document = await self._call(self.config.submit, request_variables(request), "submit")
        return await self._output(self._result_value(document), request)


class DeclarativeAsyncProvider(_Declarative, AsyncProvider):
    """The submit's answer holds an id; polls say when the output is there."""

    async def submit(self, request: GenerationRequest) -> RemoteHandle:
        self._check_media(request)
        document = await self._call(self.config.submit, request_variables(request), "submit")
        assert self.config.id is not None
        try:
            remote_id = compiled_path(self.config.id).find(document)
        except JsonPathNotFound as exc:
            raise ProviderRetryableError("malformed_response", f"{self.name}: id: {exc}") from exc
        if isinstance(remote_id, bool) or not isinstance(remote_id, str | int) or remote_id == "":
            raise ProviderRetryableError(
                "malformed_response", f"{self.name}: id {self.config.id} is not a string or number"
            )
        return RemoteHandle(str(remote_id), data={"ref": request.model_ref})

    async def _poll_document(self, handle: RemoteHandle) -> Any:
        assert self.config.poll is not None
        variables = {"id": handle.id, "ref": str(handle.data.get("ref", ""))}
        return await self._call(self.config.poll, variables, "poll")

    async def poll(self, handle: RemoteHandle) -> RemoteHandle:
        status = self.config.status
        assert status is not None
        document = await self._poll_document(handle)
        try:
            value = compiled_path(status.path).find(document)
        except JsonPathNotFound as exc:
            raise ProviderRetryableError(
                "malformed_response", f"{self.name}: status.path: {exc}"
            ) from exc
        if _matches(value, status.succeeded):
            data = dict(handle.data)
            if self.config.result.key != "image_b64":  # a URL is small: keep it, not base64
                data["result"] = self._result_value(document)
            return RemoteHandle(handle.id, "succeeded", data)
        if _matches(value, status.failed):
            reason = compiled_path(status.error).get(document) if status.error else None
            message = f"{self.name}: {handle.id} {value}: {reason or 'no reason given'}"
            error = ProviderRetryableError("provider_failed", message[:500])
            return RemoteHandle(handle.id, "failed", dict(handle.data), error)
        return RemoteHandle(handle.id, "pending", dict(handle.data))

    async def fetch_result(self, handle: RemoteHandle, request: GenerationRequest) -> Output:
        value = handle.data.get("result")
        if not isinstance(value, str) or not value:
            value = self._result_value(await self._poll_document(handle))
        return await self._output(value, request)


def _matches(value: Any, candidates: list[str | int | bool]) -> bool:
    """YAML may read `succeeded: [1]` or `[true]` where the API says "1" or "true"."""
    if isinstance(value, dict | list) or value is None:
        return False
    text = json.dumps(value) if isinstance(value, bool) else str(value)
    return any(
        value == item or text == (json.dumps(item) if isinstance(item, bool) else str(item))
        for item in candidates
    )


def build(name: str, config: HttpConfig, deps: ProviderDeps) -> SyncProvider | AsyncProvider:
    """Two shapes, chosen by the configuration: an `id` to poll makes it asynchronous."""
    if config.is_async:
        return DeclarativeAsyncProvider(name, config, deps)
    return DeclarativeSyncProvider(name, config, deps)


KIND = Kind("http", HttpConfig, build)
