"""create_app(): the FastAPI application. Its lifespan builds the State every request uses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from service.accounts.endpoints import router as accounts_router
from service.auth.endpoints import router as keys_router
from service.batches.endpoints import BATCHES_PATH
from service.batches.endpoints import files_router as batch_files_router
from service.batches.endpoints import router as batches_router
from service.budgets.endpoints import router as budgets_router
from service.callbacks.endpoints import router as callbacks_router
from service.catalog.endpoints import router as catalog_router
from service.config import Settings, get_settings
from service.deps import StateDep
from service.docs import install_docs
from service.events.endpoints import router as events_router
from service.integrations.endpoints import hooks_router
from service.integrations.endpoints import router as integrations_router
from service.jobs.endpoints import router as jobs_router
from service.kit.body_limit import BodySizeLimit
from service.kit.errors import install_error_handlers
from service.kit.json_guard import JsonBodyGuard
from service.kit.request_context import App
from service.logging import configure_logging
from service.manifests.endpoints import router as manifests_router
from service.metrics import multiproc
from service.metrics.endpoints import router as metrics_router
from service.openai_compat.endpoints import EDITS_PATH as OPENAI_EDITS_PATH
from service.openai_compat.endpoints import router as openai_router
from service.openai_compat.errors import OpenAIErrorShape
from service.openai_compat.files import FILES_PATH as OPENAI_FILES_PATH
from service.openai_compat.files import router as openai_files_router
from service.schedules.endpoints import router as schedules_router
from service.state import State, build_state, close_state
from service.templates.endpoints import router as templates_router
from service.ui.endpoints import router as ui_router
from service.ui.live import router as ui_live_router
from service.uploads.endpoints import BODY_LIMIT as UPLOAD_BODY_LIMIT
from service.uploads.endpoints import UPLOADS_PATH
from service.uploads.endpoints import router as uploads_router
from service.usage.endpoints import router as usage_router
from service.webhooks.endpoints import router as webhooks_router

READY_TIMEOUT_S = 2.0


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings)
    multiproc.ensure_dir()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.darkroom = await build_state(settings)
        try:
            yield
        finally:
            await close_state(app.state.darkroom)
            multiproc.process_exit()

    app = App(  # RequestContext outermost: request ids on 500s too
        title="Darkroom",
        version="0.1.0",
        summary="Images in bulk for other software: batches in, signed webhooks out.",
        lifespan=lifespan,
        docs_url=None,  # install_docs serves /docs without a CDN
        redoc_url=None,
    )
    install_docs(app)
    install_error_handlers(app)
    # Inside the size limit, which counts what it reads; an upload's body is not JSON.
    app.add_middleware(
        JsonBodyGuard,
        raw_paths=frozenset({UPLOADS_PATH, OPENAI_EDITS_PATH, OPENAI_FILES_PATH}),
        file_paths=frozenset({BATCHES_PATH}),
    )
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_request_bytes,
        paths={UPLOADS_PATH: UPLOAD_BODY_LIMIT},
    )
    app.add_middleware(OpenAIErrorShape)  # /openai/ paths: OpenAI's error shape
    app.include_router(batch_files_router)  # before batches_router: same path, files only
    app.include_router(batches_router)
    app.include_router(events_router)  # live events (service/events)
    app.include_router(manifests_router)  # manifests: /v1/batches/{id}/manifest, /archive
    app.include_router(jobs_router)
    app.include_router(callbacks_router)
    app.include_router(accounts_router)
    app.include_router(webhooks_router)
    app.include_router(keys_router)
    app.include_router(budgets_router)
    app.include_router(integrations_router)
    app.include_router(hooks_router)
    app.include_router(uploads_router)
    app.include_router(usage_router)
    app.include_router(catalog_router)
    app.include_router(schedules_router)
    app.include_router(ui_live_router)  # before ui_router: /ui/batches/progress is not an id
    app.include_router(ui_router)
    app.include_router(templates_router)
    app.include_router(metrics_router)
    app.include_router(openai_router)
    app.include_router(openai_files_router)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        responses={
            200: {"model": Readiness, "description": "Postgres and Redis answer"},
            503: {"model": Readiness, "description": "Postgres or Redis does not answer"},
        },
    )
    async def readyz(state: StateDep) -> JSONResponse:
        """Postgres and Redis both answer."""
        checks = {
            "postgres": await _check(_ping_postgres(state)),
            "redis": await _check(state.redis.ping()),
        }
        ok = all(v == "ok" for v in checks.values())
        body = Readiness(status="ok" if ok else "unavailable", checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if ok else 503)

    return app


async def _ping_postgres(state: State) -> None:
    async with state.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def _check(probe: Awaitable[object]) -> str:
    """ "ok", or why not; a server that hangs counts as down after READY_TIMEOUT_S."""
    try:
        await asyncio.wait_for(probe, READY_TIMEOUT_S)
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}"
    return "ok"
