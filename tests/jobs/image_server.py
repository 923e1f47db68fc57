"""An https server on 127.0.0.1 that serves scripted answers, for reference-image URLs.

Reference URLs must be https, so the test server speaks TLS with a throwaway
certificate for 127.0.0.1 and localhost; `client_context` trusts exactly that
certificate. Each path answers with its scripted status, headers and body; every request
line is recorded, so a test can tell that a refused URL was never fetched.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    # Send no Content-Length: the body streams until the connection closes.
    unsized: bool = False
    # Send the head, then nothing until the client gives up.
    hang: bool = False


@dataclass
class ImageServer:
    port: int
    client_context: ssl.SSLContext
    routes: dict[str, Answer] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"https://{host}:{self.port}{path}"


def _certificate() -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of a self-signed certificate for 127.0.0.1 and localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "darkroom-test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def _contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert_pem, key_pem = _certificate()
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as folder:
        cert_file, key_file = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        cert_file.write_bytes(cert_pem)
        key_file.write_bytes(key_pem)
        server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return server, client


def _head(answer: Answer) -> bytes:
    lines = [f"HTTP/1.1 {answer.status} X", "Connection: close"]
    if not answer.unsized:
        lines.append(f"Content-Length: {len(answer.body)}")
    lines.extend(f"{name}: {value}" for name, value in answer.headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@asynccontextmanager
async def image_server() -> AsyncIterator[ImageServer]:
    server_context, client_context = _contexts()
    state = ImageServer(port=0, client_context=client_context)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, path, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            state.requests.append(f"{method} {path}")
            answer = state.routes.get(path, Answer(404, b"not found"))
            writer.write(_head(answer))
            await writer.drain()
            if answer.hang:
                await reader.read()  # until the client closes the connection
            writer.write(answer.body)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the client went away (a refused body, a cap reached)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()
