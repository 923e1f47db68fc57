"""What a notify URL may be, and how it is shown: never whole (it is a credential), only
its scheme (`slack://…`), or a label made of its scheme and a short digest.

Checked at submit: at most MAX_NOTIFY, each one Apprise can parse, with a scheme the
operator allows (`DARKROOM_NOTIFY_SCHEMES`), and, for the services that POST to a host the
caller names (json://, form://, xml://, ...), a host the SSRF guard lets through. The
guard also holds at delivery, on every connection Apprise makes (`guard.py`)."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from service.kit.errors import ErrorDetail
from service.kit.ssrf import Policy, blocked_reason

if TYPE_CHECKING:
    from service.config import Settings

MAX_NOTIFY = 10
MAX_URL_CHARS = 2000
# Services that send to a host the URL itself names: checked against the SSRF guard at
# submit (the guard holds for every service at delivery anyway).
HOSTED_SCHEMES = frozenset(
    {
        "json", "jsons", "form", "forms", "xml", "xmls", "ntfy", "ntfys", "gotify",
        "gotifys", "mmost", "mmosts", "rocket", "rockets", "matrix", "matrixs", "apprise",
        "apprises",
    }
)  # fmt: skip
# How long the submit-time check may wait for DNS; the delivery is guarded regardless.
RESOLVE_TIMEOUT_S = 2.0
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]{0,31})://")


def scheme_of(url: str) -> str:
    match = _SCHEME.match(url)
    return match.group(1).lower() if match else ""


def redacted(url: str) -> str:
    """What the API shows of a notify URL: its scheme only."""
    scheme = scheme_of(url)
    return f"{scheme}://…" if scheme else "…"


def label(url: str) -> str:
    """The outbox endpoint of a notify URL (its fairness and health are per URL): the
    scheme and a digest, from which the URL cannot be read back."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return f"notify:{scheme_of(url) or 'unknown'}:{digest}"


def instantiate(url: str) -> Any:
    """Apprise's plugin for the URL, or None when Apprise cannot parse it. Quiet: Apprise
    logs the URL it loaded."""
    import apprise

    from service.notifications.guard import guarded

    with guarded(None):
        return apprise.Apprise.instantiate(url, suppress_exceptions=True)


def allowed_scheme(scheme: str, settings: Settings) -> bool:
    allowed = settings.notify_schemes
    return not allowed or scheme in allowed


async def check_notify(urls: Sequence[str] | None, settings: Settings) -> list[ErrorDetail]:
    """Every problem with a batch's notify URLs, each naming `notify[i]` (never the URL:
    an error message is shown and may be logged)."""
    problems: list[ErrorDetail] = []
    policy = Policy.from_settings(settings)
    for index, url in enumerate(urls or []):
        field = f"notify[{index}]"
        scheme = scheme_of(url)
        if not scheme:
            problems.append(ErrorDetail(field=field, message="not a URL (scheme://...)"))
            continue
        if not allowed_scheme(scheme, settings):
            message = (
                f"unknown or not allowed scheme {scheme}:// (allowed: DARKROOM_NOTIFY_SCHEMES)"
            )
            problems.append(ErrorDetail(field=field, message=message))
            continue
        plugin = await asyncio.to_thread(instantiate, url)
        if plugin is None:
            message = f"not a notification URL Apprise knows ({scheme}://): unknown scheme "
            message += "or missing parts"
            problems.append(ErrorDetail(field=field, message=message))
            continue
        reason = await _refused_host(plugin, scheme, policy)
        if reason is not None:
            problems.append(ErrorDetail(field=field, message=f"refused: {reason}"))
    return problems


async def _refused_host(plugin: Any, scheme: str, policy: Policy) -> str | None:
    host = getattr(plugin, "host", None)
    if scheme not in HOSTED_SCHEMES or not isinstance(host, str) or not host:
        return None
    port = getattr(plugin, "port", None)
    target = f"http://[{host}]" if ":" in host else f"http://{host}"
    target += f":{port}" if isinstance(port, int) else ""
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            return await blocked_reason(target, policy)
    except TimeoutError:
        return None  # slow DNS: the delivery's own guard decides


def scrub(text: str, url: str) -> str:
    """`text` (something Apprise said) without any part of the URL that may be secret:
    its user, password, path segments and query values."""
    from urllib.parse import parse_qsl, unquote, urlsplit

    secrets = {url}
    try:
        parts = urlsplit(url)
        secrets |= {parts.netloc, parts.username or "", parts.password or "", parts.path}
        secrets |= {unquote(s) for s in parts.path.split("/")}
        secrets |= {s for s in parts.path.split("/")}
        secrets |= {value for _, value in parse_qsl(parts.query)}
        secrets.add(parts.query)
        secrets.add(parts.fragment)
    except ValueError:
        pass
    for secret in sorted((s for s in secrets if len(s) >= 3), key=len, reverse=True):
        text = text.replace(secret, "…")
    return text
