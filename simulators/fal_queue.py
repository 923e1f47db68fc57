"""fal's queue, simulated: requests wait in line, `concurrency` of them run at a time, and
each ends with a result (or fal's error) that the status, result and webhook report.

A request's `outcome` is what it will do: "ok"; "invalid_input" (the app's 422, as fal
reports a bad argument: at the result, never at submit); "model_error" (the app's 500);
"not_image" (a 200 whose file is not an image or video); "nsfw" (flagged by fal's
safety checker: `has_nsfw_concepts: [true]`). A missing prompt is always an
`invalid_input`, as it is on fal.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import random
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from simulators.fal_media import InvalidInput, image_size, mp4_bytes, png_or_jpeg, video_shape
from simulators.fal_webhooks import SignatureMode, SigningKeys, WebhookPolicy, WebhookSender
from simulators.images import NOT_IMAGE

Outcome = Literal["ok", "invalid_input", "model_error", "not_image", "nsfw"]
APP_NAMESPACES = ("workflows", "comfy")


class FalSimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_keys: list[str] = Field(default_factory=lambda: ["sim-fal-key"])
    concurrency: int = Field(default=2, ge=1)
    run_s: float = Field(default=0.05, ge=0)
    # While true, running requests do not finish (queue positions stay put for a test).
    hold: bool = False
    user_id: str = "sim-user"
    # Model paths containing one of these are video endpoints.
    video_markers: list[str] = Field(default_factory=lambda: ["video"])
    webhook_signature: SignatureMode = "valid"
    webhook_retries: int = Field(default=2, ge=0)
    webhook_backoff_s: float = Field(default=0.1, ge=0)
    webhook_timeout_s: float = Field(default=5.0, gt=0)


def app_id(model_path: str) -> str:
    """fal's queue addresses a request by its app (`owner/alias`, or
    `namespace/owner/alias`), never by the endpoint's sub-path: `fal-ai/flux/dev` is
    submitted there, and read back at `fal-ai/flux/requests/{id}`."""
    parts = model_path.strip("/").split("/")
    keep = 3 if parts[0] in APP_NAMESPACES else 2
    return "/".join(parts[:keep])


@dataclass
class FalRequest:
    id: str
    model: str
    app: str
    arguments: dict[str, Any]
    webhook: str | None
    outcome: Outcome
    base_url: str
    status: str = "IN_QUEUE"
    cancelled: bool = False
    result: dict[str, Any] | None = None
    error: tuple[int, Any] | None = None
    inference_s: float = 0.0
    # Wall-clock times (epoch seconds), for benchmarks: queued, started, completed.
    times: dict[str, float] = field(default_factory=lambda: {"queued": time.time()})

    def urls(self) -> dict[str, str]:
        base = f"{self.base_url}/{self.app}/requests/{self.id}"
        return {
            "response_url": base,
            "status_url": base + "/status",
            "cancel_url": base + "/cancel",
        }

    def error_text(self) -> str | None:
        if self.cancelled:
            return "Request was cancelled by the user"
        return f"Invalid status code: {self.error[0]}" if self.error else None


@dataclass
class FalQueue:
    config: FalSimConfig = field(default_factory=FalSimConfig)
    requests: dict[str, FalRequest] = field(default_factory=dict)
    waiting: deque[str] = field(default_factory=deque)
    running: int = 0
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    outcomes: deque[Outcome] = field(default_factory=deque)
    counts: Counter[str] = field(default_factory=Counter)
    keys: SigningKeys = field(default_factory=SigningKeys)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    sender: WebhookSender | None = None

    def __post_init__(self) -> None:
        self.released.set()

    def webhooks(self) -> WebhookSender:
        if self.sender is None:
            self.sender = WebhookSender(self.keys, self.counts)
        return self.sender

    def configure(self, changes: dict[str, Any]) -> FalSimConfig:
        self.config = FalSimConfig.model_validate(self.config.model_dump() | changes)
        if self.config.hold:
            self.released.clear()
        else:
            self.released.set()
        self.pump()
        return self.config

    def submit(
        self, model: str, arguments: dict[str, Any], webhook: str | None, base: str
    ) -> FalRequest:
        outcome: Outcome = self.outcomes.popleft() if self.outcomes else "ok"
        request = FalRequest(
            id=str(uuid.uuid4()), model=model.strip("/"), app=app_id(model),
            arguments=arguments, webhook=webhook, outcome=outcome, base_url=base,
        )  # fmt: skip
        self.requests[request.id] = request
        self.waiting.append(request.id)
        self.counts["submitted"] += 1
        self.pump()
        return request

    def position(self, request: FalRequest) -> int:
        return self.waiting.index(request.id) if request.status == "IN_QUEUE" else 0

    def cancel(self, request: FalRequest) -> bool:
        if request.status != "IN_QUEUE":
            return False
        self.waiting.remove(request.id)
        request.status, request.cancelled = "COMPLETED", True
        self.counts["cancelled"] += 1
        return True

    def pump(self) -> None:
        while self.waiting and self.running < self.config.concurrency:
            request = self.requests[self.waiting.popleft()]
            request.status = "IN_PROGRESS"
            request.times["started"] = time.time()
            self.running += 1
            self.counts["max_running"] = max(self.counts["max_running"], self.running)
            task = asyncio.get_running_loop().create_task(self._run(request))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _run(self, request: FalRequest) -> None:
        started = time.monotonic()
        try:
            await asyncio.sleep(self.config.run_s)
            await self.released.wait()
            await self._finish(request)
        finally:
            request.inference_s = time.monotonic() - started
            request.status = "COMPLETED"
            request.times["completed"] = time.time()
            self.running -= 1
            self.counts["failed" if request.error else "completed"] += 1
            self.pump()
        if request.webhook:
            self._notify(request)

    async def _finish(self, request: FalRequest) -> None:
        try:
            if request.outcome == "invalid_input":
                raise InvalidInput("prompt", "simulated validation error")
            if (
                not isinstance(request.arguments.get("prompt"), str)
                or not request.arguments["prompt"]
            ):
                raise InvalidInput("prompt", "field required", "value_error.missing")
            for name in ("image_url", "mask_url"):
                check_image_input(name, request.arguments.get(name))
            if request.outcome == "model_error":
                request.error = (500, {"detail": "Internal Server Error"})
                return
            video = any(marker in request.model for marker in self.config.video_markers)
            request.result = await (self._video(request) if video else self._images(request))
        except InvalidInput as exc:
            request.error = (422, {"detail": exc.detail})

    def _store(
        self, request: FalRequest, name: str, data: bytes, content_type: str
    ) -> dict[str, Any]:
        if request.outcome == "not_image":
            data = NOT_IMAGE
        self.files[name] = (data, content_type)
        url = f"{request.base_url}/files/{name}"
        return {"url": url, "content_type": content_type, "file_name": name, "file_size": len(data)}

    async def _images(self, request: FalRequest) -> dict[str, Any]:
        args = request.arguments
        width, height = image_size(args.get("image_size"))
        output_format = "png" if args.get("output_format") == "png" else "jpeg"
        count = int(args.get("num_images") or 1)
        seed = args.get("seed") if isinstance(args.get("seed"), int) else random.getrandbits(31)
        data, content_type = await asyncio.to_thread(png_or_jpeg, width, height, output_format)
        ext = "png" if output_format == "png" else "jpg"
        images = [
            self._store(request, f"{request.id}-{index}.{ext}", data, content_type)
            | {"width": width, "height": height}
            for index in range(count)
        ]
        timings = {"inference": self.config.run_s}
        flagged = [request.outcome == "nsfw"] * count  # fal's safety checker
        return {"images": images, "seed": seed, "has_nsfw_concepts": flagged,
                "prompt": args["prompt"], "timings": timings}  # fmt: skip

    async def _video(self, request: FalRequest) -> dict[str, Any]:
        width, height, duration, fps = video_shape(request.arguments)
        data = await asyncio.to_thread(mp4_bytes, width, height, duration, fps)
        video = self._store(request, f"{request.id}.mp4", data, "video/mp4")
        seed = request.arguments.get("seed")
        return {"video": video, "seed": seed if isinstance(seed, int) else random.getrandbits(31)}

    def _notify(self, request: FalRequest) -> None:
        assert request.webhook is not None
        payload: Any = request.result if request.error is None else request.error[1]
        body = json.dumps({
            "request_id": request.id, "gateway_request_id": request.id,
            "status": "ERROR" if request.error else "OK",
            "payload": payload, "error": request.error_text(),
        }).encode()  # fmt: skip
        config = self.config
        policy = WebhookPolicy(
            config.user_id, config.webhook_signature, config.webhook_retries,
            config.webhook_backoff_s, config.webhook_timeout_s,
        )  # fmt: skip
        self.webhooks().send(request.webhook, request.id, body, policy)

    def stats(self) -> dict[str, Any]:
        return dict(self.counts) | {"queued": len(self.waiting), "running": self.running}

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.sender is not None:
            await self.sender.close()


def check_image_input(name: str, value: Any) -> None:
    """fal fetches `image_url` itself: a data URI must hold an image, a URL must be http(s)."""
    if value is None:
        return
    if not isinstance(value, str):
        raise InvalidInput(name, "expected a URL or a data URI")
    if value.startswith(("http://", "https://")):
        return
    head, _, data = value.partition(",")
    if not head.startswith("data:image/") or not head.endswith(";base64"):
        raise InvalidInput(name, "Could not load image from url: not an image data URI")
    try:
        with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as image:
            image.verify()
    except (binascii.Error, OSError, ValueError, SyntaxError) as exc:
        raise InvalidInput(name, f"Could not load image from url: {exc}") from exc
