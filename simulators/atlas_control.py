"""The Atlas Cloud simulator's controls: its configuration, the request log, injected
faults, the `/_sim` routes, and a handle that drives them over HTTP."""

from __future__ import annotations

import secrets
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from simulators.control import ControlClient, config_routes
from simulators.faults import (
    HUGE_PLACEHOLDER,
    Fault,
    drop_connection,
    fault_route,
    hang,
    huge,
    malformed,
    reset_route,
    take_fault,
)
from simulators.responses import bad_gateway, dump, json_body, json_response

MESSAGES = {
    400: "bad request",
    401: "unauthorized",
    402: "insufficient balance",
    403: "forbidden",
    404: "not found",
    429: "rate limit exceeded, please retry later",
    500: "internal error",
    503: "service temporarily unavailable",
}


class AtlasSimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    token: str = "atlas-sim-key"
    shape: Literal["data", "flat"] = "data"
    # Polls answered `processing` before a prediction ends.
    processing_polls: int = Field(1, ge=0)
    # A prompt with this word fails moderation (error_code 1039).
    moderation_word: str = "FORBIDDEN"
    # The next `fail_next` predictions fail with `failure_error` (a transient failure).
    fail_next: int = Field(0, ge=0)
    failure_error: str = "Inference worker exited unexpectedly, please retry"
    # What the output URL serves: the file, markup with a 200, or half the file.
    output: Literal["ok", "not_media", "truncated"] = "ok"
    # Where output URLs point (default: the simulator's own address).
    public_url: str | None = None
    huge_bytes: int = Field(20 * 1024 * 1024, ge=0)


def atlas_error(status: int, message: str | None = None) -> Response:
    body = {
        "code": status,
        "msg": message or MESSAGES.get(status, "error"),
        "request_id": secrets.token_hex(8),
        "data": None,
    }
    return json_response(body, status)


class SimControl:
    """The request log, the faults and the configuration; the API (simulators.atlas)
    extends it with predictions."""

    def __init__(self, config: AtlasSimConfig | None = None) -> None:
        self.config = config or AtlasSimConfig()
        self.requests: list[dict[str, Any]] = []
        self.faults: list[Fault] = []

    def reset(self) -> None:
        self.requests.clear()
        self.faults.clear()

    def state(self) -> dict[str, Any]:
        """What `GET /_sim/predictions` shows; the API overrides it."""
        return {}

    async def intercept(self, request: Request) -> Response | None:
        body = await request.body()
        self.requests.append(
            {
                "method": request.method,
                "path": request.url.path,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "json": await json_body(request) if body else None,
            }
        )
        fault = take_fault(self.faults, request)
        return await self._answer_fault(request, fault) if fault is not None else None

    async def _answer_fault(self, request: Request, fault: Fault) -> Response:
        if fault.status == "reset":
            return await drop_connection(request)
        if fault.status == "hang":
            return await hang(request, fault.seconds, atlas_error(504, "gateway timeout"))
        if fault.status == "bad_gateway":
            return bad_gateway()
        pending = {"id": "sim", "status": "processing", "outputs": []}
        envelope = dump({"code": 200, "message": "success", "data": pending})
        if fault.status == "malformed":
            return malformed(envelope, 200)
        if fault.status == "huge":
            template = dump({"code": 200, "data": {"id": "x", "logs": HUGE_PLACEHOLDER}})
            return huge(template, b"a", self.config.huge_bytes, 200)
        status = int(fault.status)
        if fault.body is None:
            response = atlas_error(status)
            response.headers.update(fault.headers)
            return response
        return json_response(fault.body, status, headers=fault.headers)

    def _patch_config(self, changes: dict[str, Any]) -> AtlasSimConfig:
        self.config = AtlasSimConfig.model_validate(self.config.model_dump() | changes)
        return self.config

    def control_routes(self) -> list[BaseRoute]:
        async def get_requests(request: Request) -> Response:
            return json_response(self.requests)

        async def get_predictions(request: Request) -> Response:
            return json_response(self.state())

        return [
            *config_routes(lambda: self.config, self._patch_config),
            Route("/_sim/requests", get_requests, methods=["GET"]),
            Route("/_sim/predictions", get_predictions, methods=["GET"]),
            fault_route(self.faults),
            reset_route(self.reset),
        ]


class AtlasHandle(ControlClient):
    """Controls a running Atlas simulator over its `/_sim` routes."""

    async def configure(self, **changes: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("PATCH", "/_sim/config", changes)
        return result

    async def fault(self, status: int | str, path: str = ".*", **spec: Any) -> None:
        await self.call("POST", "/_sim/faults", {"status": status, "path": path, **spec})

    async def requests(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.call("GET", "/_sim/requests")
        return result

    async def predictions(self) -> dict[str, dict[str, Any]]:
        result: dict[str, dict[str, Any]] = await self.call("GET", "/_sim/predictions")
        return result

    async def reset(self) -> None:
        await self.call("POST", "/_sim/reset")
