"""Tests for repo.saver: blobs handed to the workers, packed, and stored as packs fill."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from strategies import ENC_KEY

from repo import saver
from repo.errors import BackendError
from repo.index import IndexedPack
from repo.pack import PackedBlob, PackWriter, Spool, read_header
from repo.saver import PackSaver
from repo.types import BlobId, BlobType


class _Store:
    """Keeps each stored pack's bytes, and the order of events."""

    def __init__(self) -> None:
        self.packs: dict[bytes, bytes] = {}
        self.indexed: list[IndexedPack] = []

    def spool(self) -> Spool:
        return Spool(os.memfd_create("test-pack", os.MFD_CLOEXEC), None)

    def store(self, pack_id: bytes, spool: Spool, btype: BlobType) -> None:
        try:
            self.packs[pack_id] = os.pread(spool.fd, os.fstat(spool.fd).st_size, 0)
        finally:
            spool.discard()

    def on_pack(self, pack: IndexedPack) -> None:
        self.indexed.append(pack)


def _saver(store: _Store, pack_size: int = 1 << 20) -> PackSaver:
    return PackSaver(ENC_KEY, 3, pack_size, store.spool, store.store, store.on_pack)


def _blob_id(i: int) -> BlobId:
    return BlobId(i.to_bytes(32, "big"))


def _count_tasks(monkeypatch: pytest.MonkeyPatch, packer: PackSaver) -> list[tuple[str, int]]:
    """Record each call of _pack_blobs: the thread it ran on and the batch size."""
    calls: list[tuple[str, int]] = []
    real = packer._pack_blobs

    def counting(batch: list[tuple[BlobType, BlobId, bytes]]) -> None:
        calls.append((threading.current_thread().name, len(batch)))
        real(batch)

    monkeypatch.setattr(packer, "_pack_blobs", counting)
    return calls


def _stored_ids(store: _Store) -> set[BlobId]:
    return {b.blob_id for data in store.packs.values() for b in _header(data)}


def _save_all(
    monkeypatch: pytest.MonkeyPatch, blobs: list[bytes]
) -> tuple[_Store, list[tuple[str, int]]]:
    """Save blobs (ids 0, 1, ...) through a new saver and flush it; the store and the
    _pack_blobs calls made (see _count_tasks)."""
    store = _Store()
    packer = _saver(store)
    calls = _count_tasks(monkeypatch, packer)
    try:
        for i, data in enumerate(blobs):
            packer.add(BlobType.DATA, _blob_id(i), data)
        packer.flush()
    finally:
        packer.close()
    return store, calls


def test_small_blobs_go_to_the_workers_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """200 blobs of 5,000 bytes make ceil(200 / BATCH_BLOBS) worker tasks, not 200."""
    monkeypatch.setattr(saver, "BATCH_BYTES", 1 << 30)
    store, calls = _save_all(monkeypatch, [os.urandom(5000) for _ in range(200)])
    assert [n for _, n in calls] == [64, 64, 64, 8]
    assert all(name.startswith("compress") for name, _ in calls)
    assert _stored_ids(store) == {_blob_id(i) for i in range(200)}


def test_a_batch_ends_at_batch_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blobs of 100 KiB go three to a task (the third takes it past 256 KiB); one of
    BATCH_BYTES or more goes at once, with what was batched before it."""
    blobs = [os.urandom(100 * 1024) for _ in range(7)] + [os.urandom(saver.BATCH_BYTES)]
    store, calls = _save_all(monkeypatch, blobs)
    assert [n for _, n in calls] == [3, 3, 2]
    assert _stored_ids(store) == {_blob_id(i) for i in range(8)}


def test_tiny_blobs_are_packed_on_the_callers_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blobs under INLINE_MAX never wait for a worker."""
    store, calls = _save_all(monkeypatch, [b"%d" % i * 10 for i in range(100)])
    assert {name for name, _ in calls} == {threading.current_thread().name}
    assert _stored_ids(store) == {_blob_id(i) for i in range(100)}


def test_a_pack_ends_at_max_pack_blobs(monkeypatch: pytest.MonkeyPatch) -> None:
    """However small its blobs, a pack holds at most MAX_PACK_BLOBS of them."""
    monkeypatch.setattr(saver, "MAX_PACK_BLOBS", 10)
    store, _calls = _save_all(monkeypatch, [os.urandom(100) for _ in range(25)])
    assert sorted(len(p.blobs) for p in store.indexed) == [5, 10, 10]
    assert _stored_ids(store) == {_blob_id(i) for i in range(25)}


def _header(data: bytes) -> list[PackedBlob]:
    return read_header(ENC_KEY, data, len(data), name="pack")


def test_packs_are_stored_while_blobs_keep_coming() -> None:
    """A pack that fills is stored while blobs are still being added, not at flush:
    a spool held in memory until the end would hold the whole backup."""
    store = _Store()
    packer = _saver(store, pack_size=64 * 1024)
    try:
        for i in range(2000):
            packer.add(BlobType.DATA, _blob_id(i), os.urandom(1000))
        stored_before_flush = len(store.indexed)
        packer.flush()
    finally:
        packer.close()
    assert stored_before_flush >= 10
    assert sum(len(p.blobs) for p in store.indexed) == 2000


@pytest.mark.parametrize("size", [100, 5000])
def test_a_failing_write_is_reported(size: int) -> None:
    """A write error, on the caller's thread (a tiny blob, raised by add) or on a
    worker (raised by flush), reaches the caller as BackendError naming the spool."""
    store = _Store()
    packer = PackSaver(
        ENC_KEY,
        3,
        1 << 20,
        lambda: Spool(os.open(os.devnull, os.O_RDONLY), None),
        store.store,
        store.on_pack,
    )
    try:
        with pytest.raises(BackendError, match="pack spool: Bad file descriptor"):
            packer.add(BlobType.DATA, _blob_id(1), os.urandom(size))
            packer.flush()
    finally:
        packer.close()


@pytest.mark.parametrize("on_disk", [True, False])
def test_spool_files_wait_for_their_store_without_holding_up_the_caller(
    tmp_path: Path, on_disk: bool
) -> None:
    """Packs spooled to files may wait for a slow store (fsync) while blobs keep coming;
    packs spooled in memory are stored before more are made."""
    release = threading.Event()
    stored: list[bytes] = []

    def spool() -> Spool:
        if not on_disk:
            return Spool(os.memfd_create("test-pack", os.MFD_CLOEXEC), None)
        path = str(tmp_path / os.urandom(8).hex())
        return Spool(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600), path)

    def store(pack_id: bytes, spooled: Spool, btype: BlobType) -> None:
        release.wait(0.5)
        stored.append(pack_id)
        spooled.discard()

    packer = PackSaver(ENC_KEY, 0, 4096, spool, store, lambda pack: None)
    try:
        started = time.monotonic()
        for i in range(3 * (1 + saver.LOCAL_STORES_AHEAD)):  # three blobs fill a pack
            packer.add(BlobType.DATA, _blob_id(i), os.urandom(1500))
        waited = time.monotonic() - started
        release.set()
        packer.flush()
    finally:
        packer.close()
    assert len(stored) == 1 + saver.LOCAL_STORES_AHEAD
    if on_disk:
        assert waited < 0.4
    else:
        assert waited >= 0.4  # the second pack waited for the first to be stored


def test_an_interrupted_tiny_blob_drops_the_open_pack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A KeyboardInterrupt in the middle of appending a tiny blob (packed on the
    caller's thread) leaves the open pack unfinished: flush stores the packs finished
    before, drops the open one with its spool file, and every stored pack reads back."""
    store = _Store()

    def spool() -> Spool:
        path = str(tmp_path / os.urandom(8).hex())
        return Spool(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600), path)

    packer = PackSaver(ENC_KEY, 3, 4096, spool, store.store, store.on_pack)
    real_add = PackWriter.add
    calls = 0

    def interrupted(self: PackWriter, *args: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 8:
            self._gathered += b"half"  # as if stopped inside the append
            raise KeyboardInterrupt
        real_add(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(PackWriter, "add", interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            for i in range(20):
                packer.add(BlobType.DATA, _blob_id(i), os.urandom(1500))
        packer.flush()
    finally:
        packer.close()
    assert len(store.packs) == 2  # three blobs a pack: the third, open one is dropped
    for data in store.packs.values():
        for record in _header(data):
            assert record.offset + record.length <= len(data)
    assert os.listdir(tmp_path) == []
