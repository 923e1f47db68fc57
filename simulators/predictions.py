"""Replicate predictions: the record, its JSON, and its life (starting -> processing ->
succeeded | failed | canceled) driven by loop timers rather than one task each, so that
thousands of predictions in flight cost next to nothing.

Processing begins after a tenth of the sampled latency (at most 1 s); the prediction ends
when the whole latency has passed since creation.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from simulators.state import SimState
from simulators.webhooks import WebhookSender

ALL_EVENTS = frozenset({"start", "output", "logs", "completed"})
ACTIVE = ("starting", "processing")
# What Replicate's image models say when their safety checker rejects every output.
NSFW_ERROR = (
    "All generated images contained NSFW content. Try running it again with a different prompt."
)

# Failures a new prediction may not repeat, as Replicate and its models word them; ""
# stands for a failure with a null error.
TRANSIENT_ERRORS = (
    "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 39.39 GiB total capacity; "
    "37.12 GiB already allocated; 1.08 GiB free; 37.56 GiB reserved in total by PyTorch)",
    "Prediction interrupted; please retry (code: PA)",
    "Prediction failed for an unknown reason. It might have run out of memory? (exitcode -9)",
    "Director: unexpected error handling prediction (E8765)",
    "Prediction timed out",
    "",
)
# Failures that say the input can never work.
PERMANENT_ERRORS = (
    NSFW_ERROR,
    "NSFW content detected. Try running it again, or try a different prompt.",
    "Input validation failed: prompt: ensure this value has at most 2000 characters",
)


def new_prediction_id() -> str:
    return base64.b32encode(os.urandom(20)).decode().lower()[:26]


def _timestamp(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds")[:-6] + "Z"


@dataclass(slots=True, eq=False)
class Prediction:
    id: str
    model: str
    version: str
    input: dict[str, Any]
    base_url: str
    width: int
    height: int
    ext: str
    outputs: int
    webhook: str | None
    events: frozenset[str]
    failure: str | None
    not_image: bool
    created_at: float = field(default_factory=time.time)
    status: str = "starting"
    started_at: float | None = None
    completed_at: float | None = None
    error: str | None = None
    logs: str = ""
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def file_names(self) -> list[str]:
        return [
            f"{self.id}.{self.ext}" if i == 0 else f"{self.id}_{i}.{self.ext}"
            for i in range(self.outputs)
        ]

    def to_json(self) -> dict[str, Any]:
        api = f"{self.base_url}/v1/predictions/{self.id}"
        output = None
        if self.status == "succeeded":
            output = [f"{self.base_url}/files/{name}" for name in self.file_names()]
        metrics: dict[str, float] = {}
        if self.completed_at is not None and self.started_at is not None:
            metrics = {
                "predict_time": round(self.completed_at - self.started_at, 6),
                "total_time": round(self.completed_at - self.created_at, 6),
            }
        return {
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "input": self.input,
            "logs": self.logs,
            "output": output,
            "data_removed": False,
            "error": self.error,
            "source": "api",
            "status": self.status,
            "created_at": _timestamp(self.created_at),
            "started_at": _timestamp(self.started_at),
            "completed_at": _timestamp(self.completed_at),
            "urls": {
                "cancel": f"{api}/cancel",
                "get": api,
                "web": f"{self.base_url}/p/{self.id}",
            },
            "metrics": metrics,
        }

    def cancel_timers(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()

    async def wait(self, timeout: float) -> None:
        """Until the prediction finishes or `timeout` passes (Replicate's `Prefer: wait`)."""
        if not self.active:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(future)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            pass


class Lifecycle:
    def __init__(self, state: SimState) -> None:
        self.state = state
        self.sender: WebhookSender | None = None

    def launch(self, prediction: Prediction, latency: float) -> None:
        state = self.state
        state.predictions[prediction.id] = prediction
        state.created.append(prediction)
        state.move_status(None, "starting")
        state.limits["replicate"].start(prediction.id, time.monotonic() + latency)
        loop = asyncio.get_running_loop()
        prediction.timers = [
            loop.call_later(min(latency / 10, 1.0), self._start, prediction),
            loop.call_later(latency, self._finish, prediction, None),
        ]

    def cancel(self, prediction: Prediction) -> None:
        self.state.counts["cancels"] += 1
        if prediction.active:
            prediction.cancel_timers()
            self._finish(prediction, "canceled")

    def _start(self, prediction: Prediction) -> None:
        if prediction.status != "starting":
            return
        prediction.status, prediction.started_at = "processing", time.time()
        prediction.logs = f"Using seed: {abs(hash(prediction.id)) % 100000}\n"
        self.state.move_status("starting", "processing")
        if "start" in prediction.events:
            self._notify(prediction)

    def _finish(self, prediction: Prediction, forced: str | None) -> None:
        if not prediction.active:
            return
        old = prediction.status
        now = time.time()
        if prediction.started_at is None:
            prediction.started_at = now
        prediction.completed_at = now
        if forced is not None:
            prediction.status = forced
        elif prediction.failure is not None:
            prediction.status, prediction.error = "failed", prediction.failure or None
        else:
            prediction.status = "succeeded"
            prediction.logs += f"Generated {prediction.outputs} image(s)\n"
        state = self.state
        state.move_status(old, prediction.status)
        state.limits["replicate"].finish(prediction.id)
        state.record_completion()
        prediction.timers.clear()
        for waiter in prediction.waiters:
            if not waiter.done():
                waiter.set_result(None)
        prediction.waiters.clear()
        if "completed" in prediction.events:
            self._notify(prediction)

    def _notify(self, prediction: Prediction) -> None:
        if prediction.webhook and self.state.config.webhooks and self.sender is not None:
            body = json.dumps(prediction.to_json(), separators=(",", ":")).encode()
            self.sender.send(prediction.webhook, body)
