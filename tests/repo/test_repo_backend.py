"""Conformance tests run against every storage backend (repo.backend.*), plus local specifics."""

from __future__ import annotations

import errno
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


def test_local_list_skips_an_object_deleted_while_listing(tmp_path: Path) -> None:
    """An object deleted between the folder's listing and its stat (a lock released by
    another process, a pack pruned) is left out, not an error."""
    backend = LocalBackend(str(tmp_path / "repo"), create=True)
    names = [_name(b"one"), _name(b"two")]
    for name in names:
        backend.write(Handle(Kind.LOCK, name), b"lock")
    listing = backend.list(Kind.LOCK)
    first = next(listing).name  # the folder is read by now
    (other,) = [name for name in names if name != first]
    backend.delete(Handle(Kind.LOCK, other))
    assert list(listing) == []


def test_local_missing_location(tmp_path: Path) -> None:
    """A location that does not exist holds no repository and lists nothing."""
    backend = LocalBackend(str(tmp_path / "nowhere"))
    assert not backend.exists()
    assert list(backend.list(Kind.DATA)) == []
    assert list(backend.list(Kind.SNAPSHOT)) == []


def _record_drops(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Log the local backend's fsyncs and page-cache drops, in order, as (call, file
    name[, offset, length]); the real calls still run."""
    from repo.backend import local  # noqa: PLC0415 - these tests only

    calls: list[tuple[str, ...]] = []
    real_fsync, real_fadvise = os.fsync, os.posix_fadvise

    def name(fd: int) -> str:
        return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))

    def fsync(fd: int) -> None:
        calls.append(("fsync", name(fd)))
        real_fsync(fd)

    def fadvise(fd: int, offset: int, length: int, advice: int) -> None:
        if advice == os.POSIX_FADV_DONTNEED:
            calls.append(("drop", name(fd), str(offset), str(length)))
        real_fadvise(fd, offset, length, advice)

    monkeypatch.setattr(local.os, "fsync", fsync)
    monkeypatch.setattr(local.os, "posix_fadvise", fadvise)
    return calls


def _adopt(backend: LocalBackend, data: bytes) -> None:
    """Store data as a pack the way a backup does: written to a spool file, adopted."""
    spool = os.path.join(backend.spool_dir(), f"{TEMP_MARK}pack-test")
    fd = os.open(spool, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        backend.adopt(_handle(Kind.DATA, data), fd, spool)
    finally:
        os.close(fd)


def test_local_pack_leaves_the_page_cache_once_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pack adopted into a local repository is durable, so all its pages are dropped,
    after its fsync: the next pack the backup writes gets pages just freed."""
    backend = LocalBackend(str(tmp_path / "repo"), create=True)
    data = os.urandom(1 << 20)
    calls = _record_drops(monkeypatch)
    _adopt(backend, data)
    name = _name(data)
    final = tmp_path / "repo" / "data" / name[:2] / name
    assert final.read_bytes() == data
    drops = [c for c in calls if c[0] == "drop"]
    assert drops == [("drop", name, "0", "0")]
    assert calls.index(("fsync", f"{TEMP_MARK}pack-test")) < calls.index(drops[0])


def test_local_packs_written_or_read_leave_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pack written is dropped whole once durable; reading DROP_FROM bytes or more of
    a pack drops just the range read. A shorter read, and writing or reading another
    kind of object, drop nothing."""
    from repo.backend.local import DROP_FROM  # noqa: PLC0415 - these tests only

    backend = LocalBackend(str(tmp_path / "repo"), create=True)
    data = os.urandom(4 * DROP_FROM)
    pack, index = _handle(Kind.DATA, data), _handle(Kind.INDEX, data)
    calls = _record_drops(monkeypatch)
    backend.write(pack, data)
    [(_, temp)] = [c for c in calls if c[0] == "fsync" and c[1].startswith(pack.name)]
    assert [c for c in calls if c[0] == "drop"] == [("drop", temp, "0", "0")]
    assert calls.index(("fsync", temp)) < calls.index(("drop", temp, "0", "0"))
    calls.clear()
    backend.write(index, data)
    assert backend.read(index) == data
    assert backend.read(pack, 0, DROP_FROM - 1) == data[: DROP_FROM - 1]
    assert [c for c in calls if c[0] == "drop"] == []
    assert backend.read(pack, DROP_FROM, 2 * DROP_FROM) == data[DROP_FROM : 3 * DROP_FROM]
    assert backend.read(pack) == data
    assert backend.read(pack, 3 * DROP_FROM, 5 * DROP_FROM) == data[3 * DROP_FROM :]
    assert [c for c in calls if c[0] == "drop"] == [
        ("drop", pack.name, str(DROP_FROM), str(2 * DROP_FROM)),
        ("drop", pack.name, "0", str(len(data))),
        # A read past the end drops what it got.
        ("drop", pack.name, str(3 * DROP_FROM), str(DROP_FROM)),
    ]


def test_a_refused_drop_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dropping pages is a hint: where the system refuses it, packs are still written,
    adopted and read as ever."""
    from repo.backend import local  # noqa: PLC0415 - this test only

    def refuse(fd: int, offset: int, length: int, advice: int) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(local.os, "posix_fadvise", refuse)
    backend = LocalBackend(str(tmp_path / "repo"), create=True)
    data = os.urandom(2 * local.DROP_FROM)
    backend.write(_handle(Kind.DATA, data), data)
    assert backend.read(_handle(Kind.DATA, data)) == data
    other = data[::-1]
    _adopt(backend, other)
    assert backend.read(_handle(Kind.DATA, other), 0, len(other)) == other


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="needs preadv(RWF_NOWAIT)")
def test_a_dropped_pack_is_no_longer_cached(tmp_path: Path) -> None:
    """The kernel honours the drop: after a pack range is read, a read told not to wait
    for the disk finds those bytes gone, where the file system can tell (tmpfs keeps
    every page, so there the test is skipped; the drop is a hint the kernel may skip
    for a page busy at that instant, so it is asked for up to five times, 0.5 s
    apart)."""
    backend = LocalBackend(str(tmp_path / "repo"), create=True)
    mib = 1 << 20
    data = os.urandom(4 * mib)
    pack = _handle(Kind.DATA, data)
    backend.write(pack, data)
    path = tmp_path / "repo" / "data" / pack.name[:2] / pack.name

    def cached() -> bool:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.preadv(fd, [bytearray(4096)], 2 * mib, os.RWF_NOWAIT)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        return True

    assert path.read_bytes() == data  # in the page cache now, whatever the write did
    if not cached():
        pytest.skip(f"{tmp_path}: cannot tell what the page cache holds")
    for _ in range(5):
        # 2 MiB at a 2 MiB boundary: the kernel drops only whole folios, up to 2 MiB.
        assert backend.read(pack, 2 * mib, 2 * mib) == data[2 * mib :]
        if not cached():
            return
        time.sleep(0.5)
    pytest.fail("the pages read stayed cached after five drops")


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
