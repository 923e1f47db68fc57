"""A timestamp header of digits that are not ASCII (`²` passes str.isdigit, int() refuses
it) is a bad signature, checked before any secret is used: never a 500."""

from __future__ import annotations

import pytest

from service.integrations.kinds.base import InboundRequest, SignatureError
from service.integrations.kinds.contentful import ContentfulKind
from service.integrations.kinds.sanity import SanityKind

BODY = b'{"_id": "post-1", "_rev": "r1"}'


def request(headers: dict[str, str]) -> InboundRequest:
    return InboundRequest("POST", "/v1/hooks/x", {}, headers, BODY)


@pytest.mark.parametrize("stamp", ["\u00b2", "1\u00b3", "\u0661\u0662"])
def test_non_ascii_digits_in_a_timestamp_are_refused(stamp: str) -> None:
    contentful = {
        "x-contentful-signature": "0" * 64,
        "x-contentful-signed-headers": "x-contentful-signed-headers,x-contentful-timestamp",
        "x-contentful-timestamp": stamp,
    }
    with pytest.raises(SignatureError):
        ContentfulKind().verify(request(contentful), {"secret": "s" * 64}, 1_800_000_000_000)
    sanity = {"sanity-webhook-signature": f"t={stamp},v1=abc"}
    with pytest.raises(SignatureError):
        SanityKind().verify(request(sanity), {"secret": "s" * 32}, 1_800_000_000_000)
