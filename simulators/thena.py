"""A Luckdata Thena simulator: the JSON image API that the declarative HTTP provider
(kind `http`) is shown against.

The real API (luckdata.io, "Quick Start with Luckdata Thena API"):
`POST /api/thena/9wsC1QKXEoPh?user-agent=THENA`, header `X-Luckdata-Api-Key`, body
`{"model": "default", "width": "512", "height": "512", "prompt": "...",
"creative": "false"}`: width, height and creative are strings. The answer is
`{code, message, data: {image_url}}`; errors are HTTP 400 (bad parameters or JSON), 401
(bad key), 429 (rate limited), 500. The simulator is strict where the real API is: a
number where it wants a string is a 400, so the provider's typing rule is exercised.

An asynchronous variant (not Thena's; a typical task API) tests the polling path:
`POST /api/thena/tasks` (same body) answers `{code, data: {task_id}}`;
`GET /api/thena/tasks/{task_id}` answers `{code, data: {status, image_url?, error?}}`,
status `processing` for `polls_until_done` polls, then `succeeded` (or `failed` when
the prompt contains "FAIL"). A task whose body has `"duration": "<seconds>"` makes a video:
`data.video_url`, an H.264 MP4 at `GET /files/{id}.mp4`.

Output files: `GET /files/{id}.png`; with `b64` set in the config (`PATCH /_sim/config`),
answers also carry the image itself in `data.image_b64`. Control routes (simulators.cms.base)
plus `POST /_sim/answers {"malformed": n, "not_image": n, "no_image": n, "huge": n}`: the
next n successful answers are cut in half, point at bytes that are not an image, lack
`data.image_url`, or are 20 MiB of valid JSON. Faults (`POST /_sim/faults`): any status
with a body (a 429 with `rate_limited_body(seconds)`), "reset", "hang".
"""

from __future__ import annotations

import base64
import itertools
import re
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulators.atlas_media import VIDEO_TYPE, video_file
from simulators.cms.base import CmsSim, cms_app
from simulators.faults import HUGE_PLACEHOLDER, huge, malformed
from simulators.images import NOT_IMAGE, image_bytes
from simulators.responses import dump, json_body, json_response

SYNC_PATH = "/api/thena/9wsC1QKXEoPh"
API_KEY = "thena-sim-key"
_DIGITS = re.compile(r"[1-9][0-9]{0,3}")
_MAX_SIDE = 2048
HUGE_BYTES = 20 * 1024 * 1024


def rate_limited_body(retry_after: float) -> dict[str, Any]:
    """What a 429 carries: the wait in the body (`retry_after`, seconds)."""
    return {"code": 429, "message": "Too many requests", "retry_after": retry_after, "data": None}


def error_body(code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message, "data": None}


@dataclass
class Task:
    id: str
    width: int
    height: int
    fail: bool
    duration_s: float | None = None  # a video task
    polls: int = 0


class ThenaSim(CmsSim):
    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__("thena", {"api_key": API_KEY, "polls_until_done": 1, **(config or {})})
        self.defaults = dict(self.config)
        self.tasks: dict[str, Task] = {}
        self.files: dict[str, tuple[int, int, bool]] = {}
        self.videos: dict[str, tuple[int, int, float]] = {}
        self.answers: dict[str, int] = {}
        self._ids = itertools.count(1)

    def reset(self) -> None:
        """Back to as started: configuration changes go too."""
        super().reset()
        self.config = dict(self.defaults)
        self.tasks.clear()
        self.files.clear()
        self.videos.clear()
        self.answers.clear()

    def state(self) -> Any:
        return {"tasks": {key: vars(task) for key, task in self.tasks.items()}}

    def take(self, answer: str) -> bool:
        """Use up one of the next answers configured to be broken this way."""
        if self.answers.get(answer, 0) > 0:
            self.answers[answer] -= 1
            return True
        return False

    def image_data(self, request: Request, width: int, height: int) -> dict[str, Any]:
        """`image_url`, plus the same image in `image_b64` when configured (`b64`)."""
        if self.take("no_image"):
            return {}
        file_id = f"img{next(self._ids)}"
        broken = self.take("not_image")
        self.files[file_id] = (width, height, broken)
        data = {"image_url": str(request.base_url).rstrip("/") + f"/files/{file_id}.png"}
        if self.config.get("b64"):
            raw = NOT_IMAGE if broken else image_bytes(width, height, "png")
            data["image_b64"] = base64.b64encode(raw).decode()
        return data

    def video_data(self, request: Request, task: Task) -> dict[str, Any]:
        assert task.duration_s is not None
        file_id = f"vid{next(self._ids)}"
        self.videos[file_id] = (task.width, task.height, task.duration_s)
        return {"video_url": str(request.base_url).rstrip("/") + f"/files/{file_id}.mp4"}

    def check(self, request: Request, body: Any) -> Response | tuple[int, int]:
        """An error response, or the (width, height) asked for."""
        if request.headers.get("x-luckdata-api-key") != self.config["api_key"]:
            return json_response(error_body(401, "Invalid or missing API key"), 401)
        if not isinstance(body, dict):
            return json_response(error_body(400, "Request body is not valid JSON"), 400)
        for field in ("model", "width", "height", "prompt", "creative"):
            if not isinstance(body.get(field), str):
                kind = type(body.get(field)).__name__ if field in body else "missing"
                message = f"Parameter '{field}' must be a string (got {kind})"
                return json_response(error_body(400, message), 400)
        if not body["prompt"].strip():
            return json_response(error_body(400, "Parameter 'prompt' is empty"), 400)
        if body["creative"] not in ("true", "false"):
            return json_response(error_body(400, "Parameter 'creative' must be true|false"), 400)
        sides = [body["width"], body["height"]]
        if not all(_DIGITS.fullmatch(side) and int(side) <= _MAX_SIDE for side in sides):
            return json_response(error_body(400, f"Invalid size {sides}"), 400)
        return int(sides[0]), int(sides[1])

    def success(self, data: dict[str, Any]) -> Response:
        payload = dump({"code": 200, "message": "success", "data": data})
        if self.take("malformed"):
            return malformed(payload, 200)
        if self.take("huge"):  # valid JSON, only enormous: a padding field of HUGE_BYTES
            padded = {"code": 200, "data": data, "padding": HUGE_PLACEHOLDER}
            return huge(dump(padded), b"x", HUGE_BYTES, 200)
        return Response(payload, media_type="application/json")


def build_app(config: dict[str, Any] | None = None) -> Starlette:
    sim = ThenaSim(config)

    async def generate(request: Request) -> Response:
        if (fault := await sim.intercept(request)) is not None:
            return fault
        if request.query_params.get("user-agent") != "THENA":
            return json_response(error_body(400, "Missing user-agent parameter"), 400)
        checked = sim.check(request, await json_body(request))
        if isinstance(checked, Response):
            return checked
        return sim.success(sim.image_data(request, *checked))

    async def create_task(request: Request) -> Response:
        if (fault := await sim.intercept(request)) is not None:
            return fault
        body = await json_body(request)
        checked = sim.check(request, body)
        if isinstance(checked, Response):
            return checked
        duration = body.get("duration")
        if duration is not None and not (isinstance(duration, str) and _DIGITS.fullmatch(duration)):
            message = "Parameter 'duration' must be a string of whole seconds"
            return json_response(error_body(400, message), 400)
        task = Task(f"task{next(sim._ids)}", *checked, fail="FAIL" in body["prompt"])
        task.duration_s = float(duration) if duration else None
        sim.tasks[task.id] = task
        return sim.success({"task_id": task.id})

    async def get_task(request: Request) -> Response:
        if (fault := await sim.intercept(request)) is not None:
            return fault
        if request.headers.get("x-luckdata-api-key") != sim.config["api_key"]:
            return json_response(error_body(401, "Invalid or missing API key"), 401)
        task = sim.tasks.get(request.path_params["task_id"])
        if task is None:
            return json_response(error_body(404, "Task not found"), 404)
        task.polls += 1
        if task.polls < int(sim.config["polls_until_done"]):
            return sim.success({"status": "processing"})
        if task.fail:
            return sim.success({"status": "failed", "error": "Content rejected by safety filter"})
        if task.duration_s is not None:
            return sim.success({"status": "succeeded", **sim.video_data(request, task)})
        return sim.success(
            {"status": "succeeded", **sim.image_data(request, task.width, task.height)}
        )

    async def get_file(request: Request) -> Response:
        if (fault := await sim.intercept(request)) is not None:
            return fault
        found = sim.files.get(request.path_params["file_id"])
        if found is None:
            return json_response(error_body(404, "File not found"), 404)
        width, height, broken = found
        data = NOT_IMAGE if broken else image_bytes(width, height, "png")
        return Response(data, media_type="text/html" if broken else "image/png")

    async def get_video(request: Request) -> Response:
        if (fault := await sim.intercept(request)) is not None:
            return fault
        found = sim.videos.get(request.path_params["file_id"])
        if found is None:
            return json_response(error_body(404, "File not found"), 404)
        width, height, duration_s = found
        return Response(video_file(width, height, duration_s, 8), media_type=VIDEO_TYPE)

    async def set_answers(request: Request) -> Response:
        spec = await json_body(request)
        if not isinstance(spec, dict):
            detail = "expected {malformed?, not_image?, no_image?, huge?}"
            return json_response({"detail": detail}, 422)
        for key in ("malformed", "not_image", "no_image", "huge"):
            sim.answers[key] = int(spec.get(key, sim.answers.get(key, 0)))
        return json_response(sim.answers)

    async def set_config(request: Request) -> Response:
        changes = await json_body(request)
        sim.config.update(changes if isinstance(changes, dict) else {})
        return json_response(sim.config)

    return cms_app(
        sim,
        [
            Route("/_sim/answers", set_answers, methods=["POST"]),
            Route("/_sim/config", set_config, methods=["PATCH"]),
            Route(SYNC_PATH, generate, methods=["POST"]),
            Route("/api/thena/tasks", create_task, methods=["POST"]),
            Route("/api/thena/tasks/{task_id}", get_task, methods=["GET"]),
            Route("/files/{file_id}.png", get_file, methods=["GET"]),
            Route("/files/{file_id}.mp4", get_video, methods=["GET"]),
        ],
    )
