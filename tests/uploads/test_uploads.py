"""POST /v1/uploads and GET /v1/uploads/{id}: real multipart requests through the app."""

from __future__ import annotations

import io
import random
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from PIL import Image, PngImagePlugin
from sqlalchemy import func, select

from service.app import create_app
from service.db import session_scope
from service.models import Upload
from service.state import State
from service.uploads.images import MAX_IMAGE_BYTES
from tests.conftest import Caller, make_caller

CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (96, 64), **params: object) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 40, 90)).save(buffer, fmt, **params)
    return buffer.getvalue()


def noise_png(side: int) -> bytes:
    """A PNG that does not compress: about 3 bytes a pixel."""
    pixels = random.Random(side).randbytes(side * side * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(buffer, "PNG", compress_level=0)
    return buffer.getvalue()


async def post_file(
    client: httpx.AsyncClient,
    caller: Caller,
    data: bytes,
    name: str = "ref.png",
    content_type: str = "image/png",
) -> httpx.Response:
    return await client.post(
        "/v1/uploads", files={"file": (name, data, content_type)}, headers=caller.headers
    )


async def upload_count(state: State) -> int:
    async with session_scope(state.sessionmaker) as session:
        return int((await session.execute(select(func.count()).select_from(Upload))).scalar_one())


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
async def test_an_image_is_stored_and_described(
    client: httpx.AsyncClient, caller: Caller, state: State, fmt: str
) -> None:
    data = image_bytes(fmt)
    # The declared type is not believed: the decoder decides.
    response = await post_file(client, caller, data, content_type="application/octet-stream")
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"id", "content_type", "width", "height", "bytes", "created_at"}
    assert body["content_type"] == CONTENT_TYPES[fmt]
    assert (body["width"], body["height"], body["bytes"]) == (96, 64, len(data))
    async with session_scope(state.sessionmaker) as session:
        upload = await session.get(Upload, uuid.UUID(body["id"]))
    assert upload is not None
    assert upload.api_key_id == caller.api_key_id
    assert upload.storage_key.startswith("uploads/")
    assert await state.storage.get(upload.storage_key) == data
    again = await client.get(f"/v1/uploads/{body['id']}", headers=caller.headers)
    assert again.status_code == 200
    assert again.json() == body


async def test_another_keys_upload_is_not_found(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    created = (await post_file(client, caller, image_bytes())).json()
    other = await make_caller(state, "other")
    response = await client.get(f"/v1/uploads/{created['id']}", headers=other.headers)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    missing = await client.get(f"/v1/uploads/{uuid.uuid4()}", headers=caller.headers)
    assert missing.status_code == 404


async def test_an_upload_needs_an_api_key(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/uploads", files={"file": ("a.png", image_bytes())})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"just some text, not pixels", "does not decode"),
        (image_bytes("GIF"), "GIF"),
        (image_bytes("BMP"), "BMP"),
        (image_bytes("PNG")[:-40], "decode"),  # truncated
        (image_bytes("JPEG", (256, 256))[:600], "decode"),  # truncated past the header
        (b"", "empty"),
    ],
    ids=["text", "gif", "bmp", "truncated-png", "truncated-jpeg", "empty"],
)
async def test_what_is_not_a_png_jpeg_or_webp_is_a_422_naming_the_field(
    client: httpx.AsyncClient, caller: Caller, state: State, data: bytes, says: str
) -> None:
    response = await post_file(client, caller, data)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "not_an_image"
    assert error["details"][0]["field"] == "file"
    assert says in error["message"]
    assert await upload_count(state) == 0
    assert not (state.settings.storage_dir / "uploads").exists()


async def test_a_form_without_the_file_field_is_a_422_naming_it(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    response = await client.post(
        "/v1/uploads", files={"image": ("a.png", image_bytes())}, headers=caller.headers
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "file"
    as_json = await client.post("/v1/uploads", json={"file": "x"}, headers=caller.headers)
    assert as_json.status_code == 422


async def test_a_file_over_20_mib_is_a_413_naming_the_limit(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    # Just over: the body fits the form's allowance, the file does not.
    response = await post_file(client, caller, b"\x89PNG" + b"\0" * (MAX_IMAGE_BYTES - 3))
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "payload_too_large"
    assert "20 MiB" in error["message"]
    # Far over, with a Content-Length that says so: refused before the body is read.
    response = await post_file(client, caller, b"\0" * (MAX_IMAGE_BYTES + 1024 * 1024))
    assert response.status_code == 413
    assert "20 MiB" in response.json()["error"]["message"]
    assert await upload_count(state) == 0


async def test_a_streamed_upload_is_cut_off_at_the_limit(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    """No Content-Length to check: the body is counted as it arrives, and reading stops
    one chunk past the limit instead of taking all the client sends."""
    boundary = "darkroomboundary"
    chunk = b"\0" * (1024 * 1024)
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        head = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=file; filename=a.png\r\n"
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        yield head
        for _ in range(60):  # 60 MiB offered
            sent += len(chunk)
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = caller.headers | {"content-type": f"multipart/form-data; boundary={boundary}"}
    response = await client.post("/v1/uploads", content=body(), headers=headers)
    assert response.status_code == 413, response.text
    assert "20 MiB" in response.json()["error"]["message"]
    assert sent <= MAX_IMAGE_BYTES + 2 * len(chunk)


async def test_brackets_in_the_image_bytes_are_not_taken_for_json(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    """The JSON body guard would read 200 '[' as nesting 200 deep; uploads skip it."""
    info = PngImagePlugin.PngInfo()
    info.add_text("note", "[" * 200 + "{" * 200)
    response = await post_file(client, caller, image_bytes("PNG", pnginfo=info))
    assert response.status_code == 201, response.text


async def test_uploads_take_20_mib_whatever_the_cap_on_other_bodies(
    state: State, caller: Caller
) -> None:
    settings = state.settings.model_copy(update={"max_request_bytes": 64 * 1024})
    app = create_app(settings)
    app.state.darkroom = state
    data = noise_png(200)  # ~120 KB: over the general cap
    assert len(data) > 64 * 1024
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await post_file(client, caller, data)
        assert response.status_code == 201, response.text
        batch = await client.post(
            "/v1/batches", content=b"[" + b" " * 70 * 1024 + b"]", headers=caller.headers
        )
        assert batch.status_code == 413


async def test_a_malformed_form_is_a_422(client: httpx.AsyncClient, caller: Caller) -> None:
    boundary = "b0undary"
    headers = caller.headers | {"content-type": f"multipart/form-data; boundary={boundary}"}
    body = f"--{boundary}\r\nFalse--{boundary}--\r\n".encode()
    response = await client.post("/v1/uploads", content=body, headers=headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_form"
    assert error["details"][0]["field"] == "body"
