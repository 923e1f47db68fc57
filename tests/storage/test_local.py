from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.storage.base import Storage, StoredObject
from service.storage.local import READ_CHUNK, LocalStorage

KEY = "b_01HZX/cover-1.png"


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "outputs")


def test_satisfies_the_storage_protocol(storage: LocalStorage) -> None:
    protocol_view: Storage = storage
    assert protocol_view is storage


async def test_put_then_get_round_trips(storage: LocalStorage) -> None:
    data = os.urandom(10_000)

    stored = await storage.put(KEY, data, "image/png")

    assert stored == StoredObject(key=KEY, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    assert await storage.get(KEY) == data
    assert storage.path_for(KEY).read_bytes() == data
    assert storage.path_for(KEY) == storage.root / "b_01HZX" / "cover-1.png"


async def test_put_creates_folders_and_leaves_no_temp_files(storage: LocalStorage) -> None:
    await storage.put(KEY, b"first", "image/png")
    await storage.put(KEY, b"second", "image/png")
    await storage.put("b_01HZX/other.webp", b"third", "image/webp")

    files = sorted(p.relative_to(storage.root).as_posix() for p in storage.root.rglob("*"))
    assert files == ["b_01HZX", "b_01HZX/cover-1.png", "b_01HZX/other.webp"]
    assert await storage.get(KEY) == b"second"


async def test_failed_write_leaves_no_temp_file_and_keeps_old_content(
    storage: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    await storage.put(KEY, b"old", "image/png")

    def failing_replace(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk on fire"):
        await storage.put(KEY, b"new", "image/png")

    assert list(storage.path_for(KEY).parent.iterdir()) == [storage.path_for(KEY)]
    assert await storage.get(KEY) == b"old"


async def test_stored_file_is_readable_by_others(storage: LocalStorage) -> None:
    await storage.put(KEY, b"x", "image/png")
    assert storage.path_for(KEY).stat().st_mode & 0o444 == 0o444


async def test_exists(storage: LocalStorage) -> None:
    assert not await storage.exists(KEY)
    await storage.put(KEY, b"x", "image/png")
    assert await storage.exists(KEY)
    assert not await storage.exists("b_01HZX")  # a folder is not an object


async def test_get_missing_raises_file_not_found(storage: LocalStorage) -> None:
    with pytest.raises(FileNotFoundError):
        await storage.get("b_missing/nothing.png")


UNSAFE_KEYS = [
    "",
    "/etc/passwd",
    "../escape.png",
    "batch/../../escape.png",
    "batch/..",
    "batch/./x.png",
    "batch/.hidden",
    ".tmp-abc.part",
    "batch//x.png",
    "batch/x.png/",
    "batch\\..\\x.png",
    "C:/x.png",
    "batch/x y.png",
    "batch/x\x00.png",
    "batch/" + "a" * 256,
]


@pytest.mark.parametrize("key", UNSAFE_KEYS)
async def test_unsafe_keys_are_refused(storage: LocalStorage, key: str) -> None:
    with pytest.raises(ValueError, match="invalid storage key"):
        storage.path_for(key)
    with pytest.raises(ValueError, match="invalid storage key"):
        await storage.put(key, b"x", "image/png")
    with pytest.raises(ValueError, match="invalid storage key"):
        await storage.get(key)
    with pytest.raises(ValueError, match="invalid storage key"):
        await storage.exists(key)
    assert not storage.root.exists()


async def test_symlink_out_of_root_is_refused(storage: LocalStorage, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    storage.root.mkdir()
    (storage.root / "batch").symlink_to(outside)

    with pytest.raises(ValueError, match="outside the storage root"):
        await storage.put("batch/x.png", b"x", "image/png")
    assert list(outside.iterdir()) == []


async def test_put_returns_only_once_its_rename_and_new_folders_are_synced(
    storage: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Durable before recorded: each put's return follows an fsync of its folder (and of
    the parent of a folder it made) that began after its rename, however the syncs of
    concurrent puts were grouped."""
    import service.storage.local as local

    events: list[tuple[str, str]] = []
    real_replace, real_sync = os.replace, local._fsync_directory

    def replace(source: str, target: Path) -> None:
        real_replace(source, target)
        events.append(("renamed", str(target)))

    def sync(directory: Path) -> None:
        events.append(("sync-begins", str(directory)))
        real_sync(directory)
        events.append(("synced", str(directory)))

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(local, "_fsync_directory", sync)
    keys = [f"b_{n % 2}/out-{n}.png" for n in range(12)]

    async def put(key: str) -> None:
        await storage.put(key, key.encode(), "image/png")
        events.append(("returned", key))

    await asyncio.gather(*(put(key) for key in keys))

    def synced_between(directory: Path, after: int, before: int) -> bool:
        begun = {i for i, e in enumerate(events) if e == ("sync-begins", str(directory))}
        ended = {i for i, e in enumerate(events) if e == ("synced", str(directory))}
        return any(b > after and any(b < e < before for e in ended) for b in begun)

    for key in keys:
        path = storage.path_for(key)
        renamed = events.index(("renamed", str(path)))
        returned = events.index(("returned", key))
        assert synced_between(path.parent, renamed, returned), key
        assert synced_between(storage.root, 0, returned), key  # the folder's own entry


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_streamed_put_writes_the_same_file_and_digest(storage: LocalStorage) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)

    stored = await storage.put(KEY, _chunks(data, 64 * 1024), "image/png")

    assert stored == StoredObject(key=KEY, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    assert storage.path_for(KEY).read_bytes() == data
    assert [p.name for p in storage.path_for(KEY).parent.iterdir()] == ["cover-1.png"]


async def test_failing_stream_leaves_no_temp_file_and_keeps_old_content(
    storage: LocalStorage,
) -> None:
    await storage.put(KEY, b"old", "image/png")

    async def broken() -> AsyncIterator[bytes]:
        yield b"partial"
        raise OSError("source went away")

    with pytest.raises(OSError, match="source went away"):
        await storage.put(KEY, broken(), "image/png")

    assert list(storage.path_for(KEY).parent.iterdir()) == [storage.path_for(KEY)]
    assert await storage.get(KEY) == b"old"


async def test_open_streams_in_chunks_and_url_is_none(storage: LocalStorage) -> None:
    data = os.urandom(2 * READ_CHUNK + 5)
    await storage.put(KEY, data, "image/png")

    chunks = [chunk async for chunk in storage.open(KEY)]

    assert [len(chunk) for chunk in chunks] == [READ_CHUNK, READ_CHUNK, 5]
    assert b"".join(chunks) == data
    assert storage.url(KEY) is None  # the API serves local files itself
    with pytest.raises(FileNotFoundError):
        async for _ in storage.open("b_missing/nothing.png"):
            pass
    with pytest.raises(ValueError, match="invalid storage key"):
        storage.url("../x.png")
