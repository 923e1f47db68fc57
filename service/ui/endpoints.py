"""/ui: sign-in, the batches list, a batch's gallery, retry and cancel.

Thin like the REST endpoints: the same repository queries and the same functions
(service.batches.actions: retry_and_enqueue, cancel_and_notify), so a button does
exactly what POST /v1/batches/{id}/retry or /cancel does. Every answer is a page, never
a 500 and never JSON: a bad id is the 404 page, a bad form the 400 or 403 page.
Kept out of the OpenAPI schema: these are pages for people, not an API.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from service.auth.service import find_key
from service.batches import repository, service
from service.batches.actions import cancel_and_notify, retry_and_enqueue
from service.deps import SessionDep, StateDep
from service.jobs import repository as jobs_repository
from service.jobs.serve import serve_output
from service.kit.errors import ApiError
from service.kit.pagination import decode_time_uuid_cursor, encode_time_cursor
from service.logging import get_logger
from service.models import ApiKey, Batch, JobStatus
from service.storage.base import StorageError
from service.ui import session as ui_session
from service.ui.render import STATIC_DIR, error_page, page, parse_uuid, tile

log = get_logger(__name__)
router = APIRouter(prefix="/ui", include_in_schema=False)

BATCHES_PER_PAGE = 25
TILES_PER_PAGE = 60
MAX_KEY_LENGTH = 200
STATIC_FILES = {"ui.css": "text/css", "ui.js": "text/javascript"}


def _see(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


async def _form(request: Request) -> FormData | None:
    try:
        return await request.form()
    except Exception:  # a body that is not a form: the 400 page, not a 500
        return None


def _index(value: str | None) -> int | None:
    """A job index from a "More" link; anything else shows the first page."""
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 7:
        return None
    return int(value)


def _field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


@router.get("")
async def home() -> Response:
    return _see("/ui/batches")


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in STATIC_FILES:
        return Response("not found", status_code=404, media_type="text/plain")
    return FileResponse(
        STATIC_DIR / name,
        media_type=STATIC_FILES[name],
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/login")
async def login_form(request: Request, state: StateDep, session: SessionDep) -> Response:
    if await ui_session.signed_in_key(state.redis, session, request) is not None:
        return _see("/ui/batches")
    return _login_page(request, state)


def _login_page(request: Request, state: StateDep, error: str | None = None) -> Response:
    token, fresh_cookie = ui_session.login_csrf(state.settings.secret_key, request)
    context = {"error": error, "login_csrf": token}
    response = page(request, "login.html", context, status_code=401 if error else 200)
    if fresh_cookie is not None:
        ui_session.set_login_cookie(request, response, fresh_cookie)
    return response


@router.post("/login")
async def login(request: Request, state: StateDep, session: SessionDep) -> Response:
    form = await _form(request)
    if form is None:
        return error_page(request, 400, "Bad request", "The sign-in form could not be read.")
    secret = state.settings.secret_key
    if not ui_session.check_login_csrf(secret, request, _field(form, "csrf")):
        return error_page(
            request,
            403,
            "Form expired",
            "The sign-in form expired or came from elsewhere. Open the sign-in page again.",
        )
    key = (_field(form, "api_key") or "").strip()
    api_key = None
    if key.startswith("dk_") and len(key) <= MAX_KEY_LENGTH and key.isascii():
        api_key = await find_key(session, key, pepper=secret)
    if api_key is None:
        log.info("ui_sign_in_refused")  # never the key, not even its prefix
        return _login_page(request, state, "That key is not valid, or it was revoked.")
    response = _see("/ui/batches")
    await ui_session.start_session(state.redis, request, response, api_key.id)
    log.info("ui_signed_in", api_key_id=str(api_key.id))
    return response


@router.post("/logout")
async def logout(request: Request, state: StateDep, session: SessionDep) -> Response:
    form = await _form(request)
    user = await ui_session.signed_in_key(state.redis, session, request)
    if user is None:
        return _see("/ui/login")
    if form is None or not ui_session.check_session_csrf(
        state.settings.secret_key, request, _field(form, "csrf")
    ):
        return _forbidden(request)
    response = _see("/ui/login?notice=signed_out")
    await ui_session.end_session(state.redis, request, response)
    return response


def _forbidden(request: Request) -> Response:
    return error_page(
        request,
        403,
        "Form expired",
        "The form was missing its token or came from elsewhere. Reload the page and try again.",
    )


async def _user(request: Request, state: StateDep, session: SessionDep) -> ApiKey | None:
    return await ui_session.signed_in_key(state.redis, session, request)


def _csrf(request: Request, state: StateDep) -> str:
    return ui_session.session_csrf(state.settings.secret_key, request)


@router.get("/batches")
async def batches_page(
    request: Request,
    state: StateDep,
    session: SessionDep,
    cursor: str | None = None,
) -> Response:
    user = await _user(request, state, session)
    if user is None:
        return _see("/ui/login")
    try:
        after = decode_time_uuid_cursor(cursor[:200] if cursor else None)
    except ApiError:
        return error_page(request, 400, "Bad link", "That page link is not valid.")
    batches = await repository.list_batches(
        session, user.id, limit=BATCHES_PER_PAGE + 1, after=after
    )
    shown, more = batches[:BATCHES_PER_PAGE], len(batches) > BATCHES_PER_PAGE
    totals = await repository.totals_for(session, [b.id for b in shown])
    rows = [service.batch_out(b, totals[b.id]) for b in shown]
    next_cursor = encode_time_cursor(shown[-1].created_at, shown[-1].id) if more else None
    context = {"batches": rows, "next_cursor": next_cursor}
    return page(request, "batches.html", context, user=user, csrf=_csrf(request, state))


@router.get("/batches/{batch_id}")
async def batch_page(
    request: Request,
    batch_id: str,
    state: StateDep,
    session: SessionDep,
    after: str | None = None,
    status: str | None = None,
) -> Response:
    user = await _user(request, state, session)
    if user is None:
        return _see("/ui/login")
    batch = await _own_batch(session, batch_id, user)
    if batch is None:
        return _no_batch(request)
    wanted = status if status in JobStatus.__members__ else None
    jobs = await repository.list_jobs(
        session,
        batch.id,
        status=JobStatus(wanted) if wanted else None,
        limit=TILES_PER_PAGE + 1,
        after_index=_index(after),
    )
    shown, more = jobs[:TILES_PER_PAGE], len(jobs) > TILES_PER_PAGE
    context = {
        "batch": await service.present_batch(session, batch),
        "tiles": [tile(job) for job in shown],
        "next_after": shown[-1].index if more else None,
        "status_filter": wanted,
        "statuses": [s.value for s in JobStatus],
    }
    return page(request, "batch.html", context, user=user, csrf=_csrf(request, state))


@router.post("/batches/{batch_id}/retry")
async def retry(request: Request, batch_id: str, state: StateDep, session: SessionDep) -> Response:
    return await _batch_action(request, batch_id, state, session, "retry")


@router.post("/batches/{batch_id}/cancel")
async def cancel(request: Request, batch_id: str, state: StateDep, session: SessionDep) -> Response:
    return await _batch_action(request, batch_id, state, session, "cancel")


async def _batch_action(
    request: Request, batch_id: str, state: StateDep, session: SessionDep, action: str
) -> Response:
    """What POST /v1/batches/{id}/retry or /cancel does, then back to the batch's page."""
    form = await _form(request)
    user = await _user(request, state, session)
    if user is None:
        return _see("/ui/login")
    if form is None or not ui_session.check_session_csrf(
        state.settings.secret_key, request, _field(form, "csrf")
    ):
        return _forbidden(request)
    batch = await _own_batch(session, batch_id, user, for_update=True)
    if batch is None:
        return _no_batch(request)
    back = f"/ui/batches/{batch.id}"
    try:
        if action == "retry":
            await retry_and_enqueue(state, session, batch)
            return _see(f"{back}?notice=retried")
        await cancel_and_notify(state, session, batch)
    except ApiError as exc:  # 409: nothing to retry, already finished...
        await session.rollback()
        return _see(f"{back}?notice={exc.code}")
    return _see(f"{back}?notice=cancelled")


@router.get("/jobs/{job_id}/output")
async def job_output(
    request: Request, job_id: str, state: StateDep, session: SessionDep
) -> Response:
    """The output for the signed-in browser: the file, or a redirect to its storage URL."""
    user = await _user(request, state, session)
    parsed = parse_uuid(job_id)
    job = None
    if user is not None and parsed is not None:
        job = await jobs_repository.get_job_for_key(session, parsed, user.id)
    if user is None:
        return Response("sign in first", status_code=401, media_type="text/plain")
    if job is None or job.status is not JobStatus.succeeded or job.output_key is None:
        return Response("no such output", status_code=404, media_type="text/plain")
    try:
        response = await serve_output(state.storage, job, job.output_key)
    except ApiError as exc:
        return Response(exc.message, status_code=exc.status_code, media_type="text/plain")
    except StorageError:
        return Response("storage unavailable", status_code=503, media_type="text/plain")
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response


@router.get("/jobs/{job_id}/tile")
async def job_tile(request: Request, job_id: str, state: StateDep, session: SessionDep) -> Response:
    """One gallery tile, for the page to swap in when the job's state changes."""
    user = await _user(request, state, session)
    if user is None:
        return Response("sign in first", status_code=401, media_type="text/plain")
    parsed = parse_uuid(job_id)
    job = await jobs_repository.get_job_for_key(session, parsed, user.id) if parsed else None
    if job is None:
        return Response("no such job", status_code=404, media_type="text/plain")
    return page(request, "tile.html", {"t": tile(job)}, user=user)


async def _own_batch(
    session: SessionDep, batch_id: str, user: ApiKey, *, for_update: bool = False
) -> Batch | None:
    parsed = parse_uuid(batch_id)
    if parsed is None:
        return None
    return await repository.get_batch(session, parsed, user.id, for_update=for_update)


def _no_batch(request: Request) -> Response:
    return error_page(request, 404, "No such batch", "There is no batch with that id for this key.")
