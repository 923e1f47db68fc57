"""OpenAI images (and any OpenAI-compatible API): one synchronous call per image.

`base_url` ends in /v1 (https://api.openai.com/v1), so the call goes to
`images/generations` relative to it, or to `images/edits` when the job feeds in reference
images or a mask (service.providers.openai_edits). GPT image models return base64 and
take `output_format`; DALL-E models take `response_format` instead and would reject it.

An account with an `auth` block (OAuth client credentials: ERNIE-Image on Baidu AI
Cloud) takes its bearer token from service.providers.oauth instead of `token_env`.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from typing import Any, Literal

import httpx

from service.providers.account import AccountConfig
from service.providers.base import (
    Capabilities,
    GenerationRequest,
    Output,
    ProviderRetryableError,
    SyncProvider,
)
from service.providers.http import ProviderHTTP
from service.providers.images import checked_image
from service.providers.kinds import Kind, ProviderDeps
from service.providers.oauth import OAuthClientCredentials, TokenSource
from service.providers.openai_edits import edit_form, wants_edit

# The longest a token request may take, whatever the account's timeout for generations.
TOKEN_TIMEOUT_S = 30.0


class OpenAIConfig(AccountConfig):
    kind: Literal["openai"]
    auth: OAuthClientCredentials | None = None

    def missing_env(self) -> list[str]:
        if self.auth is None:
            return super().missing_env()
        names = (self.auth.client_id_env, self.auth.client_secret_env)
        return [name for name in names if not os.environ.get(name)]


class OpenAIImagesProvider(SyncProvider):
    kind = "openai"
    capabilities = Capabilities(inputs=frozenset({"reference", "mask"}))

    def __init__(
        self,
        name: str,
        account: OpenAIConfig,
        *,
        http: httpx.AsyncClient | None = None,
        deps: ProviderDeps | None = None,
    ) -> None:
        self.name = name
        self.account = account
        settings = deps.settings if deps is not None else None
        bearer = None
        if account.auth is not None:
            redis = deps.redis if deps is not None else None
            timeout_s = min(account.timeout_s, TOKEN_TIMEOUT_S)
            bearer = TokenSource(name, account.auth, redis=redis, client=http, timeout_s=timeout_s)
        self._http = ProviderHTTP(name, account, http, settings=settings, bearer=bearer)

    async def generate(self, request: GenerationRequest) -> Output:
        if wants_edit(request):
            fields, files = edit_form(self.name, request)
            response = await self._http.request_json(
                "POST", "images/edits", form=fields, files=files
            )
        else:
            response = await self._http.request_json(
                "POST", "images/generations", json_body=generation_body(request)
            )
        item = _first_item(self.name, response)
        data = await self._image_bytes(item)
        usage = response.get("usage")
        return await checked_image(
            data,
            request.format,
            provider=self.name,
            usage=dict(usage) if isinstance(usage, Mapping) else {},
        )

    async def _image_bytes(self, item: Mapping[str, Any]) -> bytes:
        encoded = item.get("b64_json")
        if isinstance(encoded, str) and encoded:
            try:
                return base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ProviderRetryableError(
                    "malformed_response", f"{self.name}: b64_json is not valid base64"
                ) from exc
        url = item.get("url")
        if isinstance(url, str) and url:
            return await self._http.download(url)
        raise ProviderRetryableError(
            "malformed_response", f"{self.name}: data[0] has neither b64_json nor url"
        )

    async def aclose(self) -> None:
        await self._http.aclose()


def generation_body(request: GenerationRequest) -> dict[str, Any]:
    """Quality is left to the provider's default: a sane one depends on the model."""
    body: dict[str, Any] = {
        "model": request.model_ref,
        "prompt": request.prompt,
        "n": 1,
        "size": f"{request.width}x{request.height}",
    }
    if request.model_ref.startswith("dall-e"):
        body["response_format"] = "b64_json"
    else:
        body["output_format"] = request.format
    # Model-specific parameters (quality, background, ...) as the job gave them; they
    # cannot change what is asked for.
    body.update({k: v for k, v in request.options.items() if k not in ("model", "prompt", "n")})
    return body


def _first_item(provider: str, response: Mapping[str, Any]) -> Mapping[str, Any]:
    data = response.get("data")
    if isinstance(data, list) and data and isinstance(data[0], Mapping):
        return data[0]
    raise ProviderRetryableError("malformed_response", f"{provider}: response has no data[0]")


KIND = Kind(
    "openai",
    OpenAIConfig,
    lambda name, config, deps: OpenAIImagesProvider(name, config, http=deps.http, deps=deps),
)
