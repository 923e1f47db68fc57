"""Keeps URLs that someone else chose from reaching the network Darkroom runs in.

A callback_url, a provider's output URL and a write-back target are chosen by callers or
by third parties; without this, `http://169.254.169.254/` or `http://postgres:5432/` would
make Darkroom probe its own infrastructure for them.

The check lives in the connection itself: `GuardedBackend` is an httpcore network backend
that resolves a host once, refuses it if ANY of its addresses is non-public (a host that
mixes public and private answers is a rebinding setup, not a CDN), and then connects to
one of exactly the addresses it checked. There is no second lookup to race, so DNS
rebinding cannot swap a checked public address for 127.0.0.1. TLS still verifies the
URL's hostname: httpcore's connection passes `server_hostname` from the request origin
(`httpcore/_async/connection.py`, `_connect`), not the address connected to.

Refused: loopback, private, link-local, CGNAT, benchmarking, IETF and documentation
ranges, multicast, reserved, and every IPv6 form that embeds an IPv4 address (v4-mapped,
v4-compatible, NAT64, 6to4, Teredo), whatever it embeds. Allowlisted CIDRs
(`DARKROOM_SSRF_ALLOW_CIDRS`) pass; loopback passes in development only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpcore
import httpx

from service.kit.tls import tls_context

if TYPE_CHECKING:
    from service.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> the addresses to check and connect to, as strings.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
SocketOptions = Iterable[Any]

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network
_LOW32 = 0xFFFFFFFF

_V4_RANGES: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/8"), "this-network"),
    (_V4("10.0.0.0/8"), "private"),
    (_V4("100.64.0.0/10"), "carrier-grade NAT"),
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("169.254.0.0/16"), "link-local"),
    (_V4("172.16.0.0/12"), "private"),
    (_V4("192.0.0.0/24"), "IETF protocol assignments"),
    (_V4("192.0.2.0/24"), "documentation"),
    (_V4("192.88.99.0/24"), "6to4 relay anycast"),
    (_V4("192.168.0.0/16"), "private"),
    (_V4("198.18.0.0/15"), "benchmarking"),
    (_V4("198.51.100.0/24"), "documentation"),
    (_V4("203.0.113.0/24"), "documentation"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("255.255.255.255/32"), "broadcast"),
    (_V4("240.0.0.0/4"), "reserved"),
)


def _low32(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    return ipaddress.IPv4Address(int(ip) & _LOW32)


def _sixtofour(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    return ip.sixtofour


def _teredo_client(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    return ip.teredo[1] if ip.teredo else None


def _none(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    return None


# Order matters: ::/128 and ::1 before ::/96, which contains both.
_V6_RANGES: tuple[
    tuple[
        ipaddress.IPv6Network, str, Callable[[ipaddress.IPv6Address], ipaddress.IPv4Address | None]
    ],
    ...,
] = (
    (_V6("::/128"), "unspecified", _none),
    (_V6("::1/128"), "loopback", _none),
    (_V6("::ffff:0:0/96"), "IPv4-mapped", _low32),
    (_V6("::/96"), "IPv4-compatible", _low32),
    (_V6("64:ff9b::/96"), "NAT64", _low32),
    (_V6("64:ff9b:1::/48"), "local-use NAT64", _none),
    (_V6("100::/64"), "discard-only", _none),
    (_V6("2001::/32"), "Teredo", _teredo_client),
    (_V6("2001:db8::/32"), "documentation", _none),
    (_V6("2002::/16"), "6to4", _sixtofour),
    (_V6("fc00::/7"), "unique local", _none),
    (_V6("fe80::/10"), "link-local", _none),
    (_V6("fec0::/10"), "site-local", _none),
    (_V6("ff00::/8"), "multicast", _none),
)

_LOOPBACK: tuple[Network, ...] = (_V4("127.0.0.0/8"), _V6("::1/128"))


def parse_address(address: str | IPAddress) -> IPAddress:
    """An address from a string, without any IPv6 zone (`%eth0`): zones do not move an
    address out of its range, and ipaddress compares them as part of the address."""
    if isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return address
    return ipaddress.ip_address(address.split("%", 1)[0])


def _range_reason(ip: IPAddress) -> str | None:
    if isinstance(ip, ipaddress.IPv4Address):
        for network, label in _V4_RANGES:
            if ip in network:
                return f"{label}, {network}"
        return None
    for network6, label, embedded in _V6_RANGES:
        if ip in network6:
            inner = embedded(ip)
            if inner is None:
                return f"{label}, {network6}"
            why = _range_reason(inner)
            tail = f" ({why})" if why else ""
            return f"{label} address ({network6}) that embeds {inner}{tail}"
    return None


def refusal(
    ip: str | IPAddress, *, allow: Sequence[Network] = (), allow_loopback: bool = False
) -> str | None:
    """Why connecting to `ip` is refused, or None when it may be reached. `allow` is the
    operator's allowlist and wins over every range (it matches the address itself, not an
    IPv4 address embedded in it); `allow_loopback` lets 127/8 and ::1 (development) through,
    but no IPv6 form that merely embeds a loopback address."""
    address = parse_address(ip)
    if _within(address, allow) or (allow_loopback and _within(address, _LOOPBACK)):
        return None
    reason = _range_reason(address)
    if reason is not None:
        return reason
    if address.is_multicast:
        return "multicast"
    if address.is_reserved or address.is_unspecified:
        return "reserved"
    if not address.is_global:
        return "not globally routable"
    return None


def _within(address: IPAddress, networks: Iterable[Network]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def parse_cidrs(values: Iterable[str]) -> tuple[Network, ...]:
    """Networks from CIDR strings; a bad one raises ValueError naming it (host bits set
    included: `10.0.0.1/8` is more likely a typo than a wish for all of 10/8)."""
    networks: list[Network] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=True))
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a CIDR ({exc})") from None
    return tuple(networks)


@dataclass(frozen=True)
class Policy:
    """What a guarded connection may reach: the ranges above, less the allowlist."""

    allow_loopback: bool = False
    allow: tuple[Network, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            allow_loopback=settings.ssrf_allows_loopback,
            allow=parse_cidrs(settings.ssrf_allow_cidrs),
        )

    def refusal(self, ip: str | IPAddress) -> str | None:
        return refusal(ip, allow=self.allow, allow_loopback=self.allow_loopback)


STRICT = Policy()


class AddressRefused(httpx.ConnectError):
    """No connection was made: the host is, or resolves to, a refused address. A
    ConnectError (so a TransportError) so that existing handlers treat it as a failed
    connection. The message names the host and address, never the URL's path or query."""

    def __init__(self, host: str, address: str, reason: str) -> None:
        self.host = host
        self.address = address
        self.reason = reason
        where = "is" if host == address else "resolves to"
        super().__init__(f"{host} {where} non-public address {address} ({reason})")


def _literal(host: str) -> IPAddress | None:
    try:
        return parse_address(host)
    except ValueError:
        return None


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the event loop's getaddrinfo gives, in its order, without repeats."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def checked_addresses(
    policy: Policy, host: str, port: int, resolver: Resolver = system_resolver
) -> list[str]:
    """Resolve `host` once (an IP literal is not resolved) and return its addresses if
    every one is allowed; raise AddressRefused for the first that is not. Raises OSError
    or UnicodeError when the name does not resolve."""
    addresses = [host] if _literal(host) is not None else list(await resolver(host, port))
    if not addresses:
        raise OSError(f"{host} resolves to no address")
    for address in addresses:
        reason = policy.refusal(address)
        if reason is not None:
            raise AddressRefused(host, address, reason)
    return addresses


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses the policy allows, and
    only to the very addresses it checked (tried in the resolver's order)."""

    def __init__(
        self,
        policy: Policy,
        *,
        resolver: Resolver = system_resolver,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.policy = policy
        self._resolver = resolver
        self._inner = inner if inner is not None else httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: SocketOptions | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await checked_addresses(self.policy, host, port, self._resolver)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # addresses is never empty
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: SocketOptions | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """A guarded client never talks to a local socket."""
        raise AddressRefused(path, path, "unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (request mapping, exception mapping, streaming), with its
    connection pool rebuilt on a GuardedBackend. httpx 0.28 takes no network backend, so
    the pool httpx made is replaced by the same httpcore pool with `network_backend` set.
    Never through a proxy: trust_env is off and no proxy is accepted."""

    def __init__(
        self,
        backend: GuardedBackend,
        *,
        verify: bool | str = True,
        limits: httpx.Limits | None = None,
    ) -> None:
        limits = limits if limits is not None else httpx.Limits(max_connections=100)
        tls = tls_context(verify, trust_env=False)
        super().__init__(verify=tls, trust_env=False, limits=limits)
        self.backend = backend
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=tls,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


_SET_HERE = ("transport", "mounts", "proxy", "app", "trust_env", "follow_redirects")


def guarded_client(
    settings: Settings,
    *,
    resolver: Resolver = system_resolver,
    inner: httpcore.AsyncNetworkBackend | None = None,
    verify: bool | str = True,
    limits: httpx.Limits | None = None,
    **kwargs: Any,
) -> httpx.AsyncClient:
    """An httpx client for URLs someone else chose: every connection is guarded by the
    settings' policy, no proxy from the environment can carry it around the guard, and
    redirects are not followed unless a request asks (each hop is guarded anyway).
    `resolver` and `inner` are for tests: a scripted DNS, a recording backend."""
    for key in _SET_HERE:
        if key in kwargs:
            raise TypeError(f"guarded_client sets {key} itself")
    backend = GuardedBackend(Policy.from_settings(settings), resolver=resolver, inner=inner)
    return httpx.AsyncClient(
        transport=GuardedTransport(backend, verify=verify, limits=limits),
        trust_env=False,
        follow_redirects=False,
        **kwargs,
    )


async def blocked_reason(
    url: str, policy: Policy = STRICT, resolver: Resolver = system_resolver
) -> str | None:
    """Why a URL's host is refused under `policy` (strict by default), or None. A check
    ahead of time, for a clear early error; the connection is guarded regardless. An
    unresolvable or malformed host is not refused here: the request fails on its own."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    if host is None:
        return "the URL has no host"
    try:
        await checked_addresses(policy, host, port, resolver)
    except AddressRefused as exc:
        return str(exc)
    except (OSError, UnicodeError):
        return None
    return None
