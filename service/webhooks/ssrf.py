"""Keeps callers from using webhooks to reach the network Darkroom runs in.

A callback_url is the caller's choice; without this, `http://169.254.169.254/` or
`http://postgres:5432/` would make Darkroom probe its own infrastructure for them.
The check runs at delivery time, on every address the host resolves to.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def blocked_reason(url: str) -> str | None:
    """Why delivering to `url` is refused, or None when every address it resolves to is
    public. An unresolvable host is not blocked here: delivery fails and is retried."""
    parts = urlsplit(url)
    host = parts.hostname
    if host is None:
        return "callback_url has no host"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    for *_, sockaddr in infos:
        address = str(sockaddr[0])
        if not _is_public(address):
            return f"callback_url host {host} resolves to non-public address {address}"
    return None
