"""Outputs on the local filesystem, under one root directory.

Writes are atomic (temp file in the same directory, fsync, rename), so a reader or a crashed worker
never sees half an image, and a task that runs twice simply replaces the file with the same bytes.
`put` returns once the file is durable: its data synced, then its directory entry (the rename), and
the entry of every folder on its way from the root that this process has not yet seen synced (a
folder another put just made counts too: its maker may not have synced it yet). The directory is
synced once for all the files renamed into it while the previous sync ran, not once per file: a
folder's fsync costs about what a file's does, and a worker stores many outputs of one batch at a
time.
Keys are checked strictly before they touch the filesystem: a key that could name anything outside
the root, or a hidden file, is refused with ValueError rather than "cleaned".
A streamed body is written chunk by chunk into the same temporary file, so it is never held whole;
`url` is None: the API serves the file itself (`path_for`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from pathlib import Path
from typing import BinaryIO

from service.kit.coalescer import Coalescer
from service.storage.base import Body, Digest, StoredObject, digested, key_segments

_TEMP_PREFIX = ".tmp-"
# Read size of `open`: large enough that the thread hop per chunk costs little.
READ_CHUNK = 1024 * 1024


class LocalStorage:
    """The `Storage` protocol on a directory; `path_for` lets the API stream a file directly."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._directory_syncs = Coalescer(_sync_directories, name="directory_syncs")
        # Folders (the root and those under it) whose own entries this process has seen synced.
        self._durable_folders: set[Path] = set()

    def path_for(self, key: str) -> Path:
        """The file a key maps to (it may not exist yet). Raises ValueError for unsafe keys."""
        path = self.root.joinpath(*key_segments(key))
        # Belt and braces: a symlink planted inside the root must not lead outside it either.
        if not path.resolve().is_relative_to(self.root):
            raise ValueError(f"invalid storage key {key!r}: resolves outside the storage root")
        return path

    async def put(
        self, key: str, data: Body, content_type: str, *, cache_control: str | None = None
    ) -> StoredObject:
        """Store `data` under `key`. content_type and cache_control are not kept: the key's
        extension carries the type, and the API that serves the file sets its own headers."""
        path = self.path_for(key)
        if isinstance(data, bytes):
            stored = await asyncio.to_thread(_write_atomically, path, key, data)
        else:
            stored = await _stream_atomically(path, key, data)
        for folder in self._folders_to_make_durable(path.parent):  # parents first
            await self._directory_syncs.submit(folder.parent)
            self._durable_folders.add(folder)
        await self._directory_syncs.submit(path.parent)
        return stored

    def _folders_to_make_durable(self, directory: Path) -> list[Path]:
        """The folders from the root (itself made on first use) down to `directory` not yet
        seen synced."""
        folders = []
        while directory != self.root.parent and directory not in self._durable_folders:
            folders.append(directory)
            directory = directory.parent
        return folders[::-1]

    async def get(self, key: str) -> bytes:
        path = self.path_for(key)
        return await asyncio.to_thread(path.read_bytes)

    async def open(self, key: str) -> AsyncIterator[bytes]:
        path = self.path_for(key)
        file = await asyncio.to_thread(path.open, "rb")
        try:
            while chunk := await asyncio.to_thread(file.read, READ_CHUNK):
                yield chunk
        finally:
            await asyncio.to_thread(file.close)

    def url(self, key: str) -> str | None:
        """None: a local file has no URL of its own; the API streams it. The key is still
        checked (no filesystem call: this runs for every output a listing shows)."""
        key_segments(key)
        return None

    async def exists(self, key: str) -> bool:
        path = self.path_for(key)
        return await asyncio.to_thread(path.is_file)

    async def check(self) -> None:
        """Nothing to check: the root is made on the first put."""

    async def aclose(self) -> None:
        """Nothing is held between calls."""


def _write_atomically(path: Path, key: str, data: bytes) -> StoredObject:
    """Write, sync and rename into place (making missing folders)."""
    temp_file, temp_name = _open_temp(path)
    try:
        with temp_file:
            temp_file.write(data)
            _sync_file(temp_file)
        _move_into_place(temp_name, path)
    except BaseException:
        _discard(temp_name)
        raise
    return StoredObject(key=key, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


async def _stream_atomically(path: Path, key: str, chunks: AsyncIterable[bytes]) -> StoredObject:
    """As _write_atomically, one chunk at a time: the body is never held whole."""
    temp_file, temp_name = await asyncio.to_thread(_open_temp, path)
    digest = Digest()
    try:
        with temp_file:
            async for chunk in digested(chunks, digest):
                await asyncio.to_thread(temp_file.write, chunk)
            await asyncio.to_thread(_sync_file, temp_file)
        await asyncio.to_thread(_move_into_place, temp_name, path)
    except BaseException:
        await asyncio.to_thread(_discard, temp_name)
        raise
    return digest.stored(key)


def _open_temp(path: Path) -> tuple[BinaryIO, str]:
    """A new temporary file beside `path` (its folders made), open for writing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=_TEMP_PREFIX, suffix=".part")
    return os.fdopen(fd, "wb"), temp_name


def _sync_file(temp_file: BinaryIO) -> None:
    temp_file.flush()
    os.fsync(temp_file.fileno())


def _move_into_place(temp_name: str, path: Path) -> None:
    os.chmod(temp_name, 0o644)
    os.replace(temp_name, path)


def _discard(temp_name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp_name)


async def _sync_directories(directories: Sequence[Path]) -> list[None]:
    """One fsync per distinct directory, for every caller that renamed into it."""
    await asyncio.to_thread(_fsync_directories, list(dict.fromkeys(directories)))
    return [None] * len(directories)


def _fsync_directories(directories: list[Path]) -> None:
    for directory in directories:
        _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable; not every platform can open a directory, hence the guard."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
