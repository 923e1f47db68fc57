"""A job's reference images and mask: checked at submit, resolved to checked bytes at run
time (uploads from storage; https URLs through the SSRF guard, from a local TLS server)."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from PIL import Image

from service.config import Settings
from service.db import session_scope
from service.jobs import inputs as resolution
from service.jobs.inputs import input_refs, resolve_inputs, validate_input_refs
from service.kit.ssrf import guarded_client
from service.models import ApiKey
from service.providers.base import ProviderPermanentError, ProviderRetryableError
from service.state import State
from service.uploads import service as uploads
from service.uploads.images import MAX_IMAGE_BYTES
from tests.conftest import Caller, make_caller
from tests.jobs.image_server import Answer, ImageServer, image_server


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (80, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 120, 30)).save(buffer, fmt)
    return buffer.getvalue()


async def make_upload(state: State, caller: Caller, data: bytes) -> uuid.UUID:
    async with session_scope(state.sessionmaker) as session:
        api_key = await session.get(ApiKey, caller.api_key_id)
        assert api_key is not None
        upload = await uploads.create_upload(session, state.storage, api_key=api_key, data=data)
        return upload.id


@pytest.fixture
def strict(settings: Settings) -> Settings:
    """Loopback refused as in production, except 127.0.0.1, opened by the allowlist
    (DARKROOM_SSRF_ALLOW_CIDRS) for the test server."""
    return Settings(
        **settings.model_dump(include={"database_url", "redis_url", "storage_dir"}),
        webhook_allow_private_networks=False,
        ssrf_allow_cidrs=["127.0.0.1/32"],
    )


@pytest.fixture
async def server() -> AsyncIterator[ImageServer]:
    async with image_server() as running:
        yield running


@pytest.fixture
async def fetcher(strict: Settings, server: ImageServer) -> AsyncIterator[httpx.AsyncClient]:
    async with guarded_client(strict, verify=server.client_context) as client:
        yield client


# --- run time: uploads ------------------------------------------------------------------


async def test_uploads_resolve_to_their_bytes_in_order(state: State, caller: Caller) -> None:
    png, jpeg, webp = image_bytes("PNG"), image_bytes("JPEG"), image_bytes("WEBP")
    ids = [await make_upload(state, caller, data) for data in (png, jpeg, webp)]
    inputs = await resolve_inputs(
        state,
        reference_images=[str(ids[0]), str(ids[1])],
        mask=str(ids[2]),
        api_key_id=caller.api_key_id,
    )
    assert [(i.role, i.content_type, i.data) for i in inputs] == [
        ("reference", "image/png", png),
        ("reference", "image/jpeg", jpeg),
        ("mask", "image/webp", webp),
    ]
    assert all(i.url is None for i in inputs)  # local storage: the provider gets the bytes


async def test_an_upload_of_another_key_or_none_fails_naming_the_input(
    state: State, caller: Caller
) -> None:
    theirs = await make_upload(state, await make_caller(state, "other"), image_bytes())
    mine = await make_upload(state, caller, image_bytes())
    with pytest.raises(ProviderPermanentError, match=r"reference_images\[1\]: no upload") as err:
        await resolve_inputs(
            state,
            reference_images=[str(mine), str(theirs)],
            mask=None,
            api_key_id=caller.api_key_id,
        )
    assert err.value.code == "input_not_found"
    with pytest.raises(ProviderPermanentError, match=r"^mask: no upload"):
        await resolve_inputs(state, reference_images=[], mask=str(uuid.uuid4()))


async def test_an_upload_missing_from_storage_is_not_found(state: State, caller: Caller) -> None:
    upload_id = await make_upload(state, caller, image_bytes())
    for path in (state.settings.storage_dir / "uploads").iterdir():
        path.unlink()
    with pytest.raises(ProviderPermanentError, match="missing from storage") as err:
        await resolve_inputs(state, reference_images=[str(upload_id)], mask=None)
    assert err.value.code == "input_not_found"


# --- run time: URLs -------------------------------------------------------------------


async def test_a_url_is_fetched_through_the_guard_and_checked(
    state: State, server: ImageServer, fetcher: httpx.AsyncClient
) -> None:
    png, jpeg = image_bytes("PNG"), image_bytes("JPEG")
    # What the server says the type is does not count: the decoder decides.
    server.routes["/ref.png"] = Answer(body=png, headers=(("Content-Type", "text/html"),))
    server.routes["/mask"] = Answer(body=jpeg, unsized=True)
    inputs = await resolve_inputs(
        state,
        reference_images=[server.url("/ref.png")],
        mask=server.url("/mask"),
        client=fetcher,
    )
    assert [(i.role, i.content_type, i.data) for i in inputs] == [
        ("reference", "image/png", png),
        ("mask", "image/jpeg", jpeg),
    ]
    assert inputs[0].url == server.url("/ref.png")
    assert server.requests == ["GET /ref.png", "GET /mask"]


@pytest.mark.parametrize("host", ["127.0.0.2", "10.0.0.1", "169.254.169.254", "[::1]"])
async def test_a_non_public_address_is_refused_without_a_request(
    state: State, server: ImageServer, fetcher: httpx.AsyncClient, host: str
) -> None:
    url = f"https://{host}:{server.port}/ref.png"
    with pytest.raises(ProviderPermanentError, match=r"reference_images\[0\]: refused") as err:
        await resolve_inputs(state, reference_images=[url], mask=None, client=fetcher)
    assert err.value.code == "input_refused"
    assert "non-public address" in err.value.message
    assert server.requests == []


async def test_a_redirect_to_a_non_public_address_is_not_followed(
    state: State, server: ImageServer, fetcher: httpx.AsyncClient
) -> None:
    target = server.url("/secret", host="127.0.0.2")
    server.routes["/hop"] = Answer(302, headers=(("Location", target),))
    with pytest.raises(ProviderPermanentError, match=r"127\.0\.0\.2") as err:
        await resolve_inputs(
            state, reference_images=[server.url("/hop")], mask=None, client=fetcher
        )
    assert err.value.code == "input_refused"
    assert server.requests == ["GET /hop"]


@pytest.mark.parametrize("unsized", [False, True], ids=["content-length", "streamed"])
async def test_an_image_over_20_mib_is_refused(
    state: State, server: ImageServer, fetcher: httpx.AsyncClient, unsized: bool
) -> None:
    server.routes["/big.png"] = Answer(body=b"\0" * (MAX_IMAGE_BYTES + 1), unsized=unsized)
    with pytest.raises(ProviderPermanentError, match="20 MiB") as err:
        await resolve_inputs(
            state, reference_images=[], mask=server.url("/big.png"), client=fetcher
        )
    assert err.value.code == "input_too_large"
    assert err.value.message.startswith("mask: 127.0.0.1 sent more than")


@pytest.mark.parametrize(
    "body", [b"<html>an error page</html>", image_bytes("GIF"), image_bytes("PNG")[:-30]]
)
async def test_what_is_not_an_image_is_refused(
    state: State, server: ImageServer, fetcher: httpx.AsyncClient, body: bytes
) -> None:
    server.routes["/ref"] = Answer(body=body)
    with pytest.raises(ProviderPermanentError, match="not an image") as err:
        await resolve_inputs(
            state, reference_images=[server.url("/ref")], mask=None, client=fetcher
        )
    assert err.value.code == "input_not_image"


@pytest.mark.parametrize(
    ("status", "retryable"), [(404, False), (403, False), (429, True), (500, True), (503, True)]
)
async def test_an_error_answer_is_classified(
    state: State,
    server: ImageServer,
    fetcher: httpx.AsyncClient,
    status: int,
    retryable: bool,
) -> None:
    server.routes["/ref"] = Answer(status, b"nope")
    with pytest.raises((ProviderPermanentError, ProviderRetryableError)) as err:
        await resolve_inputs(
            state, reference_images=[server.url("/ref")], mask=None, client=fetcher
        )
    assert err.value.retryable is retryable
    assert err.value.message == f"reference_images[0]: 127.0.0.1 answered {status}"


async def test_a_lost_connection_is_retryable(
    state: State, server: ImageServer, fetcher: httpx.AsyncClient
) -> None:
    # Content-Length promises more than the server sends before closing.
    server.routes["/cut"] = Answer(body=b"", headers=(("Content-Length", "5000"),), unsized=True)
    with pytest.raises(ProviderRetryableError, match=r"fetching from 127\.0\.0\.1 failed") as err:
        await resolve_inputs(
            state, reference_images=[server.url("/cut")], mask=None, client=fetcher
        )
    assert err.value.code == "input_fetch_failed"


async def test_a_server_that_stops_sending_is_retryable(
    state: State,
    server: ImageServer,
    fetcher: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(resolution, "FETCH_DEADLINE_S", 0.5)
    server.routes["/slow"] = Answer(body=image_bytes(), hang=True)
    with pytest.raises(ProviderRetryableError, match="timed out") as err:
        await resolve_inputs(
            state, reference_images=[server.url("/slow")], mask=None, client=fetcher
        )
    assert err.value.code == "input_fetch_failed"


async def test_a_plain_http_url_is_never_fetched(
    state: State, server: ImageServer, fetcher: httpx.AsyncClient
) -> None:
    url = f"http://127.0.0.1:{server.port}/ref.png"
    with pytest.raises(ProviderPermanentError, match="https") as err:
        await resolve_inputs(state, reference_images=[url], mask=None, client=fetcher)
    assert err.value.code == "input_invalid"
    assert server.requests == []


# --- submit time ----------------------------------------------------------------------


async def test_submit_checks_ownership_and_url_shape_without_fetching(
    state: State, caller: Caller, strict: Settings
) -> None:
    mine = await make_upload(state, caller, image_bytes())
    theirs = await make_upload(state, await make_caller(state, "other"), image_bytes())
    refs = input_refs(
        [
            str(mine),
            str(theirs),
            str(uuid.uuid4()),
            "https://images.example.com/a.png?sig=1",
            "http://images.example.com/a.png",
            "https:///no-host",
            "https://user:pw@images.example.com/a.png",
            "https://10.1.2.3/a.png",
            "not a reference",
            f"{{{mine}}}",  # braces: not the canonical form of an id
        ],
        mask=str(mine),
        prefix="jobs[4].",
    )
    async with session_scope(state.sessionmaker) as session:
        api_key = await session.get(ApiKey, caller.api_key_id)
        assert api_key is not None
        problems = await validate_input_refs(session, api_key, refs, settings=strict)
    by_field = {p.field: p.message for p in problems}
    assert by_field == {
        "jobs[4].reference_images[1]": f"no upload {theirs}",
        "jobs[4].reference_images[2]": by_field["jobs[4].reference_images[2]"],
        "jobs[4].reference_images[4]": "must be an upload id or an https URL",
        "jobs[4].reference_images[5]": "the URL has no host",
        "jobs[4].reference_images[6]": "the URL must not carry credentials",
        "jobs[4].reference_images[7]": by_field["jobs[4].reference_images[7]"],
        "jobs[4].reference_images[8]": by_field["jobs[4].reference_images[8]"],
        "jobs[4].reference_images[9]": by_field["jobs[4].reference_images[9]"],
    }
    assert by_field["jobs[4].reference_images[2]"].startswith("no upload ")
    assert "non-public address (private" in by_field["jobs[4].reference_images[7]"]
    assert "upload id or an https URL" in by_field["jobs[4].reference_images[8]"]
    assert "upload id or an https URL" in by_field["jobs[4].reference_images[9]"]
