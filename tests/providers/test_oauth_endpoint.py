"""The OAuth token endpoint's request and answer (service.providers.oauth_endpoint),
without a server: where the credentials go, and what an answer becomes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service.providers.base import ProviderPermanentError, ProviderRetryableError
from service.providers.oauth import OAuthClientCredentials
from service.providers.oauth_endpoint import parse_token_response, token_request

CLIENT_ID = "sim-client-id"
SECRET = "sim-client-secret"


def auth(token_url: str, **overrides: Any) -> OAuthClientCredentials:
    values: dict[str, Any] = {
        "type": "oauth_client_credentials",
        "token_url": token_url,
        "client_id_env": "ID",
        "client_secret_env": "SECRET",
    }
    return OAuthClientCredentials.model_validate(values | overrides)


def test_the_credentials_go_where_the_config_says() -> None:
    client = httpx.AsyncClient()
    url = "https://aip.baidubce.com/oauth/2.0/token"

    baidu = token_request(client, auth(url), CLIENT_ID, SECRET, 5.0)
    form = token_request(client, auth(url, client_auth="form"), CLIENT_ID, SECRET, 5.0)
    basic = token_request(client, auth(url, client_auth="basic"), CLIENT_ID, SECRET, 5.0)

    assert baidu.method == "POST"
    assert dict(baidu.url.params) == {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
    }
    assert not form.url.query
    assert form.headers["content-type"] == "application/x-www-form-urlencoded"
    assert form.content == (
        b"grant_type=client_credentials&client_id=sim-client-id&client_secret=sim-client-secret"
    )
    assert basic.headers["authorization"].startswith("Basic ")
    assert basic.content == b"grant_type=client_credentials"


def test_an_endpoint_that_echoes_the_secret_is_scrubbed() -> None:
    body = b'{"error": "invalid_client", "error_description": "bad secret sim-client-secret"}'
    with pytest.raises(ProviderPermanentError) as caught:
        parse_token_response(
            "acct: token endpoint", 401, {}, body, lambda t: t.replace(SECRET, "***"), 0.0, 300
        )
    assert SECRET not in caught.value.message
    assert "bad secret ***" in caught.value.message


def test_a_token_without_expires_in_is_assumed_to_last_an_hour() -> None:
    token = parse_token_response(
        "acct", 200, {}, b'{"access_token": "t", "token_type": "bearer"}', str, 100.0, 300
    )
    assert (token.value, token.expires_at, token.refresh_at) == ("t", 3700.0, 3400.0)


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (200, b'{"error": "invalid_client", "error_description": "unknown client id"}', "perm"),
        (200, b'{"error": "temporarily_unavailable"}', "retry"),
        (400, b'{"error": "unsupported_grant_type"}', "perm"),
        (408, b"", "retry"),
        (503, b"<html><title>503</title></html>", "retry"),
        (200, b"<html>a captive portal</html>", "retry"),
    ],
)
def test_answers_are_classified(status: int, body: bytes, kind: str) -> None:
    expected = ProviderPermanentError if kind == "perm" else ProviderRetryableError
    with pytest.raises(expected):
        parse_token_response("acct", status, {}, body, str, 0.0, 300)
