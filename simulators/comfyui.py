"""A ComfyUI server, as far as its HTTP and websocket API goes: one GPU that runs one
prompt at a time from a queue, for a configurable time, and makes real PNGs.

API (as ComfyUI's server.py speaks it): `POST /prompt` {prompt, client_id, extra_data?,
prompt_id?} -> {prompt_id, number, node_errors} or 400 {error, node_errors};
`GET /history[/{prompt_id}]`; `GET /queue`, `POST /queue` {delete|clear},
`POST /interrupt` {prompt_id?}; `POST /upload/image` (multipart `image`, `overwrite`,
`type`, `subfolder`) -> {name, subfolder, type}; `GET /view?filename&subfolder&type`;
websocket `/ws?clientId=`: `status`, then for that client's prompts `execution_start`,
`execution_cached`, `executing` {node, prompt_id} per node, `progress`, `executed`,
`execution_success` or `execution_error`, and `executing` with `node: null` at the end.

Control routes (simulators.cms.base, plus `PATCH /_sim/config` and `GET /_sim/state`):
settings `run_s` (one prompt's run time), `token` (a Bearer token an auth proxy in
front would require), `websocket` ("on", "off": refused, "silent": no messages),
`execution_error` {count, exception_message, exception_type} (the next prompts fail
while running), `max_upload_bytes`. Faults: int statuses, "reset", "hang", and
"malformed" (a 200 with half a JSON body) or "huge" (valid JSON of `headers:
{"x-sim-size": bytes}`, 40 MiB by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute
from starlette.websockets import WebSocket

from simulators.cms.base import CmsApp, CmsSim, run_cms
from simulators.comfyui_graph import (
    NODE_CLASSES,
    execution_order,
    render_plan,
    render_png,
)
from simulators.comfyui_routes import api_routes, control_routes
from simulators.faults import huge, malformed, take_fault
from simulators.responses import bearer_token, dump

Files = dict[tuple[str, str, str], bytes]  # (type, subfolder, filename) -> bytes


@dataclass
class ComfySettings:
    run_s: float = 0.05
    token: str | None = None
    websocket: str = "on"
    execution_error: dict[str, Any] | None = None
    max_upload_bytes: int = 20 * 1024 * 1024


@dataclass
class QueueItem:
    number: float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]

    def as_list(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


@dataclass
class Run:
    """One prompt's execution: what it sent and what it leaves in the history."""

    item: QueueItem
    messages: list[list[Any]] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    failed: bool = False


class ComfySim(CmsSim):
    def __init__(self) -> None:
        super().__init__("comfyui")
        self.settings = ComfySettings()
        self.uploads: Files = {}
        self.files: Files = {}
        self.pending: list[QueueItem] = []
        self.running: QueueItem | None = None
        self.history: dict[str, dict[str, Any]] = {}
        self.sockets: dict[str, WebSocket] = {}
        self.number = 0
        self.counter = 0
        self.most_queued = 0
        self.interrupt: str | None = None
        self.wake = asyncio.Event()

    def reset(self) -> None:
        super().reset()
        self.settings = ComfySettings()
        self.uploads.clear()
        self.files.clear()
        self.pending.clear()
        self.history.clear()
        self.most_queued = 0

    def state(self) -> Any:
        return {
            "queue_pending": [item.prompt_id for item in self.pending],
            "queue_running": self.running.prompt_id if self.running else None,
            "history": list(self.history),
            "uploads": [list(key) for key in self.uploads],
            "most_queued": self.most_queued,
            "sockets": list(self.sockets),
        }

    def queue_remaining(self) -> int:
        return len(self.pending) + (1 if self.running else 0)

    async def intercept(self, request: Request) -> Response | None:
        """Auth (when a token is set), then the request log and injected faults."""
        token = self.settings.token
        if token and bearer_token(request) != token:
            return PlainTextResponse("401: Unauthorized", 401)
        fault = take_fault(self.faults, request, statuses=("malformed", "huge"))
        if fault is not None:
            body = dump(fault.body or {"prompt_id": str(uuid.uuid4()), "number": 0})
            if fault.status == "malformed":
                return malformed(body, 200)
            size = int((fault.headers or {}).get("x-sim-size", 40 * 1024 * 1024))
            return huge(b'{"prompt_id":"__SIM_HUGE_BODY__"}', b"x", size, 200)
        return await super().intercept(request)

    # --- websocket ------------------------------------------------------------------

    async def send(self, event: str, data: dict[str, Any], sid: str | None) -> None:
        if self.settings.websocket == "silent" and event != "status":
            return
        targets = list(self.sockets.values()) if sid is None else [self.sockets.get(sid)]
        for socket in targets:
            if socket is not None:
                with contextlib.suppress(Exception):
                    await socket.send_json({"type": event, "data": data})

    async def broadcast_status(self) -> None:
        status = {"status": {"exec_info": {"queue_remaining": self.queue_remaining()}}}
        await self.send("status", status, None)

    # --- the GPU --------------------------------------------------------------------

    async def work(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.pending:
                self.pending.sort(key=lambda item: item.number)
                self.running = self.pending.pop(0)
                try:
                    await self.execute(self.running)
                finally:
                    self.running = None
                    await self.broadcast_status()

    async def execute(self, item: QueueItem) -> None:
        sid = item.extra_data.get("client_id")
        run = Run(item)
        await self._message(run, "execution_start", {}, sid)
        await self._message(run, "execution_cached", {"nodes": []}, sid)
        order = execution_order(item.prompt, item.outputs)
        failing = self._failing_node(item.prompt, order)
        step_s = self.settings.run_s / max(1, len(order))
        for node_id in order:
            if self.interrupt == item.prompt_id:
                self.interrupt = None
                await self._fail(run, "execution_interrupted", node_id, None, sid)
                break
            await self.send("executing", _executing(node_id, item.prompt_id), sid)
            await asyncio.sleep(step_s)
            problem = failing[1] if failing and failing[0] == node_id else None
            problem = problem or self._load_problem(item.prompt[node_id])
            if problem is not None:
                await self._fail(run, "execution_error", node_id, problem, sid)
                break
            if NODE_CLASSES[item.prompt[node_id]["class_type"]].output:
                await self._save(run, node_id, order, sid)
        if not run.failed:
            await self._message(run, "execution_success", {}, sid)
        self.history[item.prompt_id] = {
            "prompt": item.as_list(),
            "outputs": run.outputs,
            "status": {
                "status_str": "error" if run.failed else "success",
                "completed": not run.failed,
                "messages": run.messages,
            },
            "meta": {key: {"node_id": key, "display_node": key} for key in run.outputs},
        }
        await self.send("executing", {"node": None, "prompt_id": item.prompt_id}, sid)

    async def _message(self, run: Run, event: str, data: dict[str, Any], sid: Any) -> None:
        data = {"prompt_id": run.item.prompt_id, **data, "timestamp": int(time.time() * 1000)}
        run.messages.append([event, data])
        await self.send(event, data, sid)

    async def _fail(
        self, run: Run, event: str, node_id: str, problem: tuple[str, str] | None, sid: Any
    ) -> None:
        run.failed = True
        data: dict[str, Any] = {
            "node_id": node_id,
            "node_type": run.item.prompt[node_id]["class_type"],
            "executed": list(run.outputs),
        }
        if problem is not None:
            data |= {
                "exception_type": problem[0],
                "exception_message": problem[1],
                "traceback": [f'  File "nodes.py", line 1, in {problem[0]}\n'],
                "current_inputs": {},
                "current_outputs": {},
            }
        await self._message(run, event, data, sid)

    def _failing_node(
        self, prompt: dict[str, Any], order: list[str]
    ) -> tuple[str, tuple[str, str]] | None:
        spec = self.settings.execution_error
        if not spec or int(spec.get("count", 1)) <= 0:
            return None
        spec["count"] = int(spec.get("count", 1)) - 1
        sampler = [key for key in order if prompt[key]["class_type"] == "KSampler"]
        where = sampler[0] if sampler else order[-1]
        kind = str(spec.get("exception_type", "torch.OutOfMemoryError"))
        message = str(spec.get("exception_message", "Allocation on device"))
        return where, (kind, message)

    def _load_problem(self, node: dict[str, Any]) -> tuple[str, str] | None:
        """LoadImage decodes its file only when it runs: a non-image upload fails here."""
        if node["class_type"] not in ("LoadImage", "LoadImageMask"):
            return None
        name = str(node["inputs"]["image"])
        try:
            with Image.open(io.BytesIO(self.input_file(name) or b"")) as image:
                image.load()
        except (OSError, ValueError) as exc:
            return "PIL.UnidentifiedImageError", f"cannot identify image file {name!r}: {exc}"
        return None

    async def _save(self, run: Run, node_id: str, order: list[str], sid: Any) -> None:
        item = run.item
        node = item.prompt[node_id]
        plan = render_plan(item.prompt, order, self.input_size)
        reference = self.input_file(plan.reference) if plan.reference else None
        kind = "output" if node["class_type"] == "SaveImage" else "temp"
        prefix = str(node["inputs"].get("filename_prefix", "ComfyUI_temp")).strip("/") or "ComfyUI"
        images = []
        for index in range(plan.batch):
            self.counter += 1
            name = f"{prefix.rsplit('/', 1)[-1]}_{self.counter:05}_.png"
            subfolder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
            data = render_png(plan.width, plan.height, plan.seed, plan.texts, index, reference)
            self.files[(kind, subfolder, name)] = data
            images.append({"filename": name, "subfolder": subfolder, "type": kind})
        run.outputs[node_id] = {"images": images}
        output = {"node": node_id, "display_node": node_id, "output": run.outputs[node_id]}
        await self.send("executed", {**output, "prompt_id": item.prompt_id}, sid)

    def input_file(self, name: str) -> bytes | None:
        subfolder, _, filename = name.rpartition("/")
        return self.uploads.get(("input", subfolder, filename))

    def input_size(self, name: str) -> tuple[int, int] | None:
        try:
            with Image.open(io.BytesIO(self.input_file(name) or b"")) as image:
                return image.size
        except (OSError, ValueError):
            return None


def _executing(node_id: str, prompt_id: str) -> dict[str, Any]:
    return {"node": node_id, "display_node": node_id, "prompt_id": prompt_id}


def comfyui_app(sim: ComfySim | None = None) -> Starlette:
    """The simulator's Starlette app (its GPU worker runs while the app does)."""
    sim = sim or ComfySim()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        worker = asyncio.create_task(sim.work())
        try:
            yield
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    routes: list[BaseRoute] = [*control_routes(sim), *api_routes(sim)]
    app = CmsApp(routes=routes, lifespan=lifespan)
    app.state.sim = sim
    return app


def run_comfyui(sim: ComfySim | None = None, *, port: int = 0) -> Any:
    """An async context manager: the simulator on 127.0.0.1, yielding its base URL."""
    return run_cms(lambda: comfyui_app(sim), port=port)


def main() -> None:
    """`python -m simulators.comfyui --port 8188`: the simulator in the foreground."""
    import argparse

    import uvicorn

    from simulators.runner import server_options

    parser = argparse.ArgumentParser(prog="python -m simulators.comfyui", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--run-s", type=float, default=ComfySettings.run_s)
    args = parser.parse_args()
    sim = ComfySim()
    sim.settings.run_s = args.run_s
    uvicorn.run(comfyui_app(sim), host=args.host, port=args.port, **server_options())


if __name__ == "__main__":
    main()
