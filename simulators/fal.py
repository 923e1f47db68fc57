"""A simulator of fal's queue API (queue.fal.run) and its signed webhooks.

Provider routes (auth: `Authorization: Key <one of config.api_keys>`):
- `POST /{model path}[?fal_webhook=<url>]`: queue a request; answers `{request_id,
  gateway_request_id, response_url, status_url, cancel_url, queue_position}`.
- `GET /{app}/requests/{id}/status[?logs=1]`: IN_QUEUE (with `queue_position`),
  IN_PROGRESS or COMPLETED (with `error` and `error_type` when it failed). `{app}` is the
  app id (`fal-ai/flux`), never the endpoint's sub-path, as on fal.
- `GET /{app}/requests/{id}`: the result (image endpoints: `{images: [{url, width, height,
  content_type, ...}], seed, ...}`; video endpoints: `{video: {url, content_type, ...}}`),
  or the app's error status and body; 400 while it is not done.
- `PUT /{app}/requests/{id}/cancel`: 202 CANCELLATION_REQUESTED while queued, else 400
  ALREADY_COMPLETED.
- `GET /files/{name}` (no auth): the outputs, as a CDN serves them.
- `GET /.well-known/jwks.json` (no auth): the webhook keys (OKP/Ed25519).

Control routes (no auth, never faulted or logged): `GET|PATCH /_sim/config`
(FalSimConfig), `GET /_sim/stats`, `GET /_sim/requests` (the API requests received),
`GET /_sim/state` (every queued request), `POST /_sim/faults` (as simulators.cms.base,
plus statuses "malformed" and "huge": a 200 with half a JSON body, or with 20 MiB of it),
`POST /_sim/outcomes {"outcome", "count"}` (what the next submissions do),
`POST /_sim/rotate_key {"retire_old": false}`, `POST /_sim/reset`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, get_args

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from simulators.cms.base import CmsSim, cms_app
from simulators.control import ControlClient
from simulators.fal_queue import FalQueue, FalRequest, FalSimConfig, Outcome
from simulators.faults import huge, malformed, take_fault
from simulators.responses import dump, json_body, json_response
from simulators.runner import serve_in_thread, serve_main

HUGE_BYTES = 20 * 1024 * 1024
_REQUEST_PATH = re.compile(r"^/(?P<app>.+)/requests/(?P<id>[^/]+)(?P<tail>/status|/cancel)?$")


class FalSim(CmsSim):
    def __init__(self, config: FalSimConfig | None = None) -> None:
        super().__init__("fal")
        self.queue = FalQueue(config or FalSimConfig())

    def reset(self) -> None:
        super().reset()
        config, keys, sender = self.queue.config, self.queue.keys, self.queue.sender
        for task in list(self.queue.tasks):
            task.cancel()
        self.queue = FalQueue(config, keys=keys, sender=sender)
        if sender is not None:
            sender.counts = self.queue.counts

    def state(self) -> Any:
        return [
            {"id": r.id, "model": r.model, "status": r.status, "webhook": r.webhook,
             "arguments": r.arguments, "cancelled": r.cancelled, "outcome": r.outcome,
             "times": r.times}
            for r in self.queue.requests.values()
        ]  # fmt: skip

    async def intercept(self, request: Request) -> Response | None:
        """Faults "malformed" and "huge" first (the base knows the others)."""
        fault = take_fault(self.faults, request, statuses=("malformed", "huge"))
        if fault is not None:
            if fault.status == "huge":
                template = b'{"request_id":"__SIM_HUGE_BODY__"}'
                return huge(template, b"x", HUGE_BYTES, 200)
            return malformed(dump({"request_id": "x", "status": "IN_QUEUE"}), 200)
        return await super().intercept(request)

    def control_routes(self) -> list[BaseRoute]:
        routes = [r for r in super().control_routes() if getattr(r, "path", "") != "/_sim/config"]
        return [*routes, *self._fal_controls()]

    def _fal_controls(self) -> list[BaseRoute]:
        async def get_config(request: Request) -> Response:
            return json_response(self.queue.config.model_dump())

        async def patch_config(request: Request) -> Response:
            changes = await json_body(request)
            if not isinstance(changes, dict):
                return json_response({"detail": "expected a JSON object"}, 422)
            try:
                config = self.queue.configure(changes)
            except ValidationError as error:
                return json_response({"detail": error.errors(include_url=False)}, 422)
            return json_response(config.model_dump())

        async def stats(request: Request) -> Response:
            return json_response(self.queue.stats())

        async def outcomes(request: Request) -> Response:
            spec = await json_body(request)
            outcome: Any = spec.get("outcome") if isinstance(spec, dict) else None
            if outcome not in get_args(Outcome):
                return json_response({"detail": f"outcome must be one of {get_args(Outcome)}"}, 422)
            assert isinstance(spec, dict)
            self.queue.outcomes.extend([outcome] * int(spec.get("count", 1)))
            return json_response({"pending": len(self.queue.outcomes)})

        async def rotate(request: Request) -> Response:
            spec = await json_body(request)
            retire = bool(spec.get("retire_old")) if isinstance(spec, dict) else False
            return json_response({"kid": self.queue.keys.rotate(retire_old=retire).kid})

        return [
            Route("/_sim/config", get_config, methods=["GET"]),
            Route("/_sim/config", patch_config, methods=["PATCH"]),
            Route("/_sim/stats", stats, methods=["GET"]),
            Route("/_sim/outcomes", outcomes, methods=["POST"]),
            Route("/_sim/rotate_key", rotate, methods=["POST"]),
        ]

    # --- provider routes ---------------------------------------------------------------

    def unauthorized(self, request: Request) -> Response | None:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if not key:
            return json_response(
                {"detail": "Authentication is required to access this application."}, 401
            )
        if scheme.lower() != "key" or key.strip() not in self.queue.config.api_keys:
            return json_response({"detail": "No user found for Key ID and Secret"}, 401)
        return None

    async def submit(self, request: Request) -> Response:
        arguments = await json_body(request)
        if not isinstance(arguments, dict):
            detail = [
                {"loc": ["body"], "msg": "value is not a valid dict", "type": "type_error.dict"}
            ]
            return json_response({"detail": detail}, 422)
        base = str(request.base_url).rstrip("/")
        webhook = request.query_params.get("fal_webhook")
        queued = self.queue.submit(request.url.path, arguments, webhook, base)
        # The answer to a submit always says IN_QUEUE, even if a runner took it at once.
        position = self.queue.position(queued)
        body = self._status(queued, logs=False) | {"status": "IN_QUEUE", "queue_position": position}
        return json_response(body | {"gateway_request_id": queued.id})

    def find(self, request: Request) -> tuple[FalRequest | None, str]:
        match = _REQUEST_PATH.match(request.url.path)
        if match is None:
            return None, ""
        found = self.queue.requests.get(match["id"])
        if found is None or found.app != match["app"]:
            return None, match["tail"] or ""
        return found, match["tail"] or ""

    def _status(self, queued: FalRequest, *, logs: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"status": queued.status, "request_id": queued.id, **queued.urls()}
        body["logs"] = [] if logs else None
        if queued.status == "IN_QUEUE":
            body["queue_position"] = self.queue.position(queued)
        if queued.status == "COMPLETED":
            body["metrics"] = {"inference_time": round(queued.inference_s, 3)}
            if queued.error or queued.cancelled:
                body["error"] = queued.error_text()
                body["error_type"] = "request_cancelled" if queued.cancelled else "app_error"
        return body

    def read(self, request: Request) -> Response:
        queued, tail = self.find(request)
        if queued is None:
            return json_response({"detail": "Request not found"}, 404)
        if tail == "/status":
            self.queue.counts["status_polls"] += 1
            return json_response(self._status(queued, logs=request.query_params.get("logs") == "1"))
        if tail:
            return json_response({"detail": "Method Not Allowed"}, 405)
        self.queue.counts["result_reads"] += 1
        if queued.status != "COMPLETED":
            return json_response({"detail": "Request is still in progress"}, 400)
        if queued.cancelled:
            return json_response({"detail": "Request was cancelled by the user"}, 400)
        if queued.error is not None:
            return json_response(queued.error[1], queued.error[0])
        return json_response(queued.result)

    def cancel(self, request: Request) -> Response:
        queued, tail = self.find(request)
        if queued is None:
            return json_response({"detail": "Request not found"}, 404)
        if tail != "/cancel":
            return json_response({"detail": "Method Not Allowed"}, 405)
        if self.queue.cancel(queued):
            return json_response({"status": "CANCELLATION_REQUESTED"}, 202)
        return json_response({"status": "ALREADY_COMPLETED"}, 400)


def create_fal_app(config: FalSimConfig | None = None, sim: FalSim | None = None) -> Any:
    sim = sim if sim is not None else FalSim(config)

    async def files(request: Request) -> Response:
        found = sim.queue.files.get(request.path_params["name"])
        if found is None:
            return json_response({"detail": "Not Found"}, 404)
        return Response(found[0], media_type=found[1])

    async def jwks(request: Request) -> Response:
        if (fault := await sim.intercept(request)) is not None:
            return fault
        sim.queue.counts["jwks_fetches"] += 1
        return json_response(sim.queue.keys.jwks())

    async def api(request: Request) -> Response:
        if (fault := await sim.intercept(request)) is not None:
            return fault
        if (denied := sim.unauthorized(request)) is not None:
            return denied
        if request.method == "POST":
            return await sim.submit(request)
        if request.method == "GET":
            return sim.read(request)
        return sim.cancel(request)

    routes: list[BaseRoute] = [
        Route("/files/{name}", files, methods=["GET"]),
        Route("/.well-known/jwks.json", jwks, methods=["GET"]),
        Route("/{path:path}", api, methods=["GET", "POST", "PUT"]),
    ]
    app = cms_app(sim, routes)
    app.state.sim = sim

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        yield
        await sim.queue.close()

    app.router.lifespan_context = lifespan
    return app


class FalHandle(ControlClient):
    """A running fal simulator: its URL and the controls tests use."""

    def __init__(self, url: str, sim: FalSim) -> None:
        super().__init__(url)
        self.sim = sim

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/.well-known/jwks.json"

    async def configure(self, **changes: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("PATCH", "/_sim/config", changes)
        return result

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("GET", "/_sim/stats")
        return result

    async def fault(self, **spec: Any) -> None:
        await self.call("POST", "/_sim/faults", spec)

    async def outcome(self, outcome: Outcome, count: int = 1) -> None:
        await self.call("POST", "/_sim/outcomes", {"outcome": outcome, "count": count})

    async def rotate_key(self, *, retire_old: bool = False) -> str:
        result = await self.call("POST", "/_sim/rotate_key", {"retire_old": retire_old})
        return str(result["kid"])


@asynccontextmanager
async def run_fal(
    config: FalSimConfig | None = None, *, port: int = 0, build: Callable[..., Any] = create_fal_app
) -> AsyncIterator[FalHandle]:
    """The fal simulator on 127.0.0.1 in a background thread (its own event loop)."""
    sim = FalSim(config)
    async with serve_in_thread(build(sim=sim), port=port) as url:
        yield FalHandle(url, sim)


__all__ = ["FalHandle", "FalSim", "FalSimConfig", "create_fal_app", "run_fal"]


def main() -> None:
    """`python -m simulators.fal --port 9200 [--config '{json}']`: in the foreground."""
    serve_main("python -m simulators.fal", main.__doc__, 9200, FalSimConfig, create_fal_app)


if __name__ == "__main__":
    main()
