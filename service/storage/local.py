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
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from service.kit.coalescer import Coalescer
from service.storage.base import StoredObject

# One path segment: no leading dot (so no ".", "..", hidden files), no separators, no spaces.
_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}")
_TEMP_PREFIX = ".tmp-"


class LocalStorage:
    """The `Storage` protocol on a directory; `path_for` lets the API stream a file directly."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._directory_syncs = Coalescer(_sync_directories, name="directory_syncs")
        # Folders (the root and those under it) whose own entries this process has seen synced.
        self._durable_folders: set[Path] = set()

    def path_for(self, key: str) -> Path:
        """The file a key maps to (it may not exist yet). Raises ValueError for unsafe keys."""
        segments = key.split("/")
        if not key or not all(_SEGMENT.fullmatch(segment) for segment in segments):
            raise ValueError(
                f"invalid storage key {key!r}: expected '/'-separated names of "
                "[A-Za-z0-9._-] that do not start with a dot"
            )
        path = self.root.joinpath(*segments)
        # Belt and braces: a symlink planted inside the root must not lead outside it either.
        if not path.resolve().is_relative_to(self.root):
            raise ValueError(f"invalid storage key {key!r}: resolves outside the storage root")
        return path

    async def put(self, key: str, data: bytes, content_type: str) -> StoredObject:
        """Store `data` under `key`. content_type is not kept: the key's extension carries it."""
        path = self.path_for(key)
        digest = await asyncio.to_thread(_write_atomically, path, data)
        for folder in self._folders_to_make_durable(path.parent):  # parents first
            await self._directory_syncs.submit(folder.parent)
            self._durable_folders.add(folder)
        await self._directory_syncs.submit(path.parent)
        return StoredObject(key=key, bytes=len(data), sha256=digest)

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

    async def exists(self, key: str) -> bool:
        path = self.path_for(key)
        return await asyncio.to_thread(path.is_file)


def _write_atomically(path: Path, data: bytes) -> str:
    """Write, sync and rename into place (making missing folders); returns the digest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=_TEMP_PREFIX, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as temp_file:
            temp_file.write(data)
            temp_file.flush()
            os.fsync(temp_file.fileno())
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    return digest


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
