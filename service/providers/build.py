"""One provider object per configured account, chosen by the API it speaks."""

from __future__ import annotations

import httpx

from service.providers.base import ImageProvider
from service.providers.config import ProviderAccount
from service.providers.local import LocalRenderer
from service.providers.openai import OpenAIImagesProvider
from service.providers.replicate import ReplicateProvider


def build_provider(
    name: str, account: ProviderAccount, *, http: httpx.AsyncClient | None = None
) -> ImageProvider:
    """A missing token is not an error here (the service starts without keys); the
    provider's first call fails with `provider_not_configured` naming the variable."""
    if account.kind == "replicate":
        return ReplicateProvider(name, account, http=http)
    if account.kind == "openai":
        return OpenAIImagesProvider(name, account, http=http)
    if account.kind == "local":
        return LocalRenderer(name)
    raise ValueError(f"provider {name!r}: unknown kind {account.kind!r}")
