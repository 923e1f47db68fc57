"""Write-back clients by kind: how each CMS's API takes an image onto an article."""

from __future__ import annotations

from service.integrations.kinds.base import WritebackKind

WRITEBACKS: dict[str, WritebackKind] = {}


def register(kind: WritebackKind) -> WritebackKind:
    WRITEBACKS[kind.name] = kind
    return kind


from service.integrations.writeback import (  # noqa: E402,F401  (registers)
    contentful,
    generic,
    ghost,
    sanity,
    strapi,
    wordpress,
)
