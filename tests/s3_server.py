"""A real S3 API server for tests: moto's server mode, in a subprocess on a loopback port.

Tests talk to it over HTTP exactly as to AWS (obstore signs every request; moto accepts any
credentials). It can be stopped and started again on the same port, to fail a bucket in the
middle of a test; its state lives in memory, so a restart loses every bucket.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import uuid

import httpx

START_TIMEOUT_S = 30.0
# Any values work with moto; they are set as the standard AWS environment, as in production.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "darkroom-test-key-id",
    "AWS_SECRET_ACCESS_KEY": "darkroom-test-secret-never-logged",
    "AWS_REGION": "us-east-1",
}
# Read by obstore too: cleared so that nothing from the developer's shell leaks into a test.
AWS_ENV_CLEARED = (
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT",
    "AWS_ENDPOINT_URL",
    "AWS_PROFILE",
    "AWS_BUCKET",
    "AWS_BUCKET_NAME",
    "AWS_ALLOW_HTTP",
    "AWS_SKIP_SIGNATURE",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class S3Server:
    """One moto server. `start()` waits until it answers; `stop()` ends it."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self._process.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.endpoint}/moto-api/", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"moto_server did not answer on {self.endpoint}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def create_bucket(self, name: str | None = None) -> str:
        """A new empty bucket (moto takes an unsigned CreateBucket)."""
        bucket = name or f"darkroom-{uuid.uuid4().hex[:12]}"
        response = httpx.put(f"{self.endpoint}/{bucket}", timeout=10)
        response.raise_for_status()
        return bucket


def start_s3_server(attempts: int = 3) -> S3Server:
    """A started server on a free port (another port if the chosen one was taken meanwhile)."""
    for attempt in range(attempts):
        server = S3Server()
        try:
            server.start()
        except RuntimeError:
            if attempt == attempts - 1:
                raise
            continue
        return server
    raise AssertionError("unreachable")


def make_public(server: S3Server, bucket: str) -> None:
    """A bucket policy letting anyone GET its objects: a public bucket, as behind a CDN."""
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/*",
            }
        ],
    }
    response = httpx.put(f"{server.endpoint}/{bucket}?policy", content=json.dumps(policy))
    response.raise_for_status()
