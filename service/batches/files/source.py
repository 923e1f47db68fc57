"""The request body as text lines, read as it arrives.

Parsing runs in a worker thread (the csv and json modules are synchronous); it pulls the
body's chunks from the event loop one at a time, so neither the body nor its text is
ever held whole. Lines are split on "\\n" only: the csv module needs a quoted cell's
embedded line breaks, and str.splitlines would also split on U+2028 and form feeds."""

from __future__ import annotations

import codecs
from collections.abc import Iterator

from service.kit.errors import ErrorDetail, InvalidInput

BOM = "\ufeff"


class NotUtf8(InvalidInput):
    code = "not_utf8"


def text_lines(chunks: Iterator[bytes]) -> Iterator[str]:
    """Each line of the body with its "\\n"; UTF-8, a leading BOM dropped. Bytes that are
    not UTF-8 are a 422 naming their line."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    pending = ""
    lines_done = 0
    first = True
    for chunk in chunks:
        if not chunk:
            continue
        try:
            text = decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            before = bytes(exc.object[: exc.start])
            line = lines_done + pending.count("\n") + before.count(b"\n") + 1
            raise _not_utf8(line, exc) from None
        if first and text:
            text = text.removeprefix(BOM)
            first = False
        if "\n" not in text:
            pending += text
            continue
        parts = (pending + text).split("\n")
        pending = parts.pop()
        lines_done += len(parts)
        for part in parts:
            yield part + "\n"
    try:
        tail = decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise _not_utf8(lines_done + pending.count("\n") + 1, exc) from None
    pending += tail
    if first:
        pending = pending.removeprefix(BOM)
    if pending:
        yield pending


def _not_utf8(line: int, exc: UnicodeDecodeError) -> NotUtf8:
    detail = ErrorDetail(
        field=f"line {line}",
        message=f"not UTF-8 ({exc.reason}): save the file as UTF-8",
    )
    return NotUtf8(f"{detail.field}: {detail.message}", details=[detail])
