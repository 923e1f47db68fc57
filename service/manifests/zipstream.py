"""A zip file written as it is sent: never whole in memory, never on disk.

`zipfile` writes to a stream it cannot seek by putting each entry's CRC and sizes in a
data descriptor after its data; the sink below only collects what it writes until the
caller takes it. Offsets past 4 GiB and entries past 2 GiB get Zip64 records from
`zipfile` itself. What stays in memory to the end is the central directory (one short
record per entry), which a zip needs at its end.
"""

from __future__ import annotations

import zipfile
from collections.abc import AsyncIterable, AsyncIterator
from datetime import datetime

FLUSH_BYTES = 256 * 1024
# zipfile refuses to write an entry past this without Zip64 headers decided up front.
_ZIP64_OVER = zipfile.ZIP64_LIMIT // 2


class _Sink:
    """Write-only and unseekable: zipfile then uses data descriptors."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data: bytes, /) -> int:
        self.buffer += data
        return len(data)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None

    def take(self) -> bytes:
        out = bytes(self.buffer)
        self.buffer.clear()
        return out


class ZipStream:
    def __init__(self) -> None:
        self._sink = _Sink()
        self._zip = zipfile.ZipFile(self._sink, "w", allowZip64=True)

    async def add(
        self,
        name: str,
        chunks: AsyncIterable[bytes],
        *,
        when: datetime,
        size: int | None = None,
        compress: bool = False,
    ) -> AsyncIterator[bytes]:
        """Write one entry from `chunks`, yielding the zip's bytes as they are made.
        `size`, when known, lets a small entry do without Zip64 headers."""
        info = zipfile.ZipInfo(name, date_time=_zip_time(when))
        info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16
        info.file_size = size or 0
        force_zip64 = size is None or size > _ZIP64_OVER
        with self._zip.open(info, "w", force_zip64=force_zip64) as entry:
            async for chunk in chunks:
                entry.write(chunk)
                if len(self._sink.buffer) >= FLUSH_BYTES:
                    yield self._sink.take()
        yield self._sink.take()

    def finish(self) -> bytes:
        """The central directory: the zip's last bytes."""
        self._zip.close()
        return self._sink.take()


def _zip_time(when: datetime) -> tuple[int, int, int, int, int, int]:
    """Zip times have no zone (UTC here) and start in 1980."""
    if when.year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    return (when.year, when.month, when.day, when.hour, when.minute, when.second)
