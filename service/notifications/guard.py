"""The SSRF guard for Apprise, whose plugins connect with `requests`, `smtplib` and
others rather than through httpx, so `kit/ssrf.guarded_client` cannot carry them.

Every one of those libraries resolves a host through `socket.getaddrinfo` and then
connects to exactly what it returned. `guarded` wraps that function, once per process:
within a `guarded(policy)` block (a context variable, which Apprise copies into the
threads it hands work to), every address a lookup returns is checked against the policy
and a refused one fails the lookup. The check is on the answer that is then connected
to, so DNS rebinding has no second lookup to win. Outside such a block (every other
caller in the process) the wrapper only passes the call through.

Within the same block, the loggers of Apprise and of the HTTP stack under it print
nothing (`_Quiet`): they quote URLs and paths, and a notify URL is a secret."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from service.kit.ssrf import Policy


@dataclass
class Guard:
    policy: Policy | None  # None: only quiet (nothing connects)
    # What was refused, for the attempt's error message (host and address, no path).
    refused: list[str] = field(default_factory=list)
    # Apprise's warnings and errors, kept from the log (they may quote the URL); the
    # sink scrubs them into the attempt's error.
    messages: list[str] = field(default_factory=list)


# Loggers that may print a notify URL or its path (Apprise's "POST URL: ...", urllib3's
# "POST /hooks/<token>"): silenced within a guarded block, whatever the log level.
QUIET_LOGGERS = (
    "apprise",
    "requests",
    "urllib3.connection",
    "urllib3.connectionpool",
    "urllib3.poolmanager",
    "urllib3.response",
    "urllib3.util.retry",
)


class _Quiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        guard = _GUARD.get()
        if guard is None:
            return True
        if record.levelno >= logging.WARNING and record.name.startswith("apprise"):
            guard.messages.append(record.getMessage())
        return False


_GUARD: ContextVar[Guard | None] = ContextVar("darkroom_notify_guard", default=None)
_install_lock = threading.Lock()
_original_getaddrinfo: Any = None


def _guarded_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
    infos = _original_getaddrinfo(host, port, *args, **kwargs)
    guard = _GUARD.get()
    if guard is None or guard.policy is None:
        return infos
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]  # an IPv6 scope id is not an address
        try:
            reason = guard.policy.refusal(address)
        except ValueError:
            reason = "not an IP address"
        if reason is not None:
            name = host.decode() if isinstance(host, bytes) else str(host)
            message = f"{name} resolves to non-public address {address} ({reason})"
            guard.refused.append(message)
            raise socket.gaierror(socket.EAI_FAIL, message)
    return infos


def install() -> None:
    """Wrap socket.getaddrinfo (once; idempotent)."""
    global _original_getaddrinfo
    with _install_lock:
        if _original_getaddrinfo is None:
            _original_getaddrinfo = socket.getaddrinfo
            socket.getaddrinfo = _guarded_getaddrinfo
            for name in QUIET_LOGGERS:
                logging.getLogger(name).addFilter(_Quiet())
            _no_environment_proxies()


def _no_environment_proxies() -> None:
    """requests (under Apprise) sends through HTTP(S)_PROXY from the environment: the
    lookup would then be the proxy's, and the proxy could reach what the guard refuses.
    Within a guarded block no environment proxy applies (as guarded_client ignores them)."""
    try:
        import requests.utils
    except ImportError:  # pragma: no cover - Apprise depends on requests
        return
    original = requests.utils.getproxies  # type: ignore[attr-defined]

    def getproxies() -> Any:
        return {} if _GUARD.get() is not None else original()

    requests.utils.getproxies = getproxies  # type: ignore[attr-defined]


@contextlib.contextmanager
def guarded(policy: Policy | None) -> Iterator[Guard]:
    """Within: lookups checked against `policy` (None: not checked), Apprise's loggers
    quiet."""
    install()
    guard = Guard(policy)
    token = _GUARD.set(guard)
    try:
        yield guard
    finally:
        _GUARD.reset(token)
