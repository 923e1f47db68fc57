"""The SSRF guard: which addresses are refused, and that a connection goes to exactly the
address that was checked (DNS rebinding), over real sockets where it matters."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx
import pytest
from pydantic import ValidationError

from service.config import Settings
from service.kit.ssrf import (
    AddressRefused,
    GuardedBackend,
    Policy,
    blocked_reason,
    guarded_client,
    parse_cidrs,
    refusal,
)
from service.providers.base import ProviderRetryableError
from service.providers.catalogue import account_config
from service.providers.http import ProviderHTTP

PRODUCTION: dict[str, Any] = {
    "env": "production",
    "secret_key": "k" * 40,
    "database_url": "postgresql+asyncpg://darkroom:S3cure-and-long@db:5432/darkroom",
}
PUBLIC = "93.184.216.34"
OK_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def production(**overrides: Any) -> Settings:
    return Settings(**(PRODUCTION | overrides))


# --- ranges ---------------------------------------------------------------------------

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("10.1.2.3", "private, 10.0.0.0/8"),
    ("172.16.0.1", "private, 172.16.0.0/12"),
    ("192.168.1.1", "private, 192.168.0.0/16"),
    ("169.254.169.254", "link-local"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("0.0.0.0", "this-network"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.1", "benchmarking"),
    ("192.0.0.8", "IETF protocol assignments"),
    ("192.0.0.9", "IETF protocol assignments"),
    ("192.0.2.1", "documentation"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("fc00::1", "unique local"),
    ("fd12:3456::1", "unique local"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("100::1", "discard-only"),
    ("::1:2:3:4", "reserved"),
    ("64:ff9b:1::a00:1", "local-use NAT64"),
]

EMBEDDED = [
    ("::127.0.0.1", "IPv4-compatible", "embeds 127.0.0.1 (loopback"),
    ("::ffff:127.0.0.1", "IPv4-mapped", "embeds 127.0.0.1 (loopback"),
    ("::ffff:10.0.0.1", "IPv4-mapped", "embeds 10.0.0.1 (private"),
    ("64:ff9b::a9fe:a9fe", "NAT64", "embeds 169.254.169.254 (link-local"),
    ("2002:7f00:1::", "6to4", "embeds 127.0.0.1 (loopback"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo", "embeds 192.0.2.45 (documentation"),
    # The forms are refused as ranges, whatever they embed.
    ("::ffff:8.8.8.8", "IPv4-mapped", "embeds 8.8.8.8"),
    ("64:ff9b::808:808", "NAT64", "embeds 8.8.8.8"),
]


@pytest.mark.parametrize(("address", "why"), REFUSED)
def test_non_public_ranges_are_refused(address: str, why: str) -> None:
    reason = refusal(address)
    assert reason is not None
    assert why in reason


@pytest.mark.parametrize(("address", "form", "embeds"), EMBEDDED)
def test_embedded_ipv4_forms_are_refused_and_name_the_embedded_address(
    address: str, form: str, embeds: str
) -> None:
    reason = refusal(address)
    assert reason is not None
    assert reason.startswith(form)
    assert embeds in reason


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700::1111", PUBLIC])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(address) is None
    assert Policy.from_settings(production()).refusal(address) is None


def test_the_allowlist_opens_only_the_networks_it_names() -> None:
    allow = parse_cidrs(["10.20.0.0/16", "fd00:1::/64"])
    assert refusal("10.20.3.4", allow=allow) is None
    assert refusal("fd00:1::5", allow=allow) is None
    assert refusal("10.21.0.1", allow=allow) is not None
    assert refusal("fd00:2::5", allow=allow) is not None
    assert refusal("127.0.0.1", allow=allow) is not None


def test_loopback_is_allowed_in_development_only() -> None:
    development = Policy.from_settings(Settings())
    assert development.refusal("127.0.0.1") is None
    assert development.refusal("::1") is None
    # Only loopback: private ranges still need the allowlist, and disguised loopback is out.
    assert development.refusal("10.0.0.1") is not None
    assert development.refusal("::ffff:127.0.0.1") is not None
    assert Policy.from_settings(production()).refusal("127.0.0.1") is not None
    allowlisted = production(ssrf_allow_cidrs=["127.0.0.1/32"])
    assert Policy.from_settings(allowlisted).refusal("127.0.0.1") is None
    # The deprecated switch can still make development strict.
    strict_dev = Settings(webhook_allow_private_networks=False)
    assert Policy.from_settings(strict_dev).refusal("127.0.0.1") is not None


# --- settings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw", ["10.0.0.0/8, fd00::/8", '["10.0.0.0/8", "fd00::/8"]', " 10.0.0.0/8,,fd00::/8 "]
)
def test_the_allowlist_reads_json_or_commas_from_the_environment(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DARKROOM_SSRF_ALLOW_CIDRS", raw)
    assert Settings().ssrf_allow_cidrs == ["10.0.0.0/8", "fd00::/8"]


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [("10.0.0.1/8", "host bits set"), ("not-a-cidr", "'not-a-cidr'"), ("[10.0.0.0/8", "JSON")],
)
def test_a_bad_allowlist_is_a_clear_startup_error(
    raw: str, complaint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DARKROOM_SSRF_ALLOW_CIDRS", raw)
    with pytest.raises(ValidationError, match="DARKROOM_SSRF_ALLOW_CIDRS") as caught:
        Settings()
    assert complaint in str(caught.value)


def test_the_old_private_networks_switch_is_refused_in_production() -> None:
    with pytest.raises(ValidationError, match="DARKROOM_SSRF_ALLOW_CIDRS"):
        production(webhook_allow_private_networks=True)


# --- the connection: resolve once, connect to what was checked ------------------------


@dataclass
class ScriptedResolver:
    """Answers each lookup with the next list of addresses (the last one repeats)."""

    answers: list[list[str]]
    calls: list[str] = field(default_factory=list)

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append(host)
        return self.answers[min(len(self.calls), len(self.answers)) - 1]


class RecordingStream(httpcore.AsyncMockStream):
    def __init__(self, buffer: list[bytes], tls_names: list[str | None]) -> None:
        super().__init__(buffer)
        self._tls_names = tls_names

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self._tls_names.append(server_hostname)
        return self


@dataclass
class RecordingBackend(httpcore.AsyncNetworkBackend):
    """The inner backend: records where it was asked to connect and answers 200 OK."""

    connects: list[tuple[str, int]] = field(default_factory=list)
    tls_names: list[str | None] = field(default_factory=list)

    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, **_: Any
    ) -> httpcore.AsyncNetworkStream:
        self.connects.append((host, port))
        return RecordingStream([OK_RESPONSE], self.tls_names)


async def test_dns_rebinding_cannot_swap_the_checked_address() -> None:
    resolver = ScriptedResolver([[PUBLIC], ["127.0.0.1"]])
    inner = RecordingBackend()
    backend = GuardedBackend(Policy.from_settings(production()), resolver=resolver, inner=inner)
    await backend.connect_tcp("rebind.test", 80)
    assert inner.connects == [(PUBLIC, 80)]
    with pytest.raises(AddressRefused, match=r"rebind\.test resolves to .* 127\.0\.0\.1"):
        await backend.connect_tcp("rebind.test", 80)
    assert inner.connects == [(PUBLIC, 80)]
    assert resolver.calls == ["rebind.test", "rebind.test"]  # one lookup per connection


async def test_a_request_connects_to_the_checked_address_and_refusals_hide_the_path() -> None:
    resolver = ScriptedResolver([[PUBLIC], ["127.0.0.1"]])
    inner = RecordingBackend()
    async with guarded_client(production(), resolver=resolver, inner=inner) as client:
        response = await client.get("http://rebind.test/secret?token=abc")
    assert response.text == "ok"
    assert inner.connects == [(PUBLIC, 80)]
    assert resolver.calls == ["rebind.test"]
    async with guarded_client(production(), resolver=resolver, inner=inner) as client:
        with pytest.raises(httpx.TransportError) as caught:
            await client.get("http://rebind.test/secret?token=abc")
    assert isinstance(caught.value, AddressRefused)
    message = str(caught.value)
    assert "rebind.test" in message
    assert "127.0.0.1" in message
    assert "secret" not in message
    assert "token" not in message
    assert inner.connects == [(PUBLIC, 80)]


async def test_a_mix_of_public_and_private_answers_is_refused() -> None:
    resolver = ScriptedResolver([[PUBLIC, "10.0.0.5"]])
    inner = RecordingBackend()
    async with guarded_client(production(), resolver=resolver, inner=inner) as client:
        with pytest.raises(AddressRefused, match=r"10\.0\.0\.5 \(private"):
            await client.get("http://mixed.test/")
    assert inner.connects == []


async def test_tls_verifies_the_hostname_not_the_address() -> None:
    inner = RecordingBackend()
    resolver = ScriptedResolver([[PUBLIC]])
    async with guarded_client(production(), resolver=resolver, inner=inner) as client:
        assert (await client.get("https://cms.example.test/x")).status_code == 200
    assert inner.connects == [(PUBLIC, 443)]
    assert inner.tls_names == ["cms.example.test"]


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/", "http://[::127.0.0.1]:9/", "http://[::ffff:127.0.0.1]:9/"]
)
async def test_ip_literals_are_checked_without_a_lookup(url: str) -> None:
    resolver = ScriptedResolver([[PUBLIC]])
    async with guarded_client(production(), resolver=resolver) as client:
        with pytest.raises(AddressRefused, match="non-public address"):
            await client.get(url)
    assert resolver.calls == []


async def test_numeric_host_spellings_are_checked_as_resolved() -> None:
    async with guarded_client(production()) as client:  # the system resolver
        with pytest.raises(AddressRefused, match=r"2130706433 resolves to .* 127\.0\.0\.1"):
            await client.get("http://2130706433:9/")


async def test_a_hanging_lookup_is_a_connect_timeout() -> None:
    async def hang(host: str, port: int) -> Sequence[str]:
        await asyncio.sleep(5)
        return [PUBLIC]

    async with guarded_client(production(), resolver=hang, timeout=0.05) as client:
        with pytest.raises(httpx.ConnectTimeout):
            await client.get("http://slow-dns.test/")


def test_guarded_client_refuses_settings_that_could_bypass_it() -> None:
    for key, value in [("proxy", "http://proxy:3128"), ("transport", httpx.MockTransport(id))]:
        with pytest.raises(TypeError, match=key):
            guarded_client(Settings(), **{key: value})


async def test_blocked_reason_checks_a_url_ahead_of_time() -> None:
    assert await blocked_reason("https://8.8.8.8/hook") is None
    reason = await blocked_reason("http://[64:ff9b::a9fe:a9fe]/latest/meta-data")
    assert reason is not None
    assert "embeds 169.254.169.254" in reason
    assert "meta-data" not in reason
    assert await blocked_reason("http:///nohost") == "the URL has no host"


# --- over real sockets ----------------------------------------------------------------


@dataclass
class Server:
    port: int
    requests: list[bytes]

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@asynccontextmanager
async def loopback_server(redirect_to: str | None = None) -> AsyncIterator[Server]:
    """A minimal HTTP/1.1 server on 127.0.0.1: answers 200 "ok" (or a 302)."""
    requests: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.readuntil(b"\r\n\r\n"))
        if redirect_to is None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        else:
            location = redirect_to.encode()
            writer.write(b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\n")
            writer.write(b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield Server(server.sockets[0].getsockname()[1], requests)
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_loopback_receiver_works_in_development(host: str) -> None:
    async with loopback_server() as server, guarded_client(Settings()) as client:
        response = await client.get(server.url("/hook", host=host))
    assert response.text == "ok"
    assert len(server.requests) == 1


async def test_a_loopback_receiver_is_refused_in_production() -> None:
    async with loopback_server() as server, guarded_client(production()) as client:
        with pytest.raises(AddressRefused, match=r"127\.0\.0\.1 \(loopback"):
            await client.post(server.url("/hook"), content=b"{}")
    assert server.requests == []


@asynccontextmanager
async def provider(settings: Settings) -> AsyncIterator[ProviderHTTP]:
    account = account_config(
        {"kind": "openai", "base_url": "https://api.example.test/v1", "timeout_s": 5.0}
    )
    async with guarded_client(settings) as downloads:
        yield ProviderHTTP("prov", account, downloads=downloads)


async def test_a_provider_output_url_on_a_refused_address_is_not_fetched() -> None:
    async with loopback_server() as server, provider(production()) as http:
        with pytest.raises(ProviderRetryableError, match=r"non-public address 127\.0\.0\.1"):
            await http.download(server.url("/out.png"))
    assert server.requests == []


async def test_a_provider_redirect_to_a_refused_address_is_not_followed() -> None:
    settings = production(ssrf_allow_cidrs=["127.0.0.1/32"])
    async with loopback_server() as target, provider(settings) as http:
        async with loopback_server(redirect_to=target.url("/x", host="127.0.0.2")) as hop:
            with pytest.raises(ProviderRetryableError, match=r"non-public address 127\.0\.0\.2"):
                await http.download(hop.url("/out.png"))
        assert len(hop.requests) == 1
    assert target.requests == []


async def test_provider_downloads_are_guarded_by_default_and_work_in_development() -> None:
    account = account_config({"kind": "openai", "base_url": "https://a.test/v1"})
    http = ProviderHTTP("prov", account)  # no injected client: its own guarded one
    try:
        async with loopback_server() as server:
            assert await http.download(server.url("/out.png")) == b"ok"
    finally:
        await http.aclose()
