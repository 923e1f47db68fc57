"""ComfyUI (a local or remote server): a model is an API-format workflow file plus where
to inject the job's fields, queued with `POST /prompt`.

- Reference images and masks are uploaded first (`POST /upload/image`, named by their
  content, so a retry uploads the same file) and their names injected into LoadImage.
- The server refuses a workflow (400, or `node_errors` in a 200) before it runs: that is
  permanent, with the node and input it named.
- Completion is read from `GET /history/{prompt_id}`; a websocket per account and
  process (service.providers.comfyui_ws) sees `executing` {node: null} and wakes a
  watcher (`watch`) so that the poll can come early. Outputs come from `GET /view`.
- A GPU runs one prompt at a time: the account's `limits.max_concurrent` (usually 1)
  is what keeps Darkroom from filling ComfyUI's queue.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path
from typing import Any, Literal
from uuid import uuid4

from service.providers.account import AccountConfig, Limits
from service.providers.base import (
    IMAGE_FORMATS,
    AsyncProvider,
    Capabilities,
    GenerationRequest,
    InputImage,
    InputRole,
    Output,
    ProviderError,
    ProviderPermanentError,
    ProviderRetryableError,
    RemoteHandle,
)
from service.providers.comfyui_api import ComfyAPI, node_error_messages
from service.providers.comfyui_workflow import IMAGE_FIELDS, Workflows, fill, inject_targets
from service.providers.comfyui_ws import CompletionListener, websocket_url
from service.providers.http import parse_json_object
from service.providers.images import checked_image
from service.providers.kinds import Kind, ProviderDeps

_UPLOAD_SUBFOLDER = "darkroom"
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
# Exceptions a rerun may get past (the GPU was busy or flaky); any other exception in a
# node is the workflow's or the input's and would happen again.
_TRANSIENT_MARKERS = ("outofmemory", "out of memory", "cuda error", "connectionerror", "timeout")
# A lost submit is looked for among this many recent history entries.
_LOOKUP_HISTORY = 256


class ComfyUIConfig(AccountConfig):
    kind: Literal["comfyui"] = "comfyui"
    base_url: str = "http://127.0.0.1:8188"
    # One GPU runs one prompt at a time; more in flight would only wait in ComfyUI's queue.
    limits: Limits = Limits(max_concurrent=1)
    # Listen on /ws for completions (earlier than polls); off for proxies without websockets.
    websocket: bool = True


class ComfyUIProvider(AsyncProvider):
    kind = "comfyui"
    capabilities = Capabilities(
        media=frozenset({"image"}),
        formats=frozenset(IMAGE_FORMATS),
        inputs=frozenset({"reference", "mask"}),
        cancel=True,
    )

    def __init__(self, name: str, config: ComfyUIConfig, deps: ProviderDeps) -> None:
        self.name = name
        self.config = config
        self.api = ComfyAPI(name, config, deps.http)
        self.workflows = Workflows(name, _config_dir(deps))
        # Prompts queued by this process carry this id; ComfyUI tells only its socket.
        self.client_id = f"darkroom-{uuid4().hex}"
        url = websocket_url(config.base_url, self.client_id)
        self.listener = CompletionListener(name, url, self.api.headers())

    def check_model(self, ref: str, inject: Mapping[str, str]) -> None:
        """Read the workflow and check the inject map against it: for a start-up check of
        the configuration (raises ProviderPermanentError naming the file, node or input)."""
        path, workflow = self.workflows.load(ref)
        inject_targets(self.name, path, workflow, inject)

    def model_inputs(self, inject: Mapping[str, str]) -> frozenset[InputRole]:
        return frozenset(role for field, role in IMAGE_FIELDS.items() if field in inject)

    # --- submit -----------------------------------------------------------------------

    async def submit(self, request: GenerationRequest) -> RemoteHandle:
        path, workflow = self.workflows.load(request.model_ref)
        targets = inject_targets(self.name, path, workflow, request.inject)
        values: dict[str, Any] = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "seed": request.seed,
            "width": request.width,
            "height": request.height,
        }
        for field, role in IMAGE_FIELDS.items():
            if field in targets:
                values[field] = await self._upload(request, role, field, path)
        fill(workflow, targets, values)
        if self.config.websocket:
            self.listener.ensure_running()
        body = {
            "prompt": workflow,
            "client_id": self.client_id,
            "extra_data": {"darkroom_job": request.job_id},
        }
        answer = await self.api.json("POST", "prompt", json_body=body)
        prompt_id = answer.get("prompt_id")
        if not isinstance(prompt_id, str) or not prompt_id:
            raise ProviderRetryableError(
                "malformed_response", f"{self.name}: POST /prompt answered without a prompt_id"
            )
        if answer.get("node_errors"):
            await self._forget(prompt_id)
            messages = "; ".join(node_error_messages(answer["node_errors"]))
            raise ProviderPermanentError(
                "invalid_input", f"{self.name}: ComfyUI refused part of the workflow: {messages}"
            )
        return RemoteHandle(prompt_id, data={"client_id": self.client_id})

    async def _upload(
        self, request: GenerationRequest, role: InputRole, field: str, path: Path
    ) -> str:
        image = request.input(role)
        if image is None:
            raise ProviderPermanentError(
                "invalid_input",
                f"{self.name}: workflow {path.name} takes a {role} image "
                f"(inject.{field}) and the job gave none",
            )
        return await self.upload(image)

    async def upload(self, image: InputImage) -> str:
        """Upload an image to ComfyUI's input folder; the name LoadImage takes. Named by
        content: the same image is one file however often it is sent."""
        ext = _EXTENSIONS.get(image.content_type, "png")
        filename = f"{sha256(image.data).hexdigest()[:32]}.{ext}"
        form = {"overwrite": "true", "type": "input", "subfolder": _UPLOAD_SUBFOLDER}
        files = {"image": (filename, image.data, image.content_type)}
        answer = await self.api.call("POST", "upload/image", files=files, data=form)
        stored = parse_json_object(self.name, answer)
        name, subfolder = stored.get("name"), stored.get("subfolder") or ""
        if not isinstance(name, str) or not name or not isinstance(subfolder, str):
            raise ProviderRetryableError(
                "malformed_response", f"{self.name}: /upload/image answered without a name"
            )
        return f"{subfolder}/{name}" if subfolder else name

    async def _forget(self, prompt_id: str) -> None:
        """Take a prompt out of the queue (best effort: it may be running already)."""
        try:
            await self.api.call("POST", "queue", json_body={"delete": [prompt_id]})
        except ProviderError:
            pass

    # --- completion -------------------------------------------------------------------

    def watch(self, handle: RemoteHandle, wake: Callable[[], None]) -> bool:
        """Wake the engine when this process's socket sees the prompt end."""
        if not self.config.websocket or handle.data.get("client_id") != self.client_id:
            return False
        self.listener.watch(handle.id, wake)
        return True

    async def poll(self, handle: RemoteHandle) -> RemoteHandle:
        entry = await self._history(handle.id)
        if entry is not None:
            return self._finished(handle, entry)
        queue = await self.api.json("GET", "queue")
        position = queue_position(queue, handle.id)
        if position is not None:
            return RemoteHandle(handle.id, data=handle.data, queue_position=position)
        # It may have finished between the two reads.
        entry = await self._history(handle.id)
        if entry is not None:
            return self._finished(handle, entry)
        error = ProviderRetryableError(
            "prompt_lost",
            f"{self.name}: ComfyUI has no prompt {handle.id} queued, running or in its "
            "history (was the server restarted?)",
        )
        return RemoteHandle(handle.id, "failed", handle.data, error)

    async def _history(self, prompt_id: str) -> Mapping[str, Any] | None:
        history = await self.api.json("GET", f"history/{prompt_id}")
        entry = history.get(prompt_id)
        return entry if isinstance(entry, Mapping) else None

    def _finished(self, handle: RemoteHandle, entry: Mapping[str, Any]) -> RemoteHandle:
        raw_status = entry.get("status")
        status: Mapping[str, Any] = raw_status if isinstance(raw_status, Mapping) else {}
        messages = _list(status.get("messages"))
        data = dict(handle.data) | timings(messages)
        if status.get("status_str") == "error":
            kind, error = execution_failure(self.name, handle.id, messages)
            return RemoteHandle(handle.id, kind, data, error)
        images = output_images(entry.get("outputs"))
        if not images:
            error = ProviderPermanentError(
                "no_output",
                f"{self.name}: prompt {handle.id} finished without an image "
                "(does the workflow end in a SaveImage node?)",
            )
            return RemoteHandle(handle.id, "failed", data, error)
        return RemoteHandle(handle.id, "succeeded", data | {"images": images})

    async def fetch_result(self, handle: RemoteHandle, request: GenerationRequest) -> Output:
        if handle.status != "succeeded":
            raise handle.error or ProviderPermanentError(
                "invalid_state", f"{self.name}: prompt {handle.id} is {handle.status}"
            )
        images = handle.data.get("images")
        if not isinstance(images, list) or not images:
            raise ProviderRetryableError(
                "malformed_response", f"{self.name}: prompt {handle.id} has no image to fetch"
            )
        first = images[0]
        params = {key: str(first.get(key) or "") for key in ("filename", "subfolder", "type")}
        data = await self.api.download(params)
        return await checked_image(data, request.format, provider=self.name)

    async def cancel(self, handle: RemoteHandle) -> None:
        """Out of the queue if it waits; interrupted if it is the one running."""
        await self.api.call("POST", "queue", json_body={"delete": [handle.id]})
        queue = await self.api.json("GET", "queue")
        if queue_position(queue, handle.id) == 0:
            await self.api.call("POST", "interrupt", json_body={"prompt_id": handle.id})

    async def find_submitted(
        self, request: GenerationRequest, since: datetime, *, exclude: frozenset[str]
    ) -> RemoteHandle | None:
        """A prompt queued for this job whose answer was lost: ComfyUI keeps the
        `extra_data` it was queued with, in its queue and in its history."""
        queue = await self.api.json("GET", "queue")
        history = await self.api.json("GET", "history", params={"max_items": str(_LOOKUP_HISTORY)})
        items = [*_list(queue.get("queue_running")), *_list(queue.get("queue_pending"))]
        items += [entry.get("prompt") for entry in history.values() if isinstance(entry, dict)]
        for item in items:
            if not isinstance(item, list) or len(item) < 4 or not isinstance(item[3], dict):
                continue
            prompt_id = item[1]
            if item[3].get("darkroom_job") == request.job_id and prompt_id not in exclude:
                return await self.poll(
                    RemoteHandle(str(prompt_id), data={"client_id": item[3].get("client_id")})
                )
        return None

    async def aclose(self) -> None:
        await self.listener.aclose()
        await self.api.aclose()


def _config_dir(deps: ProviderDeps) -> Path | None:
    settings = deps.settings
    if settings is None:
        from service.config import get_settings

        settings = get_settings()
    return settings.config.expanduser().resolve().parent if settings.config else None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def queue_position(queue: Mapping[str, Any], prompt_id: str) -> int | None:
    """0 while it runs, 1.. while it waits (in ComfyUI's order), None if neither."""
    if any(_id_of(item) == prompt_id for item in _list(queue.get("queue_running"))):
        return 0
    pending = sorted(
        (item for item in _list(queue.get("queue_pending")) if isinstance(item, list) and item),
        key=lambda item: item[0] if isinstance(item[0], int | float) else 0,
    )
    for index, item in enumerate(pending):
        if _id_of(item) == prompt_id:
            return index + 1
    return None


def _id_of(item: Any) -> Any:
    return item[1] if isinstance(item, list) and len(item) > 1 else None


def output_images(outputs: Any) -> list[dict[str, str]]:
    """Every image the run saved, SaveImage's ("output") before previews ("temp")."""
    found: list[dict[str, str]] = []
    if not isinstance(outputs, Mapping):
        return found
    for node in outputs.values():
        for image in (node.get("images") or []) if isinstance(node, Mapping) else []:
            if isinstance(image, Mapping) and isinstance(image.get("filename"), str):
                found.append(
                    {key: str(image.get(key) or "") for key in ("filename", "subfolder", "type")}
                )
    return sorted(found, key=lambda image: image["type"] != "output")


def execution_failure(
    name: str, prompt_id: str, messages: list[Any]
) -> tuple[Literal["failed", "canceled"], ProviderError]:
    for message in messages:
        if not (isinstance(message, list) and len(message) == 2 and isinstance(message[1], dict)):
            continue
        event, data = message
        where = f"node {data.get('node_id')} ({data.get('node_type')})"
        if event == "execution_interrupted":
            return "canceled", ProviderPermanentError(
                "canceled", f"{name}: prompt {prompt_id} was interrupted at {where}"
            )
        if event == "execution_error":
            text = f"{data.get('exception_type')}: {data.get('exception_message')}".strip()
            detail = f"{name}: prompt {prompt_id} failed at {where}: {text[:800]}"
            if any(marker in text.lower() for marker in _TRANSIENT_MARKERS):
                return "failed", ProviderRetryableError("execution_error", detail)
            return "failed", ProviderPermanentError("execution_error", detail)
    return "failed", ProviderRetryableError(
        "execution_error", f"{name}: prompt {prompt_id} ended in error without a message"
    )


def timings(messages: list[Any]) -> dict[str, str]:
    """created_at/completed_at from the run's own timestamps (ms), so that poll timing
    learns how long a run takes rather than when a poll happened to notice."""
    stamps: dict[str, str] = {}
    keys = {"execution_start": "created_at", "execution_success": "completed_at"}
    for message in messages:
        if isinstance(message, list) and len(message) == 2 and message[0] in keys:
            stamp = message[1].get("timestamp") if isinstance(message[1], dict) else None
            if isinstance(stamp, int | float):
                when = datetime.fromtimestamp(stamp / 1000, UTC)
                stamps[keys[message[0]]] = when.isoformat()
    return stamps


def _factory(name: str, config: ComfyUIConfig, deps: ProviderDeps) -> ComfyUIProvider:
    return ComfyUIProvider(name, config, deps)


KIND = Kind("comfyui", ComfyUIConfig, _factory)
