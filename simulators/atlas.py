"""An Atlas Cloud simulator: the media generation API, its two documented response shapes,
its error bodies, and real output files.

API (every `/api/...` route checks `Authorization: Bearer <token>`; errors are Atlas's
`{"code": <status>, "msg": "...", "request_id": "...", "data": null}`):
- `POST /api/v1/model/generateImage` `{model, prompt, size: "W*H" | aspect_ratio: "16:9",
  seed?, output_format?, image_url?}` and `POST /api/v1/model/generateVideo` `{model,
  prompt, width?, height? | aspect_ratio?, duration?, fps?, image_url?}` create a
  prediction (`processing`); an aspect ratio makes the model's size for it (an image
  16:9 is 1344x768, as FLUX's; a video's short side is 240);
- `GET /api/v1/model/prediction/{id}`: `processing` for the first `processing_polls` polls,
  then `completed` (or `failed`, with `error` and `error_code`);
- `GET /outputs/{id}.{ext}`: the output file (the CDN: no auth);
- any other `/api/...` path answers 401, as Atlas's gateway does (it authenticates first).

`shape` picks the response shape: "data" wraps the prediction in `{"code": 200,
"message": "success", "data": {...}}` with `outputs: [url]`; "flat" answers the prediction
at the top level with `output: {"image_url" | "video_url": url}`.

Control (never logged, never faulted): `GET/PATCH /_sim/config`, `GET /_sim/requests`,
`GET /_sim/predictions`, `POST /_sim/faults` `{"method"?, "path"?: regex, "status": 503 |
"reset" | "hang" | "malformed" | "huge" | "bad_gateway", "count"?, "body"?, "headers"?,
"seconds"?}` (the next `count` matching requests get that answer), `POST /_sim/reset`.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from simulators import atlas_media
from simulators.atlas_control import AtlasHandle, AtlasSimConfig, SimControl, atlas_error
from simulators.responses import bearer_token, json_body, json_response
from simulators.runner import serve_in_thread, serve_main

API = "/api/v1/model"
# Atlas's platform code for an input its content moderation refused.
MODERATION_CODE = 1039
MODERATION_ERROR = "The input or output was flagged by content moderation (sensitive content)"


@dataclass
class Prediction:
    id: str
    model: str
    media: Literal["image", "video"]
    ext: str
    width: int
    height: int
    created_at: str
    duration_s: float = 0.0
    fps: int = 0
    polls: int = 0
    status: str = "processing"
    outcome: str = "completed"
    error: str = ""
    error_code: int | None = None
    completed_at: str | None = None
    body: dict[str, Any] = field(default_factory=dict)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AtlasSim(SimControl):
    def __init__(self, config: AtlasSimConfig | None = None) -> None:
        super().__init__(config)
        self.predictions: dict[str, Prediction] = {}
        self._ids = itertools.count(1)

    def reset(self) -> None:
        super().reset()
        self.predictions.clear()

    def state(self) -> dict[str, Any]:
        return {key: vars(value) for key, value in self.predictions.items()}

    # --- the API ------------------------------------------------------------------------

    def _authorized(self, request: Request) -> bool:
        return secrets.compare_digest(bearer_token(request) or "", self.config.token)

    async def create(self, request: Request) -> Response:
        faulted = await self.intercept(request)
        if faulted is not None:
            return faulted
        if not self._authorized(request):
            return atlas_error(401)
        body = await json_body(request)
        media: Literal["image", "video"] = (
            "video" if request.url.path.endswith("Video") else "image"
        )
        try:
            prediction = self._new_prediction(body, media)
        except atlas_media.BadRequest as exc:
            return atlas_error(400, str(exc))
        self.predictions[prediction.id] = prediction
        return self._answer(request, prediction)

    def _new_prediction(self, body: Any, media: Literal["image", "video"]) -> Prediction:
        if not isinstance(body, dict):
            raise atlas_media.BadRequest("request body must be a JSON object")
        model, prompt = body.get("model"), body.get("prompt")
        if not isinstance(model, str) or not model:
            raise atlas_media.BadRequest("model is required")
        if not isinstance(prompt, str) or not prompt:
            raise atlas_media.BadRequest("prompt is required")
        atlas_media.check_image_url(body.get("image_url"))
        width, height = atlas_media.size(body, media)
        prediction = Prediction(
            id=f"{secrets.token_hex(12)}{next(self._ids)}",
            model=model,
            media=media,
            ext="mp4" if media == "video" else atlas_media.image_format(body),
            width=width,
            height=height,
            created_at=now_iso(),
            body=body,
        )
        if media == "video":
            prediction.duration_s = atlas_media.number(body, "duration", 5.0, 1.0, 15.0)
            prediction.fps = int(atlas_media.number(body, "fps", 24, 1, 60))
        if self.config.moderation_word and self.config.moderation_word in prompt:
            prediction.outcome = "failed"
            prediction.error, prediction.error_code = MODERATION_ERROR, MODERATION_CODE
        elif self.config.fail_next > 0:
            self.config.fail_next -= 1
            prediction.outcome, prediction.error = "failed", self.config.failure_error
        return prediction

    async def get_prediction(self, request: Request) -> Response:
        faulted = await self.intercept(request)
        if faulted is not None:
            return faulted
        if not self._authorized(request):
            return atlas_error(401)
        prediction = self.predictions.get(request.path_params["id"])
        if prediction is None:
            return atlas_error(404, "prediction not found")
        prediction.polls += 1
        if prediction.status == "processing" and prediction.polls > self.config.processing_polls:
            prediction.status = prediction.outcome
            prediction.completed_at = now_iso()
        return self._answer(request, prediction)

    async def output_file(self, request: Request) -> Response:
        faulted = await self.intercept(request)
        if faulted is not None:
            return faulted
        prediction = self.predictions.get(request.path_params["id"])
        if prediction is None or prediction.status != "completed":
            return Response(b"<Error><Code>NoSuchKey</Code></Error>", 404)
        if prediction.ext != request.path_params["ext"]:
            return Response(b"<Error><Code>NoSuchKey</Code></Error>", 404)
        if prediction.media == "video":
            data = atlas_media.video_file(
                prediction.width, prediction.height, prediction.duration_s, prediction.fps
            )
            media_type = atlas_media.VIDEO_TYPE
        else:
            data = atlas_media.image_file(prediction.width, prediction.height, prediction.ext)
            media_type = atlas_media.IMAGE_TYPES[prediction.ext]
        if self.config.output == "not_media":
            return Response(atlas_media.NOT_MEDIA, media_type=media_type)
        if self.config.output == "truncated":
            data = data[: len(data) // 2]
        return Response(data, media_type=media_type)

    async def unknown_path(self, request: Request) -> Response:
        await self.intercept(request)
        return atlas_error(401)

    def _answer(self, request: Request, prediction: Prediction) -> Response:
        base = (self.config.public_url or str(request.base_url)).rstrip("/")
        url = f"{base}/outputs/{prediction.id}.{prediction.ext}"
        done = prediction.status == "completed"
        record: dict[str, Any] = {
            "id": prediction.id,
            "model": prediction.model,
            "status": prediction.status,
            "created_at": prediction.created_at,
        }
        if prediction.status == "failed":
            record["error"] = prediction.error
            if prediction.error_code is not None:
                record["error_code"] = prediction.error_code
        if self.config.shape == "flat":
            if done:
                record["output"] = {f"{prediction.media}_url": url}
                record["completed_at"] = prediction.completed_at
            return json_response(record)
        record |= {
            "outputs": [url] if done else [],
            "urls": {"get": f"{str(request.base_url).rstrip('/')}{API}/prediction/{prediction.id}"},
            "has_nsfw_contents": [False] if done else [],
            "error": record.get("error", ""),
        }
        if done:
            record["completed_at"] = prediction.completed_at
            record["metrics"] = {"predict_time": 1.5}
        return json_response({"code": 200, "message": "success", "data": record})

    def routes(self) -> list[BaseRoute]:
        return [
            *self.control_routes(),
            Route(f"{API}/generateImage", self.create, methods=["POST"]),
            Route(f"{API}/generateVideo", self.create, methods=["POST"]),
            Route(f"{API}/prediction/{{id}}", self.get_prediction, methods=["GET"]),
            Route("/outputs/{id}.{ext}", self.output_file, methods=["GET"]),
            Route("/api/{rest:path}", self.unknown_path, methods=["GET", "POST", "PUT"]),
        ]


class AtlasApp(Starlette):
    """Hands handlers uvicorn's transport (`scope["sim.transport"]`) so that a `reset`
    fault can abort the TCP connection (see simulators.faults.drop_connection)."""

    def __init__(self, sim: AtlasSim) -> None:
        super().__init__(routes=sim.routes())
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            owner = getattr(send, "__self__", None)
            scope["sim.transport"] = getattr(owner, "transport", None)
        await super().__call__(scope, receive, send)


def create_app(config: AtlasSimConfig | None = None) -> AtlasApp:
    return AtlasApp(AtlasSim(config))


@asynccontextmanager
async def run_atlas(
    config: AtlasSimConfig | None = None, *, port: int = 0
) -> AsyncIterator[AtlasHandle]:
    """The simulator on 127.0.0.1 in a background thread (a free port when 0)."""
    async with serve_in_thread(create_app(config), port=port) as url:
        yield AtlasHandle(url)


def main() -> None:
    """`python -m simulators.atlas --port 9110 [--config '{json}']`: the simulator in the
    foreground (development: point an atlas account's base_url at it)."""
    serve_main("python -m simulators.atlas", main.__doc__, 9110, AtlasSimConfig, create_app)


if __name__ == "__main__":
    main()
