"""What a CMS kind's test case is: its simulator, the article it seeds, the integration
body that points at it, its signed publish webhook (made by the simulator's own
`signed_webhook`), bodies that lack a field, and where the written-back image shows in the
simulator's state. The cases themselves are in cms_cases.py.

`sign_raw` signs arbitrary bytes as the CMS would (written in each case from the issue's
description of the scheme), for the malformed bodies a simulator would never send.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
from starlette.applications import Starlette

TEMPLATE = {
    "prompt": "Editorial illustration for {{ title }}",
    "model": "local/procedural",
    "width": 64,
    "height": 64,
    "format": "png",
    "output_name": "{{ slug }}-cover",
}
TITLE = "Moths of the city"
SLUG = "moths-of-the-city"
STALE_MS = 10 * 60 * 1000


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Delivery:
    """A webhook as the CMS sends it."""

    headers: dict[str, str]
    body: bytes


async def sim_call(base: str, method: str, path: str, body: Any = None) -> Any:
    """A simulator's control route (or API route, unauthenticated)."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        response = await http.request(method, path, json=body)
    response.raise_for_status()
    return response.json()


def hook_path(integration: dict[str, Any]) -> str:
    return f"/v1/hooks/{integration['id']}"


class Case:
    kind: ClassVar[str]
    signature_headers: ClassVar[tuple[str, ...]]  # what a delivery without a signature lacks
    has_timestamp: ClassVar[bool] = True
    signs_body: ClassVar[bool] = True
    credential: ClassVar[str]  # the write-back credential, read from env_name
    secret: ClassVar[str] = ""

    @staticmethod
    def build(config: dict[str, Any] | None) -> Starlette:
        """The simulator's app (its module's `build_app`)."""
        raise NotImplementedError

    @property
    def env_name(self) -> str:
        return f"CMS_E2E_{self.kind.upper()}_CREDENTIAL"

    def inbound(self) -> dict[str, Any]:
        return {"secret": self.secret}

    def writeback(self, base: str) -> dict[str, Any]:
        raise NotImplementedError

    def integration_body(self, base: str | None, callback_url: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": f"{self.kind} covers",
            "kind": self.kind,
            "inbound": self.inbound(),
            "template": TEMPLATE,
            "writeback": self.writeback(base) if base else None,
        }
        if callback_url:
            body["callback_url"] = callback_url
        return body

    async def seed(self, base: str) -> dict[str, Any]:
        """Add the article to the running simulator; returns it as the CMS has it."""
        raise NotImplementedError

    def offline_article(self) -> dict[str, Any]:
        """The article as the CMS would have it, without a simulator."""
        raise NotImplementedError

    def webhook(
        self,
        article: dict[str, Any],
        integration: dict[str, Any],
        *,
        secret: str | None = None,
        timestamp_ms: int | None = None,
    ) -> Delivery:
        raise NotImplementedError

    def sign_raw(self, raw: bytes, integration: dict[str, Any]) -> Delivery:
        raise NotImplementedError

    missing: ClassVar[tuple[str, str]]  # (a key of the article the kind needs, its name)

    def without_a_field(
        self, article: dict[str, Any], integration: dict[str, Any]
    ) -> tuple[Delivery, str]:
        """A signed webhook whose article lacks a field the kind cannot do without, and
        the name the answer gives that field."""
        key, name = self.missing
        changed = {k: v for k, v in article.items() if k != key}
        return self.webhook(changed, integration), name

    def untitled(self, article: dict[str, Any]) -> dict[str, Any]:
        """The article without the title the template needs."""
        raise NotImplementedError

    def image_on(self, state: Any, article: dict[str, Any]) -> Any:
        """The image the write-back left on the article (None if there is none), checked
        against what the simulator stored."""
        raise NotImplementedError


def hmac_sha256(secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()
