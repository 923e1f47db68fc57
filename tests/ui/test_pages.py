"""The /ui pages over HTTP, without a browser: sign-in, CSRF, sessions, ownership, and
every bad id or form answered with a page, never a 500 and never the key."""

from __future__ import annotations

import logging
import re
import uuid

import httpx
import pytest
from sqlalchemy import update

from service.app import create_app
from service.db import session_scope
from service.kit.base import utcnow
from service.models import ApiKey
from service.state import State
from service.ui.session import LOGIN_COOKIE, SESSION_COOKIE
from service.worker import run_until_idle
from tests.conftest import Caller, make_caller, submit


def token(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]*)"', html)
    assert found, html
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, key: str) -> httpx.Response:
    form = await client.get("/ui/login")
    assert form.status_code == 200
    return await client.post("/ui/login", data={"csrf": token(form.text), "api_key": key})


async def test_sign_in_trades_the_key_for_an_opaque_session(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    assert (await client.get("/ui/batches")).headers["location"] == "/ui/login"
    response = await sign_in(client, caller.key)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/batches"
    cookie = next(c for c in response.headers.get_list("set-cookie") if SESSION_COOKIE in c)
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Secure" not in cookie  # plain http; see the https test
    assert caller.key not in cookie
    assert caller.key[3:] not in cookie
    page = await client.get("/ui/batches")
    assert page.status_code == 200
    assert "No batches yet" in page.text
    assert caller.key not in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"

    app = create_app(state.settings)
    app.state.darkroom = state
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as https:
        response = await sign_in(https, caller.key)
    cookie = next(c for c in response.headers.get_list("set-cookie") if SESSION_COOKIE in c)
    assert "Secure" in cookie


async def test_a_wrong_key_shows_the_form_again(
    client: httpx.AsyncClient,
    caller: Caller,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    for key in ["dk_wrong", "not a key", "", "dk_" + "x" * 5000, "dk_\u00e9\u0000"]:
        response = await sign_in(client, key)
        assert response.status_code == 401, key
        assert "not valid, or it was revoked" in response.text
        assert 'name="api_key"' in response.text
        assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    assert (await client.get("/ui/batches")).status_code == 303
    signed_in = await sign_in(client, caller.key)
    assert signed_in.status_code == 303
    logged = caplog.text + "".join(capsys.readouterr())
    assert "dk_wrong" not in logged
    assert caller.key not in logged
    assert caller.key[:10] not in logged  # not even its prefix


async def test_a_revoked_key_ends_its_sessions(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    await sign_in(client, caller.key)
    assert (await client.get("/ui/batches")).status_code == 200
    async with session_scope(state.sessionmaker) as session:
        await session.execute(
            update(ApiKey).where(ApiKey.id == caller.api_key_id).values(revoked_at=utcnow())
        )
    assert (await client.get("/ui/batches")).headers["location"] == "/ui/login"


async def test_login_without_its_csrf_token_is_forbidden(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    await client.get("/ui/login")  # the pre-login cookie is set; the token is not sent
    response = await client.post("/ui/login", data={"api_key": caller.key})
    assert response.status_code == 403
    form = await client.get("/ui/login")
    forged = await client.post("/ui/login", data={"csrf": "0" * 64, "api_key": caller.key})
    assert forged.status_code == 403
    client.cookies.delete(LOGIN_COOKIE, path="/ui")  # a form from another browser
    other = await client.post("/ui/login", data={"csrf": token(form.text), "api_key": caller.key})
    assert other.status_code == 403
    assert SESSION_COOKIE not in client.cookies


async def test_forms_without_the_session_token_are_forbidden(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    batch_id = await submit(client, caller, {"jobs": [{"prompt": "a red bicycle"}]})
    await sign_in(client, caller.key)
    for path in [f"/ui/batches/{batch_id}/retry", f"/ui/batches/{batch_id}/cancel", "/ui/logout"]:
        assert (await client.post(path, data={})).status_code == 403, path
        assert (await client.post(path, data={"csrf": "x"})).status_code == 403, path
        raw = await client.post(path, content=b"\x00\xff", headers={"content-type": "text/plain"})
        assert raw.status_code == 403, path
    batch = (await client.get(f"/v1/batches/{batch_id}", headers=caller.headers)).json()
    assert batch["status"] == "queued"  # nothing was cancelled


async def test_bad_ids_and_links_are_pages_not_500s(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    await sign_in(client, caller.key)
    csrf = token((await client.get("/ui/batches")).text)
    missing = uuid.uuid4()
    for path, status in [
        ("/ui/batches/nope", 404),
        (f"/ui/batches/{missing}", 404),
        ("/ui/batches/%00", 404),
        ("/ui/batches?cursor=garbage", 400),
        ("/ui/batches?cursor=" + "x" * 5000, 400),
        (f"/ui/batches/{missing}?status=nonsense", 404),
        ("/ui/jobs/nope/output", 404),
        (f"/ui/jobs/{missing}/output", 404),
        (f"/ui/jobs/{missing}/tile", 404),
        ("/ui/batches/nope/events", 404),
        ("/ui/static/../endpoints.py", 404),
        ("/ui/static/missing.css", 404),
        ("/ui/batches/progress?id=nope&id=" + str(missing), 200),
    ]:
        response = await client.get(path)
        assert response.status_code == status, (path, response.text[:200])
    for path in [f"/ui/batches/{missing}/retry", "/ui/batches/nope/cancel"]:
        response = await client.post(path, data={"csrf": csrf})
        assert response.status_code == 404, path


async def test_another_keys_batch_is_not_shown(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    batch_id = await submit(client, caller, {"jobs": [{"prompt": "a red bicycle"}]})
    other = await make_caller(state, "other")
    await sign_in(client, other.key)
    assert (await client.get(f"/ui/batches/{batch_id}")).status_code == 404
    assert batch_id not in (await client.get("/ui/batches")).text
    progress = await client.get(f"/ui/batches/progress?id={batch_id}")
    assert progress.json() == {"batches": {}}
    csrf = token((await client.get("/ui/batches")).text)
    cancel = await client.post(f"/ui/batches/{batch_id}/cancel", data={"csrf": csrf})
    assert cancel.status_code == 404


async def test_signed_out_requests_get_no_data(client: httpx.AsyncClient, caller: Caller) -> None:
    batch_id = await submit(client, caller, {"jobs": [{"prompt": "a red bicycle"}]})
    assert (await client.get(f"/ui/batches/{batch_id}")).status_code == 303
    assert (await client.get(f"/ui/batches/{batch_id}/events")).status_code == 401
    assert (await client.get(f"/ui/batches/progress?id={batch_id}")).status_code == 401
    retry = await client.post(f"/ui/batches/{batch_id}/retry", data={"csrf": "x"})
    assert retry.headers["location"] == "/ui/login"


async def test_gallery_cancel_retry_and_logout(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    jobs: list[dict[str, object]] = [{"prompt": f"a red bicycle {n} <script>"} for n in range(3)]
    video = {"width": 64, "height": 64, "duration_s": 0.5, "fps": 4}
    jobs.append({"prompt": "waves", "model": "local/procedural-video", **video})
    body = {"name": "bikes <b>", "jobs": jobs}
    done_id = await submit(client, caller, body)
    await run_until_idle(state)
    queued_id = await submit(client, caller, {"jobs": [{"prompt": "a blue kite"}]})
    await sign_in(client, caller.key)

    listing = await client.get("/ui/batches")
    assert listing.text.index(queued_id) < listing.text.index(done_id)  # newest first
    assert "bikes &lt;b&gt;" in listing.text
    gallery = await client.get(f"/ui/batches/{done_id}")
    assert gallery.status_code == 200
    statuses = re.findall(r"class=\"tile status-(\w+)\"", gallery.text)
    assert statuses == ["succeeded"] * 4
    assert "&lt;script&gt;" in gallery.text
    assert "<script>" not in gallery.text.split("</head>")[1]
    job_ids = re.findall(r'data-job="([^"]+)"', gallery.text)
    odd = await client.get(f"/ui/batches/{done_id}?after=abc&status=%3Cscript%3E")
    assert odd.text.count('class="tile ') == 4  # odd links show the first page, unfiltered
    later = await client.get(f"/ui/batches/{done_id}?after=1&status=succeeded")
    assert re.findall(r'data-job="([^"]+)"', later.text) == job_ids[2:]
    image = await client.get(f"/ui/jobs/{job_ids[0]}/output")
    assert image.status_code == 200
    assert image.headers["content-type"].startswith("image/")
    player = re.search(r'<video class="shot" src="(/ui/jobs/[^"]+/output)"', gallery.text)
    assert player, "the video job plays inline"
    played = await client.get(player.group(1))
    assert played.headers["content-type"].startswith("video/")
    tile = await client.get(f"/ui/jobs/{job_ids[0]}/tile")
    assert f'id="job-{job_ids[0]}"' in tile.text

    csrf = token(gallery.text)
    retried = await client.post(f"/ui/batches/{done_id}/retry", data={"csrf": csrf})
    assert retried.headers["location"].endswith("notice=nothing_to_retry")
    page = await client.get(retried.headers["location"])
    assert "no failed jobs to retry" in page.text

    cancelled = await client.post(f"/ui/batches/{queued_id}/cancel", data={"csrf": csrf})
    assert cancelled.status_code == 303
    batch = (await client.get(f"/v1/batches/{queued_id}", headers=caller.headers)).json()
    assert batch["status"] == "cancelled"
    again = await client.post(f"/ui/batches/{done_id}/cancel", data={"csrf": csrf})
    assert again.headers["location"].endswith("notice=batch_finished")

    progress = await client.get(f"/ui/batches/progress?id={done_id}&id={queued_id}")
    shown = progress.json()["batches"]
    assert shown[done_id]["counts"]["succeeded"] == 4
    assert shown[queued_id]["status"] == "cancelled"

    out = await client.post("/ui/logout", data={"csrf": csrf})
    assert out.headers["location"] == "/ui/login?notice=signed_out"
    assert (await client.get("/ui/batches")).status_code == 303
    # The old session id, replayed, is gone server-side too.
    assert (await client.get(f"/ui/jobs/{job_ids[0]}/output")).status_code == 401
