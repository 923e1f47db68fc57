"""OpenAI's error shape, `{"error": {"message", "type", "param", "code"}}`, under /openai/v1
only: the rest of the API keeps Darkroom's shape.

Two pieces keep it scoped. `OpenAIRoute` (the router's route class) turns what a handler
raises (its own `OpenAIError`, Darkroom's `ApiError`, a request validation error) into
OpenAI's shape before any app-wide handler sees it. `OpenAIErrorShape` (an ASGI
middleware that looks only at /openai/ paths) rewrites the Darkroom-shaped errors made
outside any route: an unknown path, the body size limit, the body guard, a backing service
that is down. OpenAI's clients retry 408, 409, 429 and 5xx on their own; an error that
comes after Darkroom accepted work says `x-should-retry: false`, so a retry never makes
the same images twice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.kit.errors import ApiError, field_path

PREFIX = "/openai/"
NO_RETRY = {"x-should-retry": "false"}


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorResponse(BaseModel):
    error: OpenAIErrorBody


OPENAI_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": OpenAIErrorResponse, "description": "Invalid request; `param` names it"},
    401: {"model": OpenAIErrorResponse, "description": "Missing or invalid API key"},
    404: {"model": OpenAIErrorResponse, "description": "Not found (or another key's)"},
    413: {"model": OpenAIErrorResponse, "description": "The body is too large"},
    503: {"model": OpenAIErrorResponse, "description": "A backing service is unavailable"},
}


def error_type(status: int) -> str:
    if status == 401:
        return "invalid_request_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


class OpenAIError(Exception):
    """An error as OpenAI would answer it."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.param = param
        self.code = code
        self.type = type or error_type(status_code)
        self.headers = headers
        self.extra = extra or {}

    def response(self) -> JSONResponse:
        body = OpenAIErrorBody(
            message=self.message, type=self.type, param=self.param, code=self.code
        ).model_dump()
        return JSONResponse(
            {"error": body | self.extra}, status_code=self.status_code, headers=self.headers
        )


def bad_request(message: str, param: str | None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


# Darkroom's job fields, as the OpenAI parameter a caller set them with.
_PARAM_OF_FIELD = {
    "width": "size",
    "height": "size",
    "format": "output_format",
    "reference_images": "image",
    "mask": "mask",
    "options": "model",
    "task": "model",
    "media": "model",
}


def openai_param(field: str | None) -> str | None:
    """ "jobs[0].width" -> "size"; "jobs[2].options.quality" -> "quality"; a body field
    ("n", "size") stays as it is."""
    if not field:
        return None
    parts = field.split(".")
    if parts[0].startswith("jobs[") or parts[0] == "defaults":
        parts = parts[1:]
    if not parts:
        return None
    if parts[0] == "options" and len(parts) > 1:
        return parts[1]
    head = parts[0].split("[")[0]
    return _PARAM_OF_FIELD.get(head, head)


_JOB_PREFIX = re.compile(r"\bjobs\[\d+\]\.")


def from_api_error(exc: ApiError) -> OpenAIError:
    status = 400 if exc.status_code == 422 else exc.status_code
    first = exc.details[0] if exc.details else None
    param = openai_param(first.field) if first else None
    code = exc.code
    if exc.status_code == 401:
        code = "invalid_api_key"
    # One request's jobs are all alike: "jobs[0].model: ..." is the request's "model: ...".
    message = _JOB_PREFIX.sub("", exc.message)
    return OpenAIError(status, message, param=param, code=code, headers=exc.headers)


def from_validation(errors: Sequence[Any]) -> OpenAIError:
    first = errors[0] if errors else {}
    loc = [p for p in first.get("loc", ()) if not str(p).startswith("function-")]
    field = field_path(loc) or None
    param = openai_param(field)
    if first.get("type") == "extra_forbidden":
        return bad_request(f"Unrecognized request argument supplied: {param}", param)
    if first.get("type") == "json_invalid":
        return bad_request("We could not parse the JSON body of your request.", None)
    message = str(first.get("msg", "invalid request"))
    if first.get("type") == "string_pattern_mismatch" and param == "size":
        message = "must be 'auto' or 'WIDTHxHEIGHT', each side 64 to 4096 (e.g. '1024x1024')"
    if first.get("type") == "missing":
        message = f"Missing required parameter: '{param}'."
    elif param:
        message = f"Invalid '{param}': {message}"
    return bad_request(message, param)


class OpenAIRoute(APIRoute):
    """Handlers of this route class answer every error in OpenAI's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def openai_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except OpenAIError as exc:
                return exc.response()
            except RequestValidationError as exc:
                return from_validation(exc.errors()).response()
            except ApiError as exc:
                return from_api_error(exc).response()
            except StarletteHTTPException as exc:
                if isinstance(exc.__cause__, ApiError):
                    return from_api_error(exc.__cause__).response()
                return OpenAIError(exc.status_code, str(exc.detail)).response()

        return openai_handler


def translate_body(status: int, body: bytes) -> bytes | None:
    """A Darkroom error body as OpenAI's, or None when it is not one."""
    try:
        parsed = json.loads(body)
        error = parsed["error"]
        if "details" not in error:  # already OpenAI's
            return None
        details = error.get("details") or []
        field = details[0].get("field") if details else None
        message = str(error.get("message", ""))
        code = error.get("code")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    shaped = OpenAIErrorBody(
        message=message, type=error_type(status), param=openai_param(field), code=code
    )
    return json.dumps({"error": shaped.model_dump()}).encode()


class OpenAIErrorShape:
    """Rewrites Darkroom-shaped error bodies on /openai/ paths (made by middleware or by
    Starlette's routing, where no route class runs) into OpenAI's shape."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def shaping_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                raw = dict(message.get("headers", []))
                is_json = raw.get(b"content-type", b"").startswith(b"application/json")
                if message["status"] >= 400 and is_json:
                    start = message  # held until the body is whole
                    return
                await send(message)
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            status = start["status"]
            new_status = 400 if status == 422 else status
            shaped = translate_body(status, body)
            if shaped is None:
                shaped, new_status = body, status
            headers = [
                (k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"
            ]
            headers.append((b"content-length", str(len(shaped)).encode()))
            await send({**start, "status": new_status, "headers": headers})
            await send({"type": "http.response.body", "body": shaped})

        await self.app(scope, receive, shaping_send)
