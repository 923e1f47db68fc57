"""An OAuth 2.0 token server for the client-credentials grant, as Baidu AI Cloud runs it
at `https://aip.baidubce.com/oauth/2.0/token` (the tokens ERNIE-Image's OpenAI-compatible
API on qianfan takes as `Authorization: Bearer <token>`).

`POST /oauth/2.0/token` takes `grant_type=client_credentials`, `client_id` (Baidu's "API
Key") and `client_secret` (the "Secret Key") the way Baidu documents them, in the query
string, or the RFC 6749 ways: a form body (client_secret_post) or HTTP Basic
(client_secret_basic). It answers `{"access_token", "expires_in", "refresh_token",
"scope", "session_key", "session_secret"}`, or Baidu's error body
`{"error": "invalid_client", "error_description": "unknown client id"}` (401; "Client
authentication failed" for a wrong secret) and `unsupported_grant_type` /
`invalid_request` (400).

The OpenAI simulator accepts only tokens issued here, unexpired and unrevoked, when
`enabled` is set (`TokenServer.check`).

Control routes (not counted as token requests):
- `GET|PATCH /_sim/oauth/config`: `TokenServerConfig`;
- `GET /_sim/oauth/stats`: `fetches` (token requests), `issued`, `refused`, `faults`
  (by kind), `rejected_tokens` (API requests refused for an expired, revoked or unknown
  token);
- `POST /_sim/oauth/revoke` `{"token": "..."}` (or `{}`: every token): the API refuses
  the token from now on although it has not expired (a 401 in mid-life);
- `POST /_sim/oauth/reset`: forgets tokens and counters.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections import Counter
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulators import faults
from simulators.control import ControlClient, config_routes
from simulators.responses import bad_gateway, json_body, json_response

TOKEN_PATH = "/oauth/2.0/token"
TokenFault = Literal[
    "error_500",
    "error_502",
    "error_503",
    "rate_limited",
    "hang",
    "reset",
    "malformed_json",
    "no_access_token",
    "temporarily_unavailable",
]


class TokenServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # When set, the OpenAI routes take only tokens issued here (not SimConfig.token).
    enabled: bool = False
    client_id: str = "sim-client-id"
    client_secret: str = "sim-client-secret"
    # Baidu's tokens last 30 days.
    expires_in: int = Field(2_592_000, ge=0)
    # The next token requests, one each, answer with these faults (in order).
    faults: list[TokenFault] = []
    hang_s: float = Field(3600.0, ge=0)
    # Every token request takes this long (so that concurrent fetches overlap).
    latency_s: float = Field(0.0, ge=0)

    def patched(self, changes: dict[str, object]) -> TokenServerConfig:
        return TokenServerConfig.model_validate({**self.model_dump(), **changes})


class TokenServer:
    """Issued tokens and their lifetimes, on the server's event loop only (no locks)."""

    def __init__(self, config: TokenServerConfig | None = None) -> None:
        self.config = config or TokenServerConfig()
        self.reset()

    def reset(self) -> None:
        self.tokens: dict[str, float] = {}  # token -> monotonic expiry
        self.revoked: set[str] = set()
        self.counts: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()

    def issue(self) -> tuple[str, int]:
        lifetime = self.config.expires_in
        token = f"24.{secrets.token_hex(16)}.{lifetime}.{int(time.time()) + lifetime}.282335-sim"
        self.tokens[token] = time.monotonic() + lifetime
        self.counts["issued"] += 1
        return token, lifetime

    def revoke(self, token: str | None) -> int:
        targets = [token] if token is not None else list(self.tokens)
        known = [t for t in targets if t in self.tokens]
        self.revoked.update(known)
        return len(known)

    def check(self, token: str) -> str | None:
        """Why the API refuses this bearer token, or None when it is good."""
        expiry = self.tokens.get(token)
        reason: str | None = None
        if expiry is None or token in self.revoked:
            reason = "Access token invalid or no longer valid"
        elif time.monotonic() >= expiry:
            reason = "Access token expired"
        if reason is not None:
            self.counts["rejected_tokens"] += 1
        return reason

    def stats(self) -> dict[str, Any]:
        return {
            "fetches": self.counts["fetches"],
            "issued": self.counts["issued"],
            "refused": self.counts["refused"],
            "rejected_tokens": self.counts["rejected_tokens"],
            "revoked": len(self.revoked),
            "faults": dict(self.faults),
        }


def oauth_error(status: int, error: str, description: str) -> Response:
    return json_response({"error": error, "error_description": description}, status)


async def credentials(request: Request) -> dict[str, str]:
    """grant_type, client_id and client_secret from the query, a form body or Basic auth
    (the body wins over the query, as RFC 6749 would have it)."""
    found = dict(request.query_params)
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        found |= dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic" and encoded:
        try:
            user, _, password = base64.b64decode(encoded.strip()).decode().partition(":")
        except ValueError:
            return found
        found |= {"client_id": unquote(user), "client_secret": unquote(password)}
    return found


def token_answer(server: TokenServer) -> dict[str, Any]:
    token, lifetime = server.issue()
    return {
        "refresh_token": f"25.{secrets.token_hex(16)}.315360000.{int(time.time())}.282335-sim",
        "expires_in": lifetime,
        "session_key": secrets.token_urlsafe(48),
        "access_token": token,
        "scope": "public wise_adapt",
        "session_secret": secrets.token_hex(16),
    }


async def faulted(server: TokenServer, request: Request) -> Response | None:
    """The next scripted fault's answer, if one is queued."""
    if not server.config.faults:
        return None
    queued = list(server.config.faults)
    fault = queued.pop(0)
    server.config.faults = queued
    server.faults[fault] += 1
    if fault == "error_500":
        return oauth_error(500, "server_error", "internal error")
    if fault == "error_502":
        return bad_gateway()
    if fault == "error_503":
        return oauth_error(503, "temporarily_unavailable", "service temporarily unavailable")
    if fault == "temporarily_unavailable":  # an error body with a 200, as some servers do
        return json_response({"error": "temporarily_unavailable", "error_description": "busy"})
    if fault == "rate_limited":
        return json_response(
            {"error": "rate_limited", "error_description": "too many token requests"},
            429,
            {"retry-after": "2"},
        )
    if fault == "hang":
        return await faults.hang(request, server.config.hang_s, oauth_error(504, "timeout", ""))
    if fault == "reset":
        return await faults.drop_connection(request)
    if fault == "malformed_json":
        return faults.malformed(b'{"access_token": "24.x", "expires_in": 2592000}', 200)
    return json_response({"expires_in": 2592000, "scope": "public"})  # no_access_token


def routes(server: TokenServer) -> list[Route]:
    async def token(request: Request) -> Response:
        server.counts["fetches"] += 1
        if server.config.latency_s:
            await asyncio.sleep(server.config.latency_s)
        fault = await faulted(server, request)
        if fault is not None:
            return fault
        given = await credentials(request)
        config = server.config
        refusal: Response | None = None
        if given.get("grant_type") != "client_credentials":
            grant = given.get("grant_type")
            refusal = (
                oauth_error(400, "invalid_request", "grant_type is required")
                if grant is None
                else oauth_error(
                    400, "unsupported_grant_type", f'Grant type "{grant}" not supported'
                )
            )
        elif given.get("client_id") != config.client_id:
            refusal = oauth_error(401, "invalid_client", "unknown client id")
        elif given.get("client_secret") != config.client_secret:
            refusal = oauth_error(401, "invalid_client", "Client authentication failed")
        if refusal is not None:
            server.counts["refused"] += 1
            return refusal
        return json_response(token_answer(server))

    return [Route(TOKEN_PATH, token, methods=["POST", "GET"])]


def control_routes(server: TokenServer) -> list[Route]:
    def patch(changes: dict[str, Any]) -> TokenServerConfig:
        server.config = server.config.patched(changes)
        return server.config

    async def revoke(request: Request) -> Response:
        body = await json_body(request)
        token = body.get("token") if isinstance(body, dict) else None
        return json_response({"revoked": server.revoke(token if isinstance(token, str) else None)})

    async def stats(request: Request) -> Response:
        return json_response(server.stats())

    return [
        *config_routes(lambda: server.config, patch, "/_sim/oauth/config"),
        Route("/_sim/oauth/revoke", revoke, methods=["POST"]),
        faults.reset_route(server.reset, "/_sim/oauth/reset"),
        Route("/_sim/oauth/stats", stats, methods=["GET"]),
    ]


class TokenServerHandle(ControlClient):
    """The token server's controls, for tests (the simulator's base URL)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.token_url = url + TOKEN_PATH

    async def configure(self, **changes: Any) -> TokenServerConfig:
        answer = await self.call("PATCH", "/_sim/oauth/config", changes)
        return TokenServerConfig.model_validate(answer)

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("GET", "/_sim/oauth/stats")
        return result

    async def revoke(self, token: str | None = None) -> int:
        body = {"token": token} if token is not None else {}
        return int((await self.call("POST", "/_sim/oauth/revoke", body))["revoked"])

    async def reset(self) -> None:
        await self.call("POST", "/_sim/oauth/reset")
