"""Secrets in URLs stay out of the log: a caller's callback URL may carry its token in
the query or the user-info, and every outbound request is logged."""

from __future__ import annotations

import logging

import httpx
import pytest

from service.config import Settings
from service.logging import configure_logging, get_logger, redact_url
from service.state import State
from service.worker import run_until_idle
from tests.conftest import Caller, submit
from tests.webhooks.receiver import closed_port_url, running_receiver

SECRET = "s3cret-t0ken"


async def test_outbound_requests_are_logged_without_query_or_user_info(
    client: httpx.AsyncClient,
    caller: Caller,
    state: State,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.INFO)
    async with running_receiver() as receiver:
        with_token = receiver.url.replace("http://", f"http://hook:{SECRET}@") + f"?token={SECRET}"
        unreachable = f"{closed_port_url()}?token={SECRET}"
        for url in (with_token, unreachable):
            body = {"callback_url": url, "jobs": [{"prompt": "a", "width": 64, "height": 64}]}
            await submit(client, caller, body)
        await run_until_idle(state)
    assert receiver.received, "the delivery never reached the receiver"
    assert receiver.received[0].headers["authorization"].startswith("Basic ")

    sent = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert any(f"POST {receiver.url} " in line for line in sent), sent
    logged = caplog.text + "".join(capfd.readouterr())
    assert SECRET not in logged
    assert "token=" not in logged


URLS = {
    "query and fragment": (
        "https://hooks.example/a/b?token=x&y=1#frag",
        "https://hooks.example/a/b",
    ),
    "user-info and port": ("http://user:pw@10.0.0.1:8080/cb", "http://10.0.0.1:8080/cb"),
    "IPv6": ("http://[::1]:9/x?t=1", "http://[::1]:9/x"),
    "no path": ("https://example.com?token=1", "https://example.com"),
    "a bad port": ("http://host:notaport/x?t=1", "<unparsable url>"),
}


@pytest.mark.parametrize(("url", "logged"), URLS.values(), ids=URLS.keys())
def test_redact_url_keeps_scheme_host_and_path(url: str, logged: str) -> None:
    assert redact_url(url) == logged
    assert redact_url(httpx.URL(url) if "notaport" not in url else url) == logged


def test_urls_in_any_logged_field_or_traceback_are_redacted(
    settings: Settings, capfd: pytest.CaptureFixture[str]
) -> None:
    """Whoever writes the log call: a URL in a field, in an exception's text or in its
    traceback is cut to scheme, host and path."""
    configure_logging(settings)
    log = get_logger("tests.logging")
    request = httpx.Request("POST", f"https://hooks.example/in?token={SECRET}")
    error = httpx.HTTPStatusError(
        f"Server error for url '{request.url}'", request=request, response=httpx.Response(500)
    )
    log.warning("delivery_failed", url=request.url, error=repr(error), note=f"see {request.url}")
    try:
        raise error
    except httpx.HTTPStatusError:
        log.exception("delivery_crashed")
    logged = "".join(capfd.readouterr())
    assert "delivery_failed" in logged
    assert "delivery_crashed" in logged
    assert "https://hooks.example/in" in logged
    assert SECRET not in logged
