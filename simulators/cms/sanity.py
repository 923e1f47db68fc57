"""A Sanity Content Lake simulator: documents in memory, the doc/assets/mutate APIs a
write-back uses, and GROQ-powered webhooks signed as Sanity signs them.

API (`/v<date>/…`, every route checks `Authorization: Bearer <token>`):
- `GET /v…/data/doc/{dataset}/{id[,id…]}` → `{"documents": [...], "omitted": [...]}`;
- `POST /v…/assets/images/{dataset}?filename=…` (raw bytes) → `{"document": asset}`, the
  asset `image-<sha1>-<w>x<h>-<ext>`; the same bytes again return the same asset;
- `POST /v…/data/mutate/{dataset}` `{"mutations": [{"patch": {"id", "set"?, "unset"?,
  "ifRevisionID"?}}]}`: all or nothing, a new `_rev` per changed document; a missing
  document or a revision mismatch fails the transaction (409, `mutationError`).

Control: `POST /_sim/documents` seeds a document; `POST /_sim/publish` `{"url", "_id",
"draft"?, "changes"?, "operation"?, "secret"?, "timestamp_ms"?}` publishes (a draft
replaces the document; a new `_rev`), then POSTs the webhook to `url` and answers the
target's status and body with what was sent. `secret` and `timestamp_ms` override the
configured secret and now: forged and stale deliveries.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from PIL import Image, UnidentifiedImageError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulators.cms.base import CmsSim, cms_app
from simulators.cms.strapi import deliver
from simulators.responses import bearer_token, dump, json_body, json_response

DEFAULT_CONFIG: dict[str, Any] = {
    "token": "sanity-sim-token",
    "secret": "sanity-sim-webhook-secret",
    "project_id": "simproj",
    "dataset": "production",
    "documents": [],
}
EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif"}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def new_rev() -> str:
    return secrets.token_urlsafe(16)[:22]


def sign(secret: str, timestamp_ms: int, body: bytes) -> str:
    """As `@sanity/webhook` encodes it: unpadded base64url HMAC-SHA256 of "<t>.<body>".
    Written here apart from the service's verifier, so that a test checks one against
    the other rather than against itself."""
    mac = hmac.new(secret.encode(), b"%d." % timestamp_ms + body, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def signed_webhook(
    document: dict[str, Any],
    *,
    secret: str = DEFAULT_CONFIG["secret"],
    operation: str = "create",
    project_id: str = DEFAULT_CONFIG["project_id"],
    dataset: str = DEFAULT_CONFIG["dataset"],
    timestamp_ms: int | None = None,
    idempotency_key: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """A document webhook as Sanity sends it: the document (the default projection), its
    signature and Sanity's headers."""
    body = dump(document)
    stamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    headers = {
        "content-type": "application/json",
        "user-agent": "Sanity.io webhook delivery",
        "sanity-webhook-signature": f"t={stamp},v1={sign(secret, stamp, body)}",
        "sanity-operation": operation,
        "sanity-document-id": str(document.get("_id", "")),
        "sanity-transaction-id": str(document.get("_rev", "")),
        "sanity-transaction-time": now_iso(),
        "sanity-dataset": dataset,
        "sanity-project-id": project_id,
        "sanity-webhook-id": "simhook",
        "idempotency-key": idempotency_key or f"msg_{uuid.uuid4().hex}",
    }
    return headers, body


def data_error(
    status: int,
    description: str,
    items: list[dict[str, Any]] | None = None,
    kind: str = "mutationError",
) -> Response:
    error: dict[str, Any] = {"description": description, "type": kind}
    if items is not None:
        error["items"] = items
    return json_response({"error": error}, status)


def http_error(status: int, error: str, message: str) -> Response:
    return json_response({"statusCode": status, "error": error, "message": message}, status)


class SanitySim(CmsSim):
    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__("sanity", DEFAULT_CONFIG | dict(config or {}))
        self.documents: dict[str, dict[str, Any]] = {}
        self.uploads: list[dict[str, Any]] = []
        self.seed()

    def seed(self) -> None:
        self.documents.clear()
        self.uploads.clear()
        for document in self.config.get("documents") or []:
            self.add_document(dict(document))

    def reset(self) -> None:
        super().reset()
        self.seed()

    def add_document(self, document: dict[str, Any]) -> dict[str, Any]:
        stamp = now_iso()
        document.setdefault("_id", str(uuid.uuid4()))
        document.setdefault("_type", "post")
        document.setdefault("_createdAt", stamp)
        document["_updatedAt"] = stamp
        document["_rev"] = new_rev()
        self.documents[document["_id"]] = document
        return document

    def state(self) -> Any:
        assets = {k: v for k, v in self.documents.items() if k.startswith("image-")}
        documents = {k: v for k, v in self.documents.items() if k not in assets}
        return {"documents": documents, "assets": assets, "uploads": self.uploads}

    async def guard(self, request: Request) -> Response | None:
        """Faults first, then the token, then the dataset."""
        if (fault := await self.intercept(request)) is not None:
            return fault
        token = bearer_token(request)
        if token is None or not secrets.compare_digest(token, str(self.config["token"])):
            return http_error(401, "Unauthorized", "Session not found")
        if request.path_params["dataset"] != self.config["dataset"]:
            name = request.path_params["dataset"]
            return data_error(404, f'Dataset "{name}" not found', kind="httpNotFound")
        return None

    async def get_documents(self, request: Request) -> Response:
        if (refused := await self.guard(request)) is not None:
            return refused
        ids = [i for i in request.path_params["ids"].split(",") if i]
        found = [self.documents[i] for i in ids if i in self.documents]
        omitted = [{"id": i, "reason": "existence"} for i in ids if i not in self.documents]
        return json_response({"documents": found, "omitted": omitted})

    async def upload_image(self, request: Request) -> Response:
        if (refused := await self.guard(request)) is not None:
            return refused
        data = await request.body()
        try:
            with Image.open(io.BytesIO(data)) as picture:
                width, height = picture.size
                ext = EXTENSIONS.get(str(picture.format), "bin")
        except (UnidentifiedImageError, OSError):
            return http_error(400, "Bad Request", "Invalid image, could not read metadata")
        sha1 = hashlib.sha1(data, usedforsecurity=False).hexdigest()
        asset_id = f"image-{sha1}-{width}x{height}-{ext}"
        filename = request.query_params.get("filename")
        self.uploads.append({"filename": filename, "size": len(data), "sha1": sha1})
        if asset_id not in self.documents:  # Sanity keeps one asset per content hash
            project, dataset = self.config["project_id"], self.config["dataset"]
            path = f"images/{project}/{dataset}/{sha1}-{width}x{height}.{ext}"
            self.add_document(
                {
                    "_id": asset_id,
                    "_type": "sanity.imageAsset",
                    "assetId": sha1,
                    "sha1hash": sha1,
                    "extension": ext,
                    "mimeType": request.headers.get("content-type", f"image/{ext}"),
                    "originalFilename": filename,
                    "path": path,
                    "url": f"https://cdn.sanity.io/{path}",
                    "size": len(data),
                    "metadata": {"dimensions": {"width": width, "height": height}},
                }
            )
        return json_response({"document": self.documents[asset_id]})

    async def mutate(self, request: Request) -> Response:
        if (refused := await self.guard(request)) is not None:
            return refused
        body = await json_body(request)
        mutations = body.get("mutations") if isinstance(body, dict) else None
        if not isinstance(mutations, list) or not mutations:
            return data_error(400, "Missing mutations", kind="validationError")
        staged: dict[str, dict[str, Any]] = {}
        for index, mutation in enumerate(mutations):
            patch = mutation.get("patch") if isinstance(mutation, dict) else None
            if not isinstance(patch, dict) or not isinstance(patch.get("id"), str):
                return data_error(
                    400, "The simulator supports patch mutations by id", kind="validationError"
                )
            doc_id = patch["id"]
            current = staged.get(doc_id) or self.documents.get(doc_id)
            if current is None:
                why = f'Document "{doc_id}" not found'
                item = {
                    "error": {"description": why, "id": doc_id, "type": "documentNotFoundError"},
                    "index": index,
                }
                return data_error(409, f"The mutation(s) failed: {why}", [item])
            expected = patch.get("ifRevisionID")
            if expected is not None and expected != self.documents[doc_id]["_rev"]:
                return data_error(
                    409,
                    f'Document "{doc_id}" has unexpected revision ID '
                    f'("{self.documents[doc_id]["_rev"]}"), expected "{expected}"',
                    kind="conflict",
                )
            changed = dict(current)
            changed.update(patch.get("set") or {})
            for key in patch.get("unset") or []:
                changed.pop(key, None)
            staged[doc_id] = changed
        transaction = new_rev()
        for doc_id, document in staged.items():
            document["_rev"] = transaction
            document["_updatedAt"] = now_iso()
            self.documents[doc_id] = document
        results = [{"id": doc_id, "operation": "update"} for doc_id in staged]
        return json_response({"transactionId": transaction, "results": results})

    async def seed_document(self, request: Request) -> Response:
        spec = await json_body(request)
        if not isinstance(spec, dict):
            return json_response({"detail": "expected a document object"}, 422)
        return json_response(self.add_document(spec), 201)

    async def publish(self, request: Request) -> Response:
        spec = await json_body(request)
        if not isinstance(spec, dict) or not isinstance(spec.get("url"), str):
            return json_response({"detail": "expected {url, _id, ...}"}, 422)
        doc_id = str(spec.get("_id", "")).removeprefix("drafts.")
        target = f"drafts.{doc_id}" if spec.get("draft") else doc_id
        existed = target in self.documents
        # Publishing moves the draft onto the document; a draft save edits the draft.
        draft = self.documents.get(f"drafts.{doc_id}")
        if target == doc_id:
            self.documents.pop(f"drafts.{doc_id}", None)
        source = draft or self.documents.get(doc_id)
        if source is None:
            return json_response({"detail": "no such document or draft"}, 404)
        document = self.add_document({**source, **(spec.get("changes") or {}), "_id": target})
        headers, body = signed_webhook(
            document,
            secret=str(spec.get("secret", self.config["secret"])),
            operation=str(spec.get("operation", "update" if existed else "create")),
            project_id=str(self.config["project_id"]),
            dataset=str(self.config["dataset"]),
            timestamp_ms=spec.get("timestamp_ms"),
        )
        return await deliver(spec["url"], headers, body)

    def routes(self) -> list[Route]:
        prefix = "/{version:str}"
        return [
            Route(prefix + "/data/doc/{dataset}/{ids}", self.get_documents, methods=["GET"]),
            Route(prefix + "/assets/images/{dataset}", self.upload_image, methods=["POST"]),
            Route(prefix + "/data/mutate/{dataset}", self.mutate, methods=["POST"]),
            Route("/_sim/documents", self.seed_document, methods=["POST"]),
            Route("/_sim/publish", self.publish, methods=["POST"]),
        ]


def build_app(config: dict[str, Any] | None = None) -> Starlette:
    sim = SanitySim(config)
    app = cms_app(sim, list(sim.routes()))
    app.state.sim = sim
    return app
