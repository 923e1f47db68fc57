"""The one error shape users see: {"error": {"code", "message", "details": [...]}}.

Validation errors name the field as a path users can read ("jobs[3].prompt"), so a
caller with 10,000 jobs knows which one to fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from service.logging import get_logger

log = get_logger(__name__)


class ErrorDetail(BaseModel):
    field: str | None = None
    message: str


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail] = []


class ErrorResponse(BaseModel):
    error: ErrorBody


class ApiError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        details: Sequence[ErrorDetail] = (),
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = list(details)
        self.headers = headers
        if code is not None:
            self.code = code


class Unauthorized(ApiError):
    status_code = 401
    code = "unauthorized"


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


class Conflict(ApiError):
    status_code = 409
    code = "conflict"


class InvalidInput(ApiError):
    status_code = 422
    code = "validation_error"


class ServiceUnavailable(ApiError):
    status_code = 503
    code = "unavailable"


class PayloadTooLarge(ApiError):
    status_code = 413
    code = "payload_too_large"


def field_path(loc: Sequence[str | int]) -> str:
    """("body", "jobs", 3, "prompt") -> "jobs[3].prompt"."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _not_declared_json(err: Any, content_type: str | None) -> ErrorDetail | None:
    """FastAPI parses a body as JSON only when Content-Type says so, and validates the raw
    bytes otherwise: tell the caller about the header, not that bytes are not an object."""
    if tuple(err.get("loc", ())) != ("body",) or not isinstance(err.get("input"), bytes):
        return None
    sent = f"not {content_type[:100]!r}" if content_type else "the header is missing"
    return ErrorDetail(
        field="Content-Type",
        message=f"send the body as JSON with Content-Type: application/json ({sent})",
    )


def _validation_details(
    errors: Sequence[Any], content_type: str | None = None
) -> tuple[str, list[ErrorDetail]]:
    code = "validation_error"
    details: list[ErrorDetail] = []
    for err in errors:
        header = _not_declared_json(err, content_type)
        if header is not None:
            code = "not_json"
            details.append(header)
            continue
        if err.get("type") == "json_invalid":
            code = "invalid_json"
            ctx = err.get("ctx") or {}
            details.append(
                ErrorDetail(field="body", message=f"malformed JSON: {ctx.get('error', 'invalid')}")
            )
            continue
        loc = [
            p for p in err.get("loc", ()) if not (isinstance(p, str) and p.startswith("function-"))
        ]
        # A loc of just ("body",) is the body as a whole: not an object, or missing.
        field = field_path(loc) or (str(loc[0]) if loc else None)
        details.append(ErrorDetail(field=field, message=str(err.get("msg", ""))))
    return code, details


def error_json(
    status_code: int, body: ErrorBody, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        status_code=status_code, content=ErrorResponse(error=body).model_dump(), headers=headers
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_json(
            exc.status_code,
            ErrorBody(code=exc.code, message=exc.message, details=exc.details),
            exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        code, details = _validation_details(exc.errors(), request.headers.get("content-type"))
        first = details[0] if details else None
        message = f"{first.field}: {first.message}" if first and first.field else "invalid request"
        if len(details) > 1:
            message += f" (and {len(details) - 1} more)"
        return error_json(422, ErrorBody(code=code, message=message, details=details[:100]))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, ApiError):
            # Raised while FastAPI read the body (e.g. the size limit), which wraps it in a 400.
            return await _api_error(request, exc.__cause__)
        if exc.status_code == 400 and isinstance(exc.__cause__, ValueError | RecursionError):
            # FastAPI answers 400 when a JSON body is not UTF-8 or nests too deep for its
            # parser; to a caller that is malformed JSON like any other.
            detail = ErrorDetail(field="body", message=f"malformed JSON: {exc.__cause__}")
            return error_json(
                422,
                ErrorBody(code="invalid_json", message=f"body: {detail.message}", details=[detail]),
            )
        if exc.status_code == 400 and isinstance(exc.__context__, MultiPartException):
            # Starlette answers a multipart form it cannot parse (an upload) with a bare 400.
            detail = ErrorDetail(field="body", message=f"malformed multipart form: {exc.detail}")
            return error_json(
                422,
                ErrorBody(code="invalid_form", message=f"body: {detail.message}", details=[detail]),
            )
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}
        return error_json(
            exc.status_code,
            ErrorBody(code=codes.get(exc.status_code, "http_error"), message=str(exc.detail)),
            getattr(exc, "headers", None),
        )

    def _unavailable(exc: Exception) -> JSONResponse:
        # Postgres restarting, Redis gone: nothing was accepted that could be lost,
        # and the caller should simply try again.
        log.warning("dependency_unavailable", error=repr(exc))
        return error_json(
            503,
            ErrorBody(code="unavailable", message="a backing service is unavailable; retry"),
            {"Retry-After": "5"},
        )

    async def _connection_error(_: Request, exc: Exception) -> JSONResponse:
        # Answered here rather than by _unexpected: Starlette re-raises whatever reaches
        # that one, and uvicorn then closes the connection, so the caller's next request
        # on it gets no answer at all.
        if not dependency_unavailable(exc):
            raise exc
        return _unavailable(exc)

    for kind in (OSError, DBAPIError, asyncpg.PostgresError, asyncpg.InterfaceError, RedisError):
        app.add_exception_handler(kind, _connection_error)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        if dependency_unavailable(exc):
            return _unavailable(exc)
        log.exception("unhandled_error", error=repr(exc))
        return error_json(500, ErrorBody(code="internal_error", message="internal error"))


def dependency_unavailable(exc: BaseException) -> bool:
    """Is this a lost or refused connection to Postgres or Redis, not a bug?"""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(
            current,
            OperationalError
            | InterfaceError
            | OSError
            | TimeoutError
            | RedisConnectionError
            | RedisTimeoutError
            | asyncpg.PostgresConnectionError
            | asyncpg.CannotConnectNowError
            | asyncpg.InterfaceError,
        ):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        current = current.__cause__ or current.__context__
    return False


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or invalid API key"},
    404: {"model": ErrorResponse, "description": "Not found (or another key's)"},
    422: {"model": ErrorResponse, "description": "Invalid input; details name each field"},
}
