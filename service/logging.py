"""structlog set-up: readable console lines in development, JSON lines in production.

Request, job and batch ids are bound with structlog.contextvars so every line a
request or task writes carries them.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO, cast
from urllib.parse import urlsplit

import httpx
import structlog

from service.config import Settings


def configure_logging(settings: Settings) -> None:
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if settings.is_production
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    level = logging.getLevelName(settings.log_level.upper())
    structlog.configure(
        # URLs are redacted last, so that tracebacks and every field are covered.
        processors=[*shared, structlog.processors.format_exc_info, redact_urls_in_event, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level, stream=sys.stderr, format="%(name)s %(message)s")
    redact_httpx_urls()
    # arq logs every job start/finish at INFO; at 10,000 jobs per batch that is noise.
    logging.getLogger("arq.worker").setLevel(max(level, logging.WARNING))


class _CurrentStderr:
    """Whatever sys.stderr is when a line is written. Loggers are cached on first use
    with the file they were given: one replaced later (a test capturing output, a host
    process redirecting it) would otherwise never see their lines."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]


def bind_ids(**ids: object) -> None:
    """Bind ids (a job's, its batch's, its account) to every later line of the current
    asyncio task, as strings; None is left out. An arq task or a dispatched job runs in a
    task of its own, so they end with it: no unbinding needed there. Inside a request or a
    shared task, use structlog.contextvars.bound_contextvars instead."""
    structlog.contextvars.bind_contextvars(
        **{name: str(value) for name, value in ids.items() if value is not None}
    )


def redact_url(url: object) -> str:
    """scheme://host[:port]/path of a URL, for a log line. A caller's callback URL can carry
    its secret in the query (`?token=...`) or the user-info, and neither is logged."""
    try:
        parts = urlsplit(str(url))
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "<unparsable url>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"


_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def redact_urls_in_event(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: every URL in a logged string (an exception's text, a field
    another module filled in) loses its query and user-info, whoever wrote the call."""
    for key, value in event_dict.items():
        if isinstance(value, httpx.URL):
            event_dict[key] = redact_url(value)
        elif isinstance(value, str) and "://" in value:
            event_dict[key] = _URL.sub(lambda m: redact_url(m.group(0)), value)
    return event_dict


class _RedactUrls(logging.Filter):
    """httpx logs every request it sends ("HTTP Request: POST <url> ...") with the whole
    URL: rewrite each URL among the record's arguments before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_url(arg) if isinstance(arg, httpx.URL) else arg for arg in record.args
            )
        return True


_REDACT_URLS = _RedactUrls()


def redact_httpx_urls() -> None:
    """On the logger itself, so it holds for every client whichever module made it, and
    whatever handlers the host process (uvicorn, arq, pytest) installs."""
    logger = logging.getLogger("httpx")
    if _REDACT_URLS not in logger.filters:
        logger.addFilter(_REDACT_URLS)
