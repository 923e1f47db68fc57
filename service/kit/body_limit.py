"""A cap on request body size, so one request cannot make the API hold gigabytes.

Checked against Content-Length up front and counted while the body streams in (a
chunked request has no length to check). A path may have a limit of its own (uploads
take one image of up to 20 MiB, whatever the cap on batches), with its own message."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.kit.errors import ErrorBody, PayloadTooLarge, error_json


@dataclass(frozen=True)
class PathLimit:
    """The body cap of one path, and what a caller over it is told."""

    max_bytes: int
    message: str


class BodySizeLimit:
    def __init__(
        self, app: ASGIApp, max_bytes: int, paths: Mapping[str, PathLimit] | None = None
    ) -> None:
        self.app = app
        self.default = PathLimit(
            max_bytes, f"request body is larger than {max_bytes} bytes: split the batch"
        )
        self.paths = dict(paths or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.paths.get(scope["path"], self.default)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit.max_bytes:
            error = PayloadTooLarge(limit.message)
            response = error_json(
                error.status_code, ErrorBody(code=error.code, message=error.message)
            )
            await response(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit.max_bytes:
                raise PayloadTooLarge(limit.message)  # a 413 by the ApiError handler
            return message

        await self.app(scope, counting_receive, send)
