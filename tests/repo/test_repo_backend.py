"""Conformance tests run against every storage backend (repo.backend.*), plus local specifics."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from repo.backend import TEMP_MARK, Backend, open_backend
from repo.backend.local import LocalBackend
from repo.backend.memory import MemoryBackend
from repo.errors import ObjectNotFound
from repo.types import Handle, Kind

CONFIG = Handle(Kind.CONFIG, "config")


def _name(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _handle(kind: Kind, data: bytes) -> Handle:
    return Handle(kind, _name(data))


@pytest.fixture
def local_backend(tmp_path: Path) -> Iterator[Backend]:
    b = LocalBackend(str(tmp_path / "repo"), create=True)
    yield b
    b.close()


@pytest.fixture
def memory_backend() -> Iterator[Backend]:
    b = MemoryBackend()
    yield b
    b.close()


# Network backends come from tests/servers/, which start their servers on 127.0.0.1.
@pytest.fixture(params=["local", "memory", "sftp", "s3", "rest", "rclone"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each backend in turn, empty."""
    b: Backend = request.getfixturevalue(f"{request.param}_backend")
    return b


def test_write_then_read(backend: Backend) -> None:
    """A written object reads back byte for byte."""
    data = os.urandom(3000)
    handle = _handle(Kind.DATA, data)
    backend.write(handle, data)
    assert backend.read(handle) == data


def test_write_accepts_memoryview(backend: Backend) -> None:
    """write() takes a memoryview as well as bytes."""
    data = b"0123456789" * 10
    handle = _handle(Kind.INDEX, data)
    backend.write(handle, memoryview(data))
    assert backend.read(handle) == data


def test_empty_object(backend: Backend) -> None:
    """An empty object can be written, read and stat'ed."""
    handle = _handle(Kind.LOCK, b"")
    backend.write(handle, b"")
    assert backend.read(handle) == b""
    assert backend.stat(handle).size == 0


@pytest.mark.parametrize(
    ("offset", "length"), [(0, 10), (5, 1), (10, 90), (99, 1), (0, 100), (0, 0), (50, None)]
)
def test_range_read(backend: Backend, offset: int, length: int | None) -> None:
    """read(handle, offset, length) returns exactly that slice."""
    data = bytes(range(100))
    handle = _handle(Kind.DATA, data)
    backend.write(handle, data)
    end = None if length is None else offset + length
    assert backend.read(handle, offset, length) == data[offset:end]


def test_range_read_past_the_end_is_short(backend: Backend) -> None:
    """A range running past the end returns the bytes that exist."""
    data = bytes(range(100))
    handle = _handle(Kind.DATA, data)
    backend.write(handle, data)
    assert backend.read(handle, 90, 50) == data[90:]
    assert backend.read(handle, 200, 10) == b""


def test_read_missing_is_object_not_found(backend: Backend) -> None:
    """Reading an absent object raises ObjectNotFound naming it."""
    handle = Handle(Kind.SNAPSHOT, "ab" * 32)
    with pytest.raises(ObjectNotFound, match="snapshots/abab"):
        backend.read(handle)
    with pytest.raises(ObjectNotFound):
        backend.read(handle, 0, 10)
    with pytest.raises(ObjectNotFound):
        backend.read(CONFIG)


def test_stat(backend: Backend) -> None:
    """stat() gives the object's name, size and a modification time (0 where unknown)."""
    data = b"x" * 1234
    handle = _handle(Kind.INDEX, data)
    before = time.time() - 5
    backend.write(handle, data)
    info = backend.stat(handle)
    assert (info.name, info.size) == (handle.name, 1234)
    # REST servers tell no modification times; the others give the real one.
    assert info.mtime == 0 or before <= info.mtime <= time.time() + 5


def test_stat_missing_is_object_not_found(backend: Backend) -> None:
    """stat() of an absent object raises ObjectNotFound."""
    with pytest.raises(ObjectNotFound):
        backend.stat(Handle(Kind.DATA, "cd" * 32))


def test_list_by_kind(backend: Backend) -> None:
    """list(kind) yields every object of that kind, with sizes, and nothing of other kinds."""
    written: dict[Kind, dict[str, int]] = {}
    for kind in (Kind.DATA, Kind.INDEX, Kind.SNAPSHOT, Kind.KEY, Kind.LOCK):
        for i in range(3 if kind is not Kind.LOCK else 1):
            data = f"{kind}-{i}".encode() * (i + 1)
            backend.write(_handle(kind, data), data)
            written.setdefault(kind, {})[_name(data)] = len(data)
    backend.write(CONFIG, b"config bytes")
    for kind, expected in written.items():
        assert {f.name: f.size for f in backend.list(kind)} == expected


def test_list_empty(backend: Backend) -> None:
    """Listing a kind with no objects yields nothing."""
    for kind in (Kind.DATA, Kind.INDEX, Kind.SNAPSHOT, Kind.KEY, Kind.LOCK):
        assert list(backend.list(kind)) == []


def test_list_many_data_objects(backend: Backend) -> None:
    """Data objects spread over many prefixes are all listed."""
    names = set()
    for i in range(60):
        data = i.to_bytes(2, "big")
        backend.write(_handle(Kind.DATA, data), data)
        names.add(_name(data))
    assert {f.name for f in backend.list(Kind.DATA)} == names


def test_delete(backend: Backend) -> None:
    """A deleted object is gone from read, stat and list."""
    data = b"to be deleted"
    handle = _handle(Kind.LOCK, data)
    backend.write(handle, data)
    backend.delete(handle)
    with pytest.raises(ObjectNotFound):
        backend.read(handle)
    with pytest.raises(ObjectNotFound):
        backend.stat(handle)
    assert list(backend.list(Kind.LOCK)) == []


def test_delete_missing_is_not_an_error(backend: Backend) -> None:
    """Deleting an absent object succeeds silently, also twice."""
    handle = Handle(Kind.DATA, "ef" * 32)
    backend.delete(handle)
    backend.delete(handle)


def test_rewrite_with_same_size_succeeds(backend: Backend) -> None:
    """Writing an existing object again with the same size (a retried upload) succeeds."""
    data = b"payload"
    handle = _handle(Kind.DATA, data)
    backend.write(handle, data)
    backend.write(handle, data)
    backend.write(handle, b"PAYLOAD")
    assert backend.read(handle) == data
    assert [f.name for f in backend.list(Kind.DATA)] == [handle.name]


def test_exists_means_config(backend: Backend) -> None:
    """exists() is true once the config object is written, and not before."""
    assert not backend.exists()
    backend.write(Handle(Kind.KEY, "aa" * 32), b"key")
    assert not backend.exists()
    backend.write(CONFIG, b"config")
    assert backend.exists()
    assert backend.read(CONFIG) == b"config"


def test_handle_str() -> None:
    """Handles print as kind/name, and the config as just `config`."""
    assert str(CONFIG) == "config"
    assert str(Handle(Kind.DATA, "ab")) == "data/ab"


# -- local backend specifics ---------------------------------------------------------


def test_local_layout(tmp_path: Path) -> None:
    """Data objects land under data/<2 hex>/, others under their kind's folder."""
    root = tmp_path / "repo"
    backend = LocalBackend(str(root), create=True)
    data = b"pack bytes"
    name = _name(data)
    backend.write(Handle(Kind.DATA, name), data)
    backend.write(Handle(Kind.INDEX, name), data)
    backend.write(CONFIG, b"cfg")
    assert (root / "data" / name[:2] / name).read_bytes() == data
    assert (root / "index" / name).read_bytes() == data
    assert (root / "config").read_bytes() == b"cfg"
    leftovers = [p for p in root.rglob("*") if TEMP_MARK in p.name]
    assert leftovers == []


def test_local_list_ignores_temp_files(tmp_path: Path) -> None:
    """Leftover temporary files (`*.tmp-*`) are not listed."""
    root = tmp_path / "repo"
    backend = LocalBackend(str(root), create=True)
    data = b"real"
    name = _name(data)
    backend.write(Handle(Kind.DATA, name), data)
    backend.write(Handle(Kind.INDEX, name), data)
    (root / "data" / name[:2] / f"{name}{TEMP_MARK}abc123").write_bytes(b"partial")
    (root / "index" / f"{name}{TEMP_MARK}def456").write_bytes(b"partial")
    assert [f.name for f in backend.list(Kind.DATA)] == [name]
    assert [f.name for f in backend.list(Kind.INDEX)] == [name]


def test_local_missing_location(tmp_path: Path) -> None:
    """A location that does not exist holds no repository and lists nothing."""
    backend = LocalBackend(str(tmp_path / "nowhere"))
    assert not backend.exists()
    assert list(backend.list(Kind.DATA)) == []
    assert list(backend.list(Kind.SNAPSHOT)) == []


def _cached(path: Path, offset: int = 0, length: int = 4096) -> bool:
    """Whether the page cache holds these bytes of the file (a read that may not wait
    for the disk fails without them)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.preadv(fd, [bytearray(length)], offset, os.RWF_NOWAIT)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


@pytest.fixture
def page_cache_seen(tmp_path: Path) -> None:
    """Skip unless tmp_path's file system drops pages on request and says when a read
    would wait for the disk (ext4, xfs and btrfs do; tmpfs keeps every page)."""
    probe = tmp_path / "probe"
    probe.write_bytes(os.urandom(64 * 1024))
    fd = os.open(probe, os.O_RDONLY)
    try:
        os.fsync(fd)
        seen = _cached(probe)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        seen = seen and not _cached(probe)
    except OSError:
        seen = False
    finally:
        os.close(fd)
    if not seen:
        pytest.skip(f"{tmp_path}: the file system cannot show the page cache's state")


@pytest.mark.usefixtures("page_cache_seen")
def test_local_pack_leaves_the_page_cache_once_stored(tmp_path: Path) -> None:
    """A pack adopted into a local repository is durable, so its pages are dropped:
    the next pack the backup writes gets pages just freed, not fresh ones."""
    backend = LocalBackend(str(tmp_path / "repo"), create=True)
    data = os.urandom(1 << 20)
    spool = os.path.join(backend.spool_dir(), f"{TEMP_MARK}pack-test")
    fd = os.open(spool, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        assert _cached(Path(spool))
        backend.adopt(_handle(Kind.DATA, data), fd, spool)
    finally:
        os.close(fd)
    final = tmp_path / "repo" / "data" / _name(data)[:2] / _name(data)
    assert not _cached(final) and not _cached(final, (1 << 20) - 4096)
    assert final.read_bytes() == data


@pytest.mark.usefixtures("page_cache_seen")
def test_local_packs_written_or_read_leave_the_page_cache(tmp_path: Path) -> None:
    """A pack written is durable, so its pages are dropped; reading DROP_FROM bytes or
    more of a pack drops those pages, where a shorter read, or writing or reading
    another kind of object, keeps them cached. (The kernel drops only pages of whole
    folios in the range, and a folio can be as large as 2 MiB: the range read is 2 MiB
    at a 2 MiB boundary.)"""
    from repo.backend.local import DROP_FROM  # noqa: PLC0415 - these tests only

    root = tmp_path / "repo"
    backend = LocalBackend(str(root), create=True)
    mib = 1 << 20
    data = os.urandom(8 * mib)
    pack, index = _handle(Kind.DATA, data), _handle(Kind.INDEX, data)
    backend.write(pack, data)
    backend.write(index, data)
    pack_path = root / "data" / pack.name[:2] / pack.name
    index_path = root / "index" / index.name
    assert not _cached(pack_path, 0) and _cached(index_path, 0, len(data))
    assert pack_path.read_bytes() == data  # cached again, by a reader of its own
    assert backend.read(pack, 2 * mib, 2 * mib) == data[2 * mib : 4 * mib]
    assert not _cached(pack_path, 2 * mib) and not _cached(pack_path, 4 * mib - 4096)
    assert _cached(pack_path, 0, 2 * mib) and _cached(pack_path, 4 * mib, 4 * mib)
    assert backend.read(pack, 0, DROP_FROM - 4096) == data[: DROP_FROM - 4096]
    assert _cached(pack_path, 0, 2 * mib)
    assert backend.read(index) == data
    assert _cached(index_path, 0, len(data))
    assert backend.read(pack) == data
    assert not _cached(pack_path, 0) and not _cached(pack_path, len(data) - 4096)


def test_open_backend_accepts_local_prefix(tmp_path: Path) -> None:
    """open_backend understands a plain path and a local: prefix."""
    for location in (str(tmp_path), f"local:{tmp_path}"):
        backend = open_backend(location)
        assert isinstance(backend, LocalBackend)
        assert backend.location == str(tmp_path)


def test_limit_backend_paces_transfers() -> None:
    """--limit-upload/--limit-download: 64 KiB at 256 KiB/s take about a quarter second."""
    from repo.backend.limit import LimitBackend  # noqa: PLC0415 - one test only

    limited = LimitBackend(MemoryBackend(), upload_kib=256, download_kib=256)
    data = os.urandom(32 * 1024)
    start = time.monotonic()
    limited.write(_handle(Kind.DATA, data), data)
    limited.write(_handle(Kind.DATA, data[::-1]), data[::-1])
    limited.read(_handle(Kind.DATA, data))
    assert time.monotonic() - start >= 0.2
