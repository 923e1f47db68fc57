"""Which server the CLI talks to, with which key, and what the user reads when it fails."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from service.api_client import NoTarget, Target, resolve_target
from service.dev_key import DEV_KEY_FILE, forget_api_url, read_dev_key, record_api_url
from tests.conftest import ROOT

DARKROOM = [sys.executable, "-m", "service.cli"]
UP_URL = "http://127.0.0.1:8123"


def save_dev_key(data_dir: Path, url: str | None = None) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    saved = {"key": "dk_dev", "webhook_secret": "whsec_dev"}
    (data_dir / DEV_KEY_FILE).write_text(json.dumps(saved))
    if url is not None:
        record_api_url(data_dir, url)


def test_the_dev_key_goes_to_the_url_up_recorded(tmp_path: Path) -> None:
    save_dev_key(tmp_path, UP_URL + "/")
    assert resolve_target(None, None, tmp_path) == Target(UP_URL, "dk_dev")
    assert resolve_target(UP_URL, None, tmp_path) == Target(UP_URL, "dk_dev")


def test_the_dev_key_is_never_sent_elsewhere(tmp_path: Path) -> None:
    save_dev_key(tmp_path, UP_URL)
    with pytest.raises(
        NoTarget, match=re.escape("no API key for http://127.0.0.1:8000")
    ) as refused:
        resolve_target("http://127.0.0.1:8000", None, tmp_path)
    assert f"only for {UP_URL}" in str(refused.value)
    forget_api_url(tmp_path, UP_URL)  # `up` stopped: whatever takes the port is not ours
    assert read_dev_key(tmp_path) is not None
    with pytest.raises(NoTarget, match="Darkroom is not running"):
        resolve_target(None, None, tmp_path)
    with pytest.raises(NoTarget, match=re.escape(f"no API key for {UP_URL}")):
        resolve_target(UP_URL, None, tmp_path)


def test_an_explicit_key_and_url_win(tmp_path: Path) -> None:
    save_dev_key(tmp_path, UP_URL)
    assert resolve_target(None, "dk_mine", tmp_path) == Target(UP_URL, "dk_mine")
    other = "https://darkroom.example.com"
    assert resolve_target(other, "dk_mine", tmp_path) == Target(other, "dk_mine")
    assert resolve_target(None, "dk_mine", tmp_path / "none") == Target(
        "http://127.0.0.1:8000", "dk_mine"
    )


def test_no_dev_key_and_no_key_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(NoTarget, match="pass --key or set DARKROOM_API_KEY"):
        resolve_target(None, None, tmp_path)


def test_the_dev_key_file_stays_private(tmp_path: Path) -> None:
    save_dev_key(tmp_path, UP_URL)
    assert (tmp_path / DEV_KEY_FILE).stat().st_mode & 0o777 == 0o600


@contextmanager
def answering(status: int, body: bytes, content_type: str) -> Iterator[str]:
    """A real HTTP server on loopback that answers every request the same way."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def submit(url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DARKROOM, "submit", "examples/batch.json", "--url", url, "--key", "dk_x"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "DARKROOM_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("darkroom: ")
    for text in expected:
        assert text in line


@pytest.mark.parametrize(
    ("status", "body", "content_type", "expected"),
    [
        (
            503,
            b'{"error": {"code": "unavailable", "message": "Postgres is down", "details": []}}',
            "application/json",
            ("HTTP 503 unavailable: Postgres is down",),
        ),
        (500, b"Internal Server Error", "text/plain", ("HTTP 500", "is this Darkroom?")),
        (
            404,
            b"<html><body>" + b"x" * 5000 + b"</body></html>",
            "text/html",
            ("HTTP 404 Not Found (is this Darkroom?)",),
        ),
    ],
)
def test_submit_answers_an_error_status_with_one_line(
    tmp_path: Path, status: int, body: bytes, content_type: str, expected: tuple[str, ...]
) -> None:
    with answering(status, body, content_type) as url:
        assert_one_line(submit(url, tmp_path), *expected)


def test_submit_answers_an_unreachable_server_with_one_line(tmp_path: Path) -> None:
    with answering(200, b"{}", "application/json") as url:
        pass  # stopped: its port is now closed
    assert_one_line(submit(url, tmp_path), f"cannot reach Darkroom at {url}", "refused")
