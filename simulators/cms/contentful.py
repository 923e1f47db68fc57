"""A Contentful simulator: the Content Management API (entries, assets, processing,
publishing, version checks), the upload API, and webhooks signed as Contentful signs them.

One app serves both hosts' paths (`/spaces/{space}/uploads` is the upload API's), so a
test points `base_url` and `upload_url` at the same simulator.

Faithful where a write-back can go wrong:
- Bearer token (401 AccessTokenInvalid), unknown space, environment or entity (404
  NotFound), errors shaped `{"sys": {"type": "Error", "id"}, "message", "details"}`;
- X-Contentful-Version on every update and publish (409 VersionMismatch when stale, and
  when an asset is created twice); versions count as Contentful's do (an update +1, a
  publish sets publishedVersion to the version and +1);
- processing is asynchronous: the file's URL appears after `process_polls` reads;
- publishing an entry that links a missing or unpublished asset is refused (422).

Control routes (besides the shared ones in base.py):
- `POST /_sim/entries` {"id"?, "fields", "content_type"?, "published"?}: seed an entry;
- `POST /_sim/entries/{id}/edit` {"fields"?, "conflicts"?}: an editor saves now (version
  +1), or, with "conflicts": n, just before each of the writer's next n updates (so they
  meet a 409 however fast they are);
- `POST /_sim/publish` {"url", "entry_id", "topic"?}: publish the entry (or, for a save
  topic, save it) and POST the signed webhook to `url`; answers the receiver's status.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import secrets
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulators.cms.base import CmsSim, cms_app
from simulators.responses import bearer_token, dump, json_body, json_response

JSON_TYPE = "application/vnd.contentful.management.v1+json"
DEFAULTS: dict[str, Any] = {
    "space_id": "sim0space0id",
    "environment": "master",
    "token": "CFPAT-simulated-management-token",
    "signing_secret": "s" * 32 + "0123456789abcdefghijklmnopqrstuv",
    "webhook_name": "Darkroom covers",
    "process_polls": 1,
    "entries": [],
}
_ERRORS = {
    "AccessTokenInvalid": "The access token you sent could not be found or is invalid.",
    "NotFound": "The resource could not be found.",
    "VersionMismatch": "",
    "ValidationFailed": "Validation error",
    "BadRequest": "Bad request",
}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error(error_id: str, status: int, details: Any = None) -> Response:
    body = {
        "sys": {"type": "Error", "id": error_id},
        "message": _ERRORS.get(error_id, error_id),
        "details": details or {},
        "requestId": secrets.token_hex(8),
    }
    return json_response(body, status, media_type=JSON_TYPE)


def link(link_type: str, target: str) -> dict[str, Any]:
    return {"sys": {"type": "Link", "linkType": link_type, "id": target}}


def signed_webhook(
    secret: str,
    entity: dict[str, Any],
    topic: str = "ContentManagement.Entry.publish",
    path: str = "/",
    *,
    timestamp_ms: int | None = None,
    webhook_name: str = DEFAULTS["webhook_name"],
    method: str = "POST",
) -> tuple[dict[str, str], bytes]:
    """A webhook as Contentful sends it with request verification on: the entity as the
    body, the topic and name headers, and a signature over the canonical request (written
    here from Contentful's description, independently of Darkroom's verifier)."""
    body = dump(entity)
    stamp = str(int(time.time() * 1000) if timestamp_ms is None else timestamp_ms)
    headers = {
        "content-type": JSON_TYPE,
        "x-contentful-topic": topic,
        "x-contentful-webhook-name": webhook_name,
        "x-contentful-timestamp": stamp,
    }
    names = sorted([*headers, "x-contentful-signed-headers"])
    headers["x-contentful-signed-headers"] = ",".join(names)
    pathname, _, query = path.partition("?")
    if query:  # the query escaped as one component, then all as JavaScript's encodeURI
        pathname = pathname + "?" + quote(query, safe="-_.!~*'()")
    canonical_path = quote(pathname, safe=";,/?:@&=+$-_.!~*'()#")
    signed = ";".join(f"{name}:{headers[name].strip()}" for name in names)
    message = f"{method}\n{canonical_path}\n{signed}\n".encode() + body
    headers["x-contentful-signature"] = hmac.new(
        secret.encode(), message, hashlib.sha256
    ).hexdigest()
    return headers, body


class ContentfulSim(CmsSim):
    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__("contentful", {**DEFAULTS, **(config or {})})
        self.entries: dict[str, dict[str, Any]] = {}
        self.assets: dict[str, dict[str, Any]] = {}
        self.uploads: dict[str, dict[str, Any]] = {}
        self.pending: dict[str, int] = {}  # asset id: reads left before processing ends
        self.conflicts: dict[str, int] = {}  # entry id: editor saves still to interpose
        self.seed()

    def seed(self) -> None:
        for spec in self.config.get("entries") or []:
            self.add_entry(spec)

    def reset(self) -> None:
        super().reset()
        for store in (self.entries, self.assets, self.uploads, self.pending, self.conflicts):
            store.clear()
        self.seed()

    def state(self) -> Any:
        return {"entries": self.entries, "assets": self.assets, "uploads": self.uploads}

    def sys(self, kind: str, entity_id: str) -> dict[str, Any]:
        stamp = now_iso()
        return {
            "type": kind,
            "id": entity_id,
            "space": link("Space", self.config["space_id"]),
            "environment": link("Environment", self.config["environment"]),
            "createdAt": stamp,
            "updatedAt": stamp,
            "version": 1,
            "publishedCounter": 0,
        }

    def add_entry(self, spec: dict[str, Any]) -> dict[str, Any]:
        entry_id = str(spec.get("id") or secrets.token_hex(11))
        sys = self.sys("Entry", entry_id)
        sys["contentType"] = link("ContentType", str(spec.get("content_type", "blogPost")))
        entry = {"metadata": {"tags": []}, "sys": sys, "fields": dict(spec.get("fields") or {})}
        self.entries[entry_id] = entry
        if spec.get("published", True):
            publish(entry)
        return entry

    def edit(self, entry: dict[str, Any], fields: dict[str, Any] | None = None) -> None:
        """An editor's save: fields changed (or not), version +1."""
        entry["fields"].update(fields or {"editorNote": {"en-US": f"edited {now_iso()}"}})
        touch(entry)

    def asset_read(self, asset: dict[str, Any]) -> None:
        """A read of an asset being processed brings processing closer to its end."""
        asset_id = asset["sys"]["id"]
        if asset_id not in self.pending:
            return
        self.pending[asset_id] -= 1
        if self.pending[asset_id] <= 0:
            del self.pending[asset_id]
            self.finish_processing(asset)

    def finish_processing(self, asset: dict[str, Any]) -> None:
        for locale, file in asset["fields"].get("file", {}).items():
            upload = self.uploads.get(file.get("uploadFrom", {}).get("sys", {}).get("id", ""))
            if upload is None:
                continue
            asset_id = asset["sys"]["id"]
            space = self.config["space_id"]
            file.pop("uploadFrom", None)
            file["url"] = f"//images.ctfassets.net/{space}/{asset_id}/{upload['sha256'][:32]}/"
            file["url"] += quote(file.get("fileName", "file"))
            file["details"] = {"size": upload["size"]}
            asset["fields"]["file"][locale] = file
        touch(asset)


def touch(entity: dict[str, Any]) -> None:
    entity["sys"]["version"] += 1
    entity["sys"]["updatedAt"] = now_iso()


def publish(entity: dict[str, Any]) -> None:
    sys = entity["sys"]
    stamp = now_iso()
    sys["publishedVersion"] = sys["version"]
    sys["publishedCounter"] = sys.get("publishedCounter", 0) + 1
    sys["publishedAt"] = stamp
    sys.setdefault("firstPublishedAt", stamp)
    touch(entity)


def version_of(request: Request) -> int | None:
    raw = request.headers.get("x-contentful-version")
    return int(raw) if raw is not None and raw.strip().isdigit() else None


def entity_response(entity: dict[str, Any], status: int = 200) -> Response:
    return json_response(entity, status, media_type=JSON_TYPE)


def build_app(config: dict[str, Any] | None = None) -> Starlette:
    sim = ContentfulSim(config)
    return cms_app(sim, [*api_routes(sim), *sim_routes(sim)])


def api_routes(sim: ContentfulSim) -> list[Route]:
    async def guard(request: Request) -> Response | None:
        """Log, fault, authenticate, and check the space and environment of the path."""
        faulted = await sim.intercept(request)
        if faulted is not None:
            return faulted
        if bearer_token(request) != sim.config["token"]:
            return error("AccessTokenInvalid", 401)
        params = request.path_params
        if params.get("space") != sim.config["space_id"]:
            return error("NotFound", 404, {"type": "Space", "id": params.get("space")})
        if params.get("env", sim.config["environment"]) != sim.config["environment"]:
            return error("NotFound", 404, {"type": "Environment", "id": params.get("env")})
        return None

    async def create_upload(request: Request) -> Response:
        refused = await guard(request)
        if refused is not None:
            return refused
        data = await request.body()
        upload_id = secrets.token_hex(12)
        sys = sim.sys("Upload", upload_id)
        sim.uploads[upload_id] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        return entity_response({"sys": sys}, 201)

    async def asset(request: Request) -> Response:
        refused = await guard(request)
        if refused is not None:
            return refused
        asset_id = request.path_params["id"]
        found = sim.assets.get(asset_id)
        if request.method == "GET":
            if found is None:
                return error("NotFound", 404, {"type": "Asset", "id": asset_id})
            sim.asset_read(found)
            return entity_response(found)
        body = await json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("fields"), dict):
            return error("BadRequest", 400)
        if found is None and version_of(request) is None:
            created = {"metadata": {"tags": []}, "sys": sim.sys("Asset", asset_id)}
            created["fields"] = body["fields"]
            sim.assets[asset_id] = created
            return entity_response(created, 201)
        if found is None:
            return error("NotFound", 404, {"type": "Asset", "id": asset_id})
        if version_of(request) != found["sys"]["version"]:
            return error("VersionMismatch", 409)
        found["fields"] = body["fields"]
        touch(found)
        return entity_response(found)

    async def process(request: Request) -> Response:
        refused = await guard(request)
        if refused is not None:
            return refused
        found = sim.assets.get(request.path_params["id"])
        locale = request.path_params["locale"]
        if found is None:
            return error("NotFound", 404, {"type": "Asset", "id": request.path_params["id"]})
        if version_of(request) != found["sys"]["version"]:
            return error("VersionMismatch", 409)
        upload = found["fields"].get("file", {}).get(locale, {}).get("uploadFrom")
        if not upload or upload.get("sys", {}).get("id") not in sim.uploads:
            return error("ValidationFailed", 422, {"errors": [{"path": ["fields", "file"]}]})
        sim.pending[found["sys"]["id"]] = int(sim.config["process_polls"])
        if sim.pending[found["sys"]["id"]] <= 0:
            del sim.pending[found["sys"]["id"]]
            sim.finish_processing(found)
        return Response(status_code=204)

    async def entry(request: Request) -> Response:
        refused = await guard(request)
        if refused is not None:
            return refused
        entry_id = request.path_params["id"]
        found = sim.entries.get(entry_id)
        if found is None:
            return error("NotFound", 404, {"type": "Entry", "id": entry_id})
        if request.method == "GET":
            return entity_response(found)
        body = await json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("fields"), dict):
            return error("BadRequest", 400)
        if sim.conflicts.get(entry_id, 0) > 0:
            sim.conflicts[entry_id] -= 1
            sim.edit(found)
        if version_of(request) != found["sys"]["version"]:
            return error("VersionMismatch", 409)
        found["fields"] = body["fields"]
        if isinstance(body.get("metadata"), dict):
            found["metadata"] = body["metadata"]
        touch(found)
        return entity_response(found)

    async def published(request: Request) -> Response:
        refused = await guard(request)
        if refused is not None:
            return refused
        kind = request.path_params["kind"]
        store = {"entries": sim.entries, "assets": sim.assets}.get(kind, {})
        found = store.get(request.path_params["id"])
        if found is None:
            return error("NotFound", 404, {"id": request.path_params["id"]})
        if version_of(request) != found["sys"]["version"]:
            return error("VersionMismatch", 409)
        unresolved = unresolvable(sim, found)
        if unresolved:
            return error("ValidationFailed", 422, {"errors": unresolved})
        publish(found)
        return entity_response(found)

    env = "/spaces/{space}/environments/{env}"
    return [
        Route("/spaces/{space}/uploads", create_upload, methods=["POST"]),
        Route(f"{env}/uploads", create_upload, methods=["POST"]),
        Route(f"{env}/assets/{{id}}", asset, methods=["GET", "PUT"]),
        Route(f"{env}/assets/{{id}}/files/{{locale}}/process", process, methods=["PUT"]),
        Route(f"{env}/entries/{{id}}", entry, methods=["GET", "PUT"]),
        Route(f"{env}/{{kind:str}}/{{id}}/published", published, methods=["PUT"]),
    ]


def unresolvable(sim: ContentfulSim, entity: dict[str, Any]) -> list[dict[str, Any]]:
    """What Contentful refuses to publish: an asset without a processed file, or an entry
    linking an asset that is missing or not published."""
    if entity["sys"]["type"] == "Asset":
        files = entity["fields"].get("file", {})
        if not files or any("url" not in file for file in files.values()):
            return [{"name": "required", "path": ["fields", "file"]}]
        return []
    problems = []
    for name, values in entity["fields"].items():
        for value in values.values() if isinstance(values, dict) else []:
            target = value.get("sys", {}) if isinstance(value, dict) else {}
            if target.get("linkType") != "Asset":
                continue
            asset = sim.assets.get(target.get("id", ""))
            if asset is None or asset["sys"].get("publishedVersion") is None:
                problems.append({"name": "notResolvable", "path": ["fields", name]})
    return problems


def sim_routes(sim: ContentfulSim) -> list[Route]:
    async def seed_entry(request: Request) -> Response:
        spec = await json_body(request)
        if not isinstance(spec, dict):
            return json_response({"detail": "expected {id?, fields, published?}"}, 422)
        return entity_response(sim.add_entry(spec), 201)

    async def edit_entry(request: Request) -> Response:
        found = sim.entries.get(request.path_params["id"])
        spec = await json_body(request) or {}
        if found is None or not isinstance(spec, dict):
            return json_response({"detail": "no such entry, or not a JSON object"}, 404)
        if spec.get("conflicts"):
            sim.conflicts[found["sys"]["id"]] = int(spec["conflicts"])
        else:
            sim.edit(found, spec.get("fields"))
        return entity_response(found)

    async def publish_and_send(request: Request) -> Response:
        spec = await json_body(request)
        if not isinstance(spec, dict) or "url" not in spec or "entry_id" not in spec:
            return json_response({"detail": "expected {url, entry_id, topic?}"}, 422)
        found = sim.entries.get(str(spec["entry_id"]))
        if found is None:
            return json_response({"detail": "no such entry"}, 404)
        topic = str(spec.get("topic", "ContentManagement.Entry.publish"))
        if topic.endswith(".publish"):
            publish(found)
        else:
            sim.edit(found, spec.get("fields"))
        parts = urlsplit(str(spec["url"]))
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        headers, body = signed_webhook(
            sim.config["signing_secret"],
            copy.deepcopy(found),
            topic,
            path,
            webhook_name=sim.config["webhook_name"],
        )
        async with httpx.AsyncClient(timeout=30) as client:
            sent = await client.post(str(spec["url"]), headers=headers, content=body)
        return json_response({"status": sent.status_code, "body": sent.text, "entry": found})

    return [
        Route("/_sim/entries", seed_entry, methods=["POST"]),
        Route("/_sim/entries/{id}/edit", edit_entry, methods=["POST"]),
        Route("/_sim/publish", publish_and_send, methods=["POST"]),
    ]
