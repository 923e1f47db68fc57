"""The ComfyUI simulator's routes: the server's API and the `/_sim` controls (see
simulators.comfyui for what each does)."""

from __future__ import annotations

import dataclasses
import uuid
from typing import TYPE_CHECKING, Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from simulators.comfyui_graph import PromptRejected, validate
from simulators.responses import json_body, json_response

if TYPE_CHECKING:
    from simulators.comfyui import ComfySim


def api_routes(sim: ComfySim) -> list[BaseRoute]:
    from simulators.comfyui import QueueItem

    async def post_prompt(request: Request) -> Response:
        if (fault := await sim.intercept(request)) is not None:
            return fault
        body = await json_body(request)
        if not isinstance(body, dict):  # aiohttp's request.json() raises: a 500
            return PlainTextResponse("500 Internal Server Error", 500)
        if "prompt" not in body:
            error = {"type": "no_prompt", "message": "No prompt provided", "details": ""}
            return json_response({"error": error | {"extra_info": {}}, "node_errors": {}}, 400)
        try:
            outputs, node_errors = validate(
                body["prompt"], lambda name: sim.input_file(name) is not None
            )
        except PromptRejected as rejected:
            return json_response(
                {"error": rejected.error, "node_errors": rejected.node_errors}, 400
            )
        number = float(body["number"]) if "number" in body else sim.number
        sim.number += 1
        extra = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra["client_id"] = body["client_id"]
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        sim.pending.append(QueueItem(number, prompt_id, body["prompt"], extra, outputs))
        sim.most_queued = max(sim.most_queued, sim.queue_remaining())
        sim.wake.set()
        await sim.broadcast_status()
        return json_response({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    async def get_prompt(request: Request) -> Response:
        if (fault := await sim.intercept(request)) is not None:
            return fault
        return json_response({"exec_info": {"queue_remaining": sim.queue_remaining()}})

    async def get_history(request: Request) -> Response:
        if (fault := await sim.intercept(request)) is not None:
            return fault
        prompt_id = request.path_params.get("prompt_id")
        if prompt_id is not None:
            entry = sim.history.get(prompt_id)
            return json_response({prompt_id: entry} if entry is not None else {})
        keys = list(sim.history)
        limit = request.query_params.get("max_items", "")
        if limit.isdigit():
            keys = keys[-int(limit) :] if int(limit) else []
        return json_response({key: sim.history[key] for key in keys})

    async def get_queue(request: Request) -> Response:
        if (fault := await sim.intercept(request)) is not None:
            return fault
        running = [sim.running.as_list()] if sim.running else []
        pending = [item.as_list() for item in sim.pending]
        return json_response({"queue_running": running, "queue_pending": pending})

    async def post_queue(request: Request) -> Response:
        if (fault := await sim.intercept(request)) is not None:
            return fault
        body = await json_body(request) or {}
        if body.get("clear"):
            sim.pending.clear()
        doomed = set(body.get("delete") or [])
        sim.pending[:] = [item for item in sim.pending if item.prompt_id not in doomed]
        return Response(status_code=200)

    async def post_interrupt(request: Request) -> Response:
        if (fault := await sim.intercept(request)) is not None:
            return fault
        body = await json_body(request) or {}
        wanted = body.get("prompt_id") if isinstance(body, dict) else None
        if sim.running is not None and wanted in (None, sim.running.prompt_id):
            sim.interrupt = sim.running.prompt_id
        return Response(status_code=200)

    async def upload_image(request: Request) -> Response:
        if (fault := await sim.intercept(request)) is not None:
            return fault
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > sim.settings.max_upload_bytes:
            return PlainTextResponse("413: Request Entity Too Large", 413)
        form = await request.form()
        image = form.get("image")
        if not isinstance(image, UploadFile) or not image.filename:
            return Response(status_code=400)
        kind = str(form.get("type") or "input")
        subfolder = str(form.get("subfolder") or "")
        if (
            kind not in ("input", "temp", "output")
            or ".." in subfolder
            or subfolder.startswith("/")
        ):
            return Response(status_code=400)
        data = await image.read()
        name = image.filename.rsplit("/", 1)[-1]
        files = sim.uploads if kind == "input" else sim.files
        if str(form.get("overwrite") or "") not in ("true", "1"):
            stem, dot, ext = name.rpartition(".")
            stem, dot = (stem, dot) if dot else (ext, "")
            ext = ext if dot else ""
            count = 1
            while (kind, subfolder, name) in files and files[(kind, subfolder, name)] != data:
                name = f"{stem} ({count}){dot}{ext}"
                count += 1
        files[(kind, subfolder, name)] = data
        return json_response({"name": name, "subfolder": subfolder, "type": kind})

    async def view(request: Request) -> Response:
        if (fault := await sim.intercept(request)) is not None:
            return fault
        query = request.query_params
        name = query.get("filename", "")
        if not name:
            return Response(status_code=404)
        if name.startswith("/") or ".." in name:
            return Response(status_code=400)
        kind = query.get("type", "output")
        if kind not in ("input", "temp", "output"):
            return Response(status_code=400)
        subfolder = query.get("subfolder", "")
        if ".." in subfolder:
            return Response(status_code=403)
        files = sim.uploads if kind == "input" else sim.files
        data = files.get((kind, subfolder, name))
        if data is None:
            return Response(status_code=404)
        headers = {"Content-Disposition": f'filename="{name}"'}
        return Response(data, media_type="image/png", headers=headers)

    async def websocket(socket: WebSocket) -> None:
        token = sim.settings.token
        header = socket.headers.get("authorization", "")
        if sim.settings.websocket == "off" or (token and header != f"Bearer {token}"):
            await socket.close(code=1008)  # before accept: the handshake gets a 403
            return
        await socket.accept()
        sid = socket.query_params.get("clientId") or uuid.uuid4().hex
        sim.sockets[sid] = socket
        try:
            status = {"exec_info": {"queue_remaining": sim.queue_remaining()}}
            await sim.send("status", {"status": status, "sid": sid}, sid)
            while True:
                await socket.receive_text()
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            if sim.sockets.get(sid) is socket:
                del sim.sockets[sid]

    return [
        Route("/prompt", post_prompt, methods=["POST"]),
        Route("/prompt", get_prompt, methods=["GET"]),
        Route("/history", get_history, methods=["GET"]),
        Route("/history/{prompt_id}", get_history, methods=["GET"]),
        Route("/queue", get_queue, methods=["GET"]),
        Route("/queue", post_queue, methods=["POST"]),
        Route("/interrupt", post_interrupt, methods=["POST"]),
        Route("/upload/image", upload_image, methods=["POST"]),
        Route("/view", view, methods=["GET"]),
        WebSocketRoute("/ws", websocket),
    ]


def control_routes(sim: ComfySim) -> list[BaseRoute]:
    """The shared CMS-style controls, plus the settings (`PATCH /_sim/config` merges)."""

    async def get_config(request: Request) -> Response:
        return json_response(dataclasses.asdict(sim.settings))

    async def patch_config(request: Request) -> Response:
        changes: Any = await json_body(request)
        known = {item.name for item in dataclasses.fields(sim.settings)}
        if not isinstance(changes, dict) or not set(changes) <= known:
            return json_response(
                {"detail": f"expected an object with keys among {sorted(known)}"}, 422
            )
        sim.settings = dataclasses.replace(sim.settings, **changes)
        return json_response(dataclasses.asdict(sim.settings))

    shared = [
        route for route in sim.control_routes() if getattr(route, "path", "") != "/_sim/config"
    ]
    return [
        Route("/_sim/config", get_config, methods=["GET"]),
        Route("/_sim/config", patch_config, methods=["PATCH"]),
        *shared,
    ]
