"""A product catalogue API: the receiver of a generic write-back ("PATCH the product with
its image URL"), as a shop's or PIM's REST API would take it.

- `GET /products/{id}`, `PATCH /products/{id}` (a JSON object merged into the product),
  with `Authorization: Bearer <token>` (401 otherwise), 404 for an unknown product, 422
  for a body that is not a JSON object; every PATCH is kept in the product's history;
- faults (401/404/5xx/429, hangs) through CmsSim's `/_sim/faults`;
- `POST /_sim/products` {"id", ...}: add a product; `GET /_sim/state`: the products.
"""

from __future__ import annotations

import copy
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulators.cms.base import CmsSim, cms_app
from simulators.responses import bearer_token, json_body, json_response

DEFAULTS: dict[str, Any] = {
    "token": "catalogue-simulated-token",
    "products": [{"id": "sku-1", "name": "Walnut desk"}],
}


class CatalogueSim(CmsSim):
    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__("catalogue", {**DEFAULTS, **(config or {})})
        self.products: dict[str, dict[str, Any]] = {}
        self.history: dict[str, list[Any]] = {}
        self.seed()

    def seed(self) -> None:
        for product in self.config.get("products") or []:
            self.add(copy.deepcopy(product))

    def add(self, product: dict[str, Any]) -> dict[str, Any]:
        product_id = str(product["id"])
        self.products[product_id] = product
        self.history[product_id] = []
        return product

    def reset(self) -> None:
        super().reset()
        self.products.clear()
        self.history.clear()
        self.seed()

    def state(self) -> Any:
        return {"products": self.products, "history": self.history}


def build_app(config: dict[str, Any] | None = None) -> Starlette:
    sim = CatalogueSim(config)

    async def product(request: Request) -> Response:
        faulted = await sim.intercept(request)
        if faulted is not None:
            return faulted
        if bearer_token(request) != sim.config["token"]:
            return json_response({"error": "invalid or missing bearer token"}, 401)
        product_id = request.path_params["id"]
        found = sim.products.get(product_id)
        if found is None:
            return json_response({"error": f"product {product_id} not found"}, 404)
        if request.method == "GET":
            return json_response(found)
        change = await json_body(request)
        if not isinstance(change, dict):
            return json_response({"error": "the body must be a JSON object"}, 422)
        change.pop("id", None)
        found.update(change)
        sim.history[product_id].append(change)
        return json_response(found)

    async def add_product(request: Request) -> Response:
        spec = await json_body(request)
        if not isinstance(spec, dict) or "id" not in spec:
            return json_response({"detail": "expected {id, ...}"}, 422)
        return json_response(sim.add(spec), 201)

    return cms_app(
        sim,
        [
            Route("/products/{id}", product, methods=["GET", "PATCH"]),
            Route("/_sim/products", add_product, methods=["POST"]),
        ],
    )
