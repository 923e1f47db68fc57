"""The image check uploads and fetched references pass: decoded, within a pixel budget."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from service.uploads.images import MAX_PIXELS, NotAnImage, inspect_image_sync


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims to be width x height: a valid header, one tiny compressed row.
    Opening it reads only the header, so a bomb can be tested without the memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * (1 + 3 * min(width, 16)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("fmt", "content_type", "extension"),
    [("PNG", "image/png", "png"), ("JPEG", "image/jpeg", "jpg"), ("WEBP", "image/webp", "webp")],
)
def test_accepted_formats_are_described_by_what_decoded(
    fmt: str, content_type: str, extension: str
) -> None:
    buffer = io.BytesIO()
    Image.new("RGBA" if fmt != "JPEG" else "RGB", (33, 17)).save(buffer, fmt)
    checked = inspect_image_sync(buffer.getvalue())
    assert (checked.content_type, checked.extension) == (content_type, extension)
    assert (checked.width, checked.height) == (33, 17)


@pytest.mark.parametrize(
    ("width", "height"),
    [(9000, 9000), (100_000, 100_000)],  # over our budget; over Pillow's own bomb limit too
)
def test_a_decompression_bomb_is_refused_before_decoding(width: int, height: int) -> None:
    with pytest.raises(NotAnImage) as refused:
        inspect_image_sync(png_header(width, height))
    assert width * height > MAX_PIXELS
    assert str(width) in str(refused.value)


def test_a_header_without_its_pixels_is_refused() -> None:
    with pytest.raises(NotAnImage, match="does not decode"):
        inspect_image_sync(png_header(64, 64))
