"""Early completion for ComfyUI: one websocket per account per process.

ComfyUI sends a prompt's progress only to the websocket whose `clientId` the prompt was
queued with, and ends every run (success or error) with `executing` {node: null,
prompt_id}, sent after the history entry is written: so that message means "GET
/history/{id} has the answer now". (`execution_success` comes before the history entry
and is not used.)

Each provider process queues its prompts with its own client id and keeps one socket
open with it; a prompt submitted by another process, or finished while the socket was
down, is found by the poll as before. The socket only ever makes a completion earlier.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import websockets
from websockets.asyncio.client import connect

from service.logging import get_logger

log = get_logger(__name__)

# Prompts seen finished, kept so that a watch registered just after the message arrives
# still wakes at once.
_FINISHED_KEPT = 4096
_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 15.0, 30.0)
# A server that refuses the upgrade (an auth proxy without websockets, an old server) is
# asked again this rarely.
_REFUSED_BACKOFF_S = 120.0
_MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # binary previews come over the same socket


def websocket_url(base_url: str, client_id: str) -> str:
    scheme, sep, rest = base_url.partition("://")
    ws_scheme = "wss" if scheme == "https" else "ws"
    return f"{ws_scheme}{sep}{rest.rstrip('/')}/ws?clientId={client_id}"


class CompletionListener:
    def __init__(self, name: str, url: str, headers: dict[str, str]) -> None:
        self.name = name
        self.url = url
        self.headers = headers
        self.connected = asyncio.Event()
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._watchers: dict[str, list[Callable[[], None]]] = {}
        self._task: asyncio.Task[None] | None = None

    def ensure_running(self) -> None:
        """Start (or restart, on another event loop) the listening task."""
        loop = asyncio.get_running_loop()
        task = self._task
        if task is not None and not task.done() and task.get_loop() is loop:
            return
        if task is not None and task.get_loop() is not loop:
            self.connected = asyncio.Event()
        self._task = loop.create_task(self._run(), name=f"comfyui-ws:{self.name}")

    def watch(self, prompt_id: str, wake: Callable[[], None]) -> None:
        """Call `wake` (on this loop) when the prompt finishes; at once if it already has."""
        self.ensure_running()
        if prompt_id in self._finished:
            asyncio.get_running_loop().call_soon(wake)
            return
        self._watchers.setdefault(prompt_id, []).append(wake)

    def unwatch(self, prompt_id: str) -> None:
        self._watchers.pop(prompt_id, None)

    async def wait(self, prompt_id: str, timeout_s: float) -> bool:
        """True when the prompt finished within `timeout_s` by the socket's word."""
        done = asyncio.Event()
        self.watch(prompt_id, done.set)
        try:
            async with asyncio.timeout(timeout_s):
                await done.wait()
        except TimeoutError:
            return False
        finally:
            self.unwatch(prompt_id)
        return True

    def seen_finished(self, prompt_id: str) -> bool:
        return prompt_id in self._finished

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                async with connect(
                    self.url,
                    additional_headers=self.headers,
                    proxy=None,
                    max_size=_MAX_MESSAGE_BYTES,
                    open_timeout=10,
                ) as socket:
                    attempt = 0
                    self.connected.set()
                    async for message in socket:
                        if isinstance(message, str):
                            self._handle(message)
                delay = _BACKOFF_S[0]
            except websockets.InvalidStatus as exc:
                log.info(
                    "comfyui_websocket_refused",
                    account=self.name,
                    status=exc.response.status_code,
                )
                delay = _REFUSED_BACKOFF_S
            except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                log.debug("comfyui_websocket_down", account=self.name, error=repr(exc))
                delay = _BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)]
                attempt += 1
            finally:
                self.connected.clear()
            await asyncio.sleep(delay)

    def _handle(self, text: str) -> None:
        try:
            message: Any = json.loads(text)
        except ValueError:
            return
        if not isinstance(message, dict) or message.get("type") != "executing":
            return
        data = message.get("data")
        if not isinstance(data, dict) or data.get("node") is not None:
            return
        prompt_id = data.get("prompt_id")
        if isinstance(prompt_id, str):
            self._finish(prompt_id)

    def _finish(self, prompt_id: str) -> None:
        self._finished[prompt_id] = None
        while len(self._finished) > _FINISHED_KEPT:
            self._finished.popitem(last=False)
        for wake in self._watchers.pop(prompt_id, []):
            try:
                wake()
            except Exception:  # a watcher's bug must not end the listener
                log.exception("comfyui_watch_failed", account=self.name)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is None or task.done():
            return
        if task.get_loop() is not asyncio.get_running_loop():
            task.get_loop().call_soon_threadsafe(task.cancel)
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
