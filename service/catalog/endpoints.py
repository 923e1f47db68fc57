"""/v1/models and /v1/routes: what each model can do and costs, how it is doing, and the
routes that pick a model. Any valid API key may read them; credentials are never shown."""

from __future__ import annotations

from fastapi import APIRouter

from service.catalog import service
from service.catalog.schemas import ModelList, ModelOut, RouteList
from service.deps import ApiKeyDep, StateDep
from service.kit.errors import ERROR_RESPONSES

router = APIRouter(prefix="/v1", tags=["models"], responses=ERROR_RESPONSES)


@router.get("/models")
async def list_models(state: StateDep, api_key: ApiKeyDep) -> ModelList:
    """Every model, by name: its provider account, capabilities, price, and live health
    (recent error rate and latency, and whether it is cooling down)."""
    return await service.list_models(state)


@router.get("/models/{name:path}")
async def get_model(name: str, state: StateDep, api_key: ApiKeyDep) -> ModelOut:
    """One model. Names may hold slashes (`local/procedural`)."""
    return await service.get_model(state, name)


@router.get("/routes")
async def list_routes(state: StateDep, api_key: ApiKeyDep) -> RouteList:
    """Every route: a name a job may give instead of a model, and how it picks one."""
    return service.list_routes(state)
