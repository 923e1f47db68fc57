"""A Strapi 5 simulator: entries in memory, the upload API a write-back uses, and webhooks
sent as Strapi sends them.

API (every route checks `Authorization: Bearer <token>`; errors in Strapi's shape
`{"data": null, "error": {"status", "name", "message", "details"}}`):
- `POST /api/upload`: multipart `files` (+ `ref`, `refId`, `field`, `fileInfo`) → 201 and
  a list of file objects; linking to an entry that does not exist answers 404 (real
  Strapi would store a dangling link; the simulator is strict so that "post gone" is
  testable without a fault);
- `GET /api/upload/files?filters[name][$eq]=…&populate=related`, `GET /api/upload/files/{id}`.

Control: `POST /_sim/entries` `{"uid"?, ...entry}` seeds an entry (ids, documentId and
timestamps filled in); `POST /_sim/publish` `{"url", "id"|"documentId", "uid"?, "event"?,
"draft"?, "changes"?, "header"?, "value"?}` changes the entry as the admin would and POSTs
the webhook to `url`, answering the target's status and body plus what was sent (to
replay it). `header`/`value` override the configured ones: a forged delivery.

One row per entry: Strapi 5 keeps a draft and a published row per document, the
simulator one row whose `publishedAt` says which it is.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import secrets
from datetime import UTC, datetime
from typing import Any

import httpx
from PIL import Image, UnidentifiedImageError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulators.cms.base import CmsSim, FormPart, cms_app, parse_multipart
from simulators.responses import bearer_token, dump, json_body, json_response

DEFAULT_UID = "api::article.article"
DEFAULT_CONFIG: dict[str, Any] = {
    "token": "strapi-sim-api-token",
    "webhook_header": "Authorization",
    "webhook_value": "Bearer strapi-sim-webhook-token",
    "public_url": "http://strapi.sim",
    "entries": [],
}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def signed_webhook(
    event: str,
    entry: dict[str, Any],
    *,
    uid: str = DEFAULT_UID,
    header: str = DEFAULT_CONFIG["webhook_header"],
    value: str = DEFAULT_CONFIG["webhook_value"],
    created_at: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """A webhook as Strapi sends it: the static header the admin configured, the
    `X-Strapi-Event` header and `{"event", "createdAt", "model", "uid", "entry"}`."""
    body = {
        "event": event,
        "createdAt": created_at or now_iso(),
        "model": uid.rsplit(".", 1)[-1],
        "uid": uid,
        "entry": entry,
    }
    headers = {"content-type": "application/json", "x-strapi-event": event, header: value}
    return headers, json.dumps(body).encode()


def strapi_error(status: int, name: str, message: str) -> Response:
    error = {"status": status, "name": name, "message": message, "details": {}}
    return json_response({"data": None, "error": error}, status)


class StrapiSim(CmsSim):
    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__("strapi", DEFAULT_CONFIG | dict(config or {}))
        self.ids = itertools.count(1)
        self.entries: dict[str, dict[int, dict[str, Any]]] = {}
        self.files: dict[int, dict[str, Any]] = {}
        self.seed()

    def seed(self) -> None:
        self.entries.clear()
        self.files.clear()
        for entry in self.config.get("entries") or []:
            self.add_entry(dict(entry))

    def reset(self) -> None:
        super().reset()
        self.seed()

    def add_entry(self, entry: dict[str, Any]) -> dict[str, Any]:
        uid = str(entry.pop("uid", DEFAULT_UID))
        stamp = now_iso()
        entry.setdefault("id", next(self.ids))
        entry.setdefault("documentId", secrets.token_hex(12))
        entry.setdefault("createdAt", stamp)
        entry.setdefault("updatedAt", stamp)
        entry.setdefault("publishedAt", stamp)
        self.entries.setdefault(uid, {})[int(entry["id"])] = entry
        return entry

    def find_entry(self, uid: str, key: Any) -> dict[str, Any] | None:
        table = self.entries.get(uid, {})
        return next(
            (e for e in table.values() if str(e["id"]) == str(key) or e["documentId"] == key),
            None,
        )

    def state(self) -> Any:
        return {"entries": self.entries, "files": list(self.files.values())}

    def authorised(self, request: Request) -> Response | None:
        token = bearer_token(request)
        if token is None or not secrets.compare_digest(token, str(self.config["token"])):
            return strapi_error(401, "UnauthorizedError", "Missing or invalid credentials")
        return None

    def file_view(self, file: dict[str, Any], populate: bool) -> dict[str, Any]:
        view = {k: v for k, v in file.items() if k not in {"related", "sha256"}}
        if populate:
            view["related"] = [
                {**self.entries[link["uid"]][link["id"]], "__type": link["uid"]}
                for link in file["related"]
                if link["id"] in self.entries.get(link["uid"], {})
            ]
        return view

    def store_file(self, part: FormPart, fields: dict[str, str]) -> dict[str, Any] | Response:
        data = part.data
        try:
            with Image.open(io.BytesIO(data)) as picture:
                width, height = picture.size
        except (UnidentifiedImageError, OSError):
            return strapi_error(400, "ApplicationError", "File is not a valid image")
        info = json.loads(fields.get("fileInfo") or "{}")
        name = str(info.get("name") or part.filename)
        stem, _, ext = name.rpartition(".")
        file_id = next(self.ids)
        hashed = f"{(stem or ext).replace(' ', '_')}_{secrets.token_hex(5)}"
        stamp = now_iso()
        return {
            "id": file_id,
            "documentId": secrets.token_hex(12),
            "name": name,
            "alternativeText": info.get("alternativeText"),
            "caption": info.get("caption"),
            "width": width,
            "height": height,
            "hash": hashed,
            "ext": f".{ext}" if stem else "",
            "mime": part.content_type,
            "size": round(len(data) / 1000, 2),
            "sizeInBytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "url": f"/uploads/{hashed}.{ext}",
            "provider": "local",
            "createdAt": stamp,
            "updatedAt": stamp,
            "publishedAt": stamp,
            "related": [],
        }

    async def upload(self, request: Request) -> Response:
        if (fault := await self.intercept(request)) is not None:
            return fault
        if (denied := self.authorised(request)) is not None:
            return denied
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            return strapi_error(400, "ValidationError", "Files are empty")
        parts = parse_multipart(content_type, await request.body())
        fields = {part.name: part.text() for part in parts if part.filename is None}
        files = [part for part in parts if part.name == "files" and part.filename is not None]
        if not files:
            return strapi_error(400, "ValidationError", "Files are empty")
        link: dict[str, Any] | None = None
        if all(fields.get(k) for k in ("ref", "refId", "field")):
            entry = self.find_entry(fields["ref"], fields["refId"])
            if entry is None:
                return strapi_error(404, "NotFoundError", "Entry not found")
            link = {"uid": fields["ref"], "id": int(entry["id"]), "field": fields["field"]}
        stored: list[dict[str, Any]] = []
        for part in files:
            file = self.store_file(part, fields)
            if isinstance(file, Response):
                return file
            stored.append(file)
        for file in stored:
            self.files[file["id"]] = file
            if link is not None:
                file["related"].append(link)
                self.entries[link["uid"]][link["id"]][link["field"]] = self.file_view(file, False)
        return json_response([self.file_view(f, False) for f in stored], 201)

    async def list_files(self, request: Request) -> Response:
        if (fault := await self.intercept(request)) is not None:
            return fault
        if (denied := self.authorised(request)) is not None:
            return denied
        name = request.query_params.get("filters[name][$eq]")
        populate = request.query_params.get("populate") in {"related", "*"}
        files = [f for f in self.files.values() if name is None or f["name"] == name]
        return json_response([self.file_view(f, populate) for f in files])

    async def get_file(self, request: Request) -> Response:
        if (fault := await self.intercept(request)) is not None:
            return fault
        if (denied := self.authorised(request)) is not None:
            return denied
        file = self.files.get(int(request.path_params["file_id"]))
        if file is None:
            return strapi_error(404, "NotFoundError", "file.notFound")
        populate = request.query_params.get("populate") in {"related", "*"}
        return json_response(self.file_view(file, populate))

    async def seed_entry(self, request: Request) -> Response:
        spec = await json_body(request)
        if not isinstance(spec, dict):
            return json_response({"detail": "expected an entry object"}, 422)
        return json_response(self.add_entry(spec), 201)

    async def publish(self, request: Request) -> Response:
        spec = await json_body(request)
        if not isinstance(spec, dict) or not isinstance(spec.get("url"), str):
            return json_response({"detail": "expected {url, id|documentId, ...}"}, 422)
        uid = str(spec.get("uid", DEFAULT_UID))
        entry = self.find_entry(uid, spec.get("documentId", spec.get("id")))
        if entry is None:
            return json_response({"detail": "no such entry"}, 404)
        event = str(spec.get("event", "entry.publish"))
        entry.update(spec.get("changes") or {})
        stamp = now_iso()
        entry["updatedAt"] = stamp
        entry["publishedAt"] = None if spec.get("draft") else entry.get("publishedAt") or stamp
        if event == "entry.publish":
            entry["publishedAt"] = stamp
        headers, body = signed_webhook(
            event,
            dict(entry),
            uid=uid,
            header=str(spec.get("header", self.config["webhook_header"])),
            value=str(spec.get("value", self.config["webhook_value"])),
        )
        return await deliver(spec["url"], headers, body)

    def routes(self) -> list[Route]:
        return [
            Route("/api/upload", self.upload, methods=["POST"]),
            Route("/api/upload/", self.upload, methods=["POST"]),
            Route("/api/upload/files", self.list_files, methods=["GET"]),
            Route("/api/upload/files/{file_id:int}", self.get_file, methods=["GET"]),
            Route("/_sim/entries", self.seed_entry, methods=["POST"]),
            Route("/_sim/publish", self.publish, methods=["POST"]),
        ]


async def deliver(url: str, headers: dict[str, str], body: bytes) -> Response:
    """POST a webhook and report the target's answer with what was sent."""
    sent = {"headers": headers, "body": body.decode()}
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as error:
        return json_response({"status": None, "error": str(error), "sent": sent}, 502)
    return Response(
        dump({"status": answer.status_code, "body": answer.text, "sent": sent}),
        media_type="application/json",
    )


def build_app(config: dict[str, Any] | None = None) -> Starlette:
    sim = StrapiSim(config)
    app = cms_app(sim, list(sim.routes()))
    app.state.sim = sim
    return app
