"""How CLI commands reach the API: which URL, which key, and one readable line when it fails.

The dev key goes only to the URL that `darkroom up` recorded for it; any other server gets a key
only when the user names one (--key / DARKROOM_API_KEY).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from service.dev_key import DEV_KEY_FILE, normalise_url, read_dev_key

DEFAULT_URL = "http://127.0.0.1:8000"
START_HINT = "start it with `make run` (or `darkroom up`)"


class ApiFailure(Exception):
    """A failure worth one line to the user, never a traceback."""

    exit_code = 1


class NoTarget(ApiFailure):
    """Nothing to talk to, or no key for it: the user has to say more."""

    exit_code = 2


@dataclass(frozen=True)
class Target:
    url: str
    key: str


def resolve_target(url: str | None, key: str | None, data_dir: Path) -> Target:
    """An explicit URL or key wins; otherwise the dev key and the URL `up` recorded with it."""
    dev = read_dev_key(data_dir)
    dev_url = dev.url if dev is not None else None
    chosen = normalise_url(url) if url else dev_url or DEFAULT_URL
    if key:
        return Target(chosen, key)
    if dev is not None and dev_url == chosen:
        return Target(chosen, dev.key)
    where = data_dir / DEV_KEY_FILE
    if dev is None:
        raise NoTarget(
            f"no API key: pass --key or set DARKROOM_API_KEY (no dev key in {where}; "
            f"{START_HINT} to make one)"
        )
    if url:
        issued_for = f"only for {dev_url}" if dev_url else "only for a running `darkroom up`"
        raise NoTarget(
            f"no API key for {chosen}: pass --key or set DARKROOM_API_KEY "
            f"(the dev key in {where} is {issued_for})"
        )
    raise NoTarget(
        f"Darkroom is not running ({where} records no URL): {START_HINT}, or pass --url and --key"
    )


class ApiClient:
    def __init__(self, target: Target, *, timeout_s: float = 60) -> None:
        self.url = target.url
        self._http = httpx.Client(
            base_url=target.url,
            headers={"authorization": f"Bearer {target.key}"},
            timeout=timeout_s,
        )

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._http.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | BinaryIO | None = None,
        content_type: str | None = None,
        form: Mapping[str, str] | None = None,
        files: Mapping[str, tuple[str, BinaryIO, str]] | None = None,
    ) -> dict[str, Any]:
        """The JSON body of a 2xx answer; ApiFailure with the reason for anything else.
        `content` sends a raw body (a batch file) with its `content_type`; `form` and
        `files` send a multipart form (a batch file beside its settings), streamed."""
        headers = {"content-type": content_type} if content_type else None
        with self._failures(method, path):
            response = self._http.request(
                method, path, json=json, content=content, headers=headers, data=form, files=files
            )
        if not response.is_success:
            raise ApiFailure(f"{method} {path}: {describe_error(response)}")
        try:
            body: dict[str, Any] = response.json()
        except ValueError as exc:
            raise ApiFailure(f"{method} {path}: the answer is not JSON") from exc
        return body

    def download(self, path: str, into: BinaryIO) -> None:
        """GET `path` into `into`, chunk by chunk, following a redirect to the storage (the
        key is sent only to Darkroom itself: httpx drops it on a redirect elsewhere)."""
        with (
            self._failures("GET", path),
            self._http.stream("GET", path, follow_redirects=True) as response,
        ):
            if not response.is_success:
                response.read()
                raise ApiFailure(f"GET {path}: {describe_error(response)}")
            for chunk in response.iter_bytes():
                into.write(chunk)

    @contextmanager
    def _failures(self, method: str, path: str) -> Iterator[None]:
        """Transport errors as one line for the user."""
        try:
            yield
        except httpx.ConnectError as exc:
            raise ApiFailure(
                f"cannot reach Darkroom at {self.url} ({_reason(exc)}): is it running? "
                f"{START_HINT[0].upper()}{START_HINT[1:]}"
            ) from exc
        except httpx.TimeoutException as exc:
            raise ApiFailure(f"{self.url} did not answer {method} {path} in time") from exc
        except httpx.HTTPError as exc:
            raise ApiFailure(f"{method} {self.url}{path} failed: {_reason(exc)}") from exc


def describe_error(response: httpx.Response) -> str:
    """HTTP 422 validation_error: jobs[3].prompt: ...; the API's own words, on one line."""
    head = f"HTTP {response.status_code}"
    try:
        error = response.json()["error"]
        text = f"{head} {error['code']}: {error['message']}"
        details = [
            f"{d['field']}: {d['message']}" if d.get("field") else str(d["message"])
            for d in error.get("details", [])[:5]
        ]
    except (ValueError, KeyError, TypeError):
        # Not Darkroom's error shape: a proxy, or another server on that port.
        plain = response.headers.get("content-type", "").startswith("text/plain")
        body = " ".join(response.text.split())[:200] if plain else ""
        text = f"{head} {response.reason_phrase}" + (f": {body}" if body else "")
        return f"{text} (is this Darkroom?)"
    # The message often is the first detail already: say each thing once.
    details = [detail for detail in details if detail not in text]
    return f"{text} ({'; '.join(details)})" if details else text


def _reason(exc: httpx.HTTPError) -> str:
    cause = exc.__cause__ or exc.__context__
    text = str(exc) or (str(cause) if cause else "") or type(exc).__name__
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    return " ".join(text.split())
