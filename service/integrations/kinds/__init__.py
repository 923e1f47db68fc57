"""CMS kinds by name: how each verifies and reads its webhooks."""

from __future__ import annotations

from service.integrations.kinds.base import CmsKind

KINDS: dict[str, CmsKind] = {}


def register(kind: CmsKind) -> CmsKind:
    KINDS[kind.name] = kind
    return kind


from service.integrations.kinds import (  # noqa: E402,F401  (registers)
    contentful,
    generic,
    ghost,
    sanity,
    strapi,
    wordpress,
)
