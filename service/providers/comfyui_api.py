"""ComfyUI's HTTP API as the provider calls it: optional Bearer token (a server behind
an auth proxy), the shared size caps and error classification (service.providers.http),
and the server's own refusal of a workflow turned into a message that names the node.

It does not reuse ProviderHTTP's JSON call: that requires a token (ComfyUI usually has
none) and drops the 400 body, where ComfyUI says which node and input it refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from service.kit.tls import tls_context
from service.providers.account import AccountConfig
from service.providers.base import ProviderPermanentError
from service.providers.http import (
    CONNECT_TIMEOUT_S,
    IMAGE_BODY_LIMIT,
    JSON_BODY_LIMIT,
    USER_AGENT,
    classify_error_response,
    exchange,
    join_url,
    parse_json_object,
)

_MESSAGE_CHARS = 1000


class ComfyAPI:
    def __init__(
        self, name: str, account: AccountConfig, client: httpx.AsyncClient | None = None
    ) -> None:
        self.name = name
        self.account = account
        self.token = account.token()
        self._timeout = httpx.Timeout(account.timeout_s, connect=CONNECT_TIMEOUT_S)
        self._deadline_s = CONNECT_TIMEOUT_S + account.timeout_s
        self._owns_client = client is None
        # The base URL is the operator's (often loopback): no SSRF guard, no redirects.
        self._client = client or httpx.AsyncClient(
            timeout=self._timeout, follow_redirects=False, verify=tls_context()
        )

    def headers(self) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def require_configured(self) -> None:
        if not self.account.base_url:
            raise ProviderPermanentError(
                "provider_not_configured", f"{self.name}: no base_url configured"
            )
        if self.account.token_env and not self.token:
            raise ProviderPermanentError(
                "provider_not_configured",
                f"{self.name}: no API token (set the environment variable "
                f"{self.account.token_env})",
            )

    async def json(
        self,
        method: str,
        path: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        return parse_json_object(
            self.name, await self.call(method, path, json_body=json_body, params=params)
        )

    async def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        files: Mapping[str, Any] | None = None,
        data: Mapping[str, str] | None = None,
        limit: int = JSON_BODY_LIMIT,
    ) -> bytes:
        """The body of a 2xx answer; any other outcome raises ProviderError."""
        self.require_configured()
        request = self._client.build_request(
            method,
            join_url(self.account.base_url, path),
            json=json_body,
            params=params,
            files=files,
            data=data,
            headers=self.headers(),
            timeout=self._timeout,
        )
        status, headers, body = await exchange(
            self.name, self._client, request, limit, self._deadline_s
        )
        if 200 <= status < 300:
            return body
        if status == 400 and path.strip("/") == "prompt":
            raise refused_workflow(self.name, body)
        raise classify_error_response(self.name, status, headers, body)

    async def download(self, params: Mapping[str, str]) -> bytes:
        return await self.call("GET", "view", params=params, limit=IMAGE_BODY_LIMIT)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def refused_workflow(name: str, body: bytes, *, status: int = 400) -> ProviderPermanentError:
    """ComfyUI's 400 to POST /prompt: {error: {type, message, details} | str,
    node_errors: {id: {errors: [{message, details}], class_type}}}. The node errors say
    what to fix; the top-level message alone ("Prompt outputs failed validation") does not."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        text = body[:300].decode("utf-8", "replace").strip() or "no message"
        return ProviderPermanentError(
            "invalid_input", f"{name} {status}: {text}", http_status=status
        )
    error = data.get("error")
    parts: list[str] = []
    if isinstance(error, dict):
        parts.append(_join(error.get("message"), error.get("details")))
    elif isinstance(error, str):
        parts.append(error)
    parts += node_error_messages(data.get("node_errors"))
    message = "; ".join(part for part in parts if part) or "workflow refused"
    if len(message) > _MESSAGE_CHARS:
        message = message[: _MESSAGE_CHARS - 3] + "..."
    return ProviderPermanentError(
        "invalid_input",
        f"{name} {status}: ComfyUI refused the workflow: {message}",
        http_status=status,
    )


def node_error_messages(node_errors: Any) -> list[str]:
    """ "node 3 (KSampler): Required input is missing: seed", one per error."""
    if not isinstance(node_errors, dict):
        return []
    messages: list[str] = []
    for node_id, entry in node_errors.items():
        if not isinstance(entry, dict):
            continue
        label = f"node {node_id}"
        if isinstance(entry.get("class_type"), str):
            label += f" ({entry['class_type']})"
        for item in entry.get("errors") or []:
            if isinstance(item, dict):
                messages.append(f"{label}: {_join(item.get('message'), item.get('details'))}")
    return messages


def _join(message: Any, details: Any) -> str:
    head = message if isinstance(message, str) else ""
    tail = details if isinstance(details, str) else ""
    return f"{head}: {tail}" if head and tail else head or tail
