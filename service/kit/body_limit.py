"""A cap on request body size, so one request cannot make the API hold gigabytes.

Checked against Content-Length up front and counted while the body streams in (a
chunked request has no length to check)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.kit.errors import ErrorBody, PayloadTooLarge, error_json


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _error(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"request body is larger than {self.max_bytes} bytes: split the batch"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            error = self._error()
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
            if seen > self.max_bytes:
                raise self._error()  # turned into a 413 by the ApiError handler
            return message

        await self.app(scope, counting_receive, send)
