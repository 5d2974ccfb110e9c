"""Tests for repo.saver: blobs handed to the workers, packed, and stored as packs fill."""

from __future__ import annotations

import os

import pytest
from strategies import ENC_KEY

from repo import saver
from repo.index import IndexedPack
from repo.pack import PackedBlob, Spool, read_header
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


def test_small_blobs_go_to_the_workers_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """200 one-KiB blobs make ceil(200 / BATCH_BLOBS) worker tasks, not 200; a blob of
    BATCH_BYTES or more is handed over at once, with what was batched before it."""
    store = _Store()
    packer = _saver(store)
    tasks: list[int] = []
    real = packer._pack_blobs

    def counting(batch: list[tuple[BlobType, BlobId, bytes]]) -> None:
        tasks.append(len(batch))
        real(batch)

    monkeypatch.setattr(packer, "_pack_blobs", counting)
    try:
        for i in range(200):
            packer.add(BlobType.DATA, _blob_id(i), b"%d" % i * 300)
        packer.add(BlobType.DATA, _blob_id(200), os.urandom(saver.BATCH_BYTES))
        packer.flush()
    finally:
        packer.close()
    assert tasks == [64, 64, 64, 9]
    stored = {b.blob_id for data in store.packs.values() for b in _header(data)}
    assert stored == {_blob_id(i) for i in range(201)}


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


def test_a_failing_batch_is_reported_by_flush() -> None:
    """A write error on a worker reaches the caller, naming the spool file."""
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
        packer.add(BlobType.DATA, _blob_id(1), b"x" * 100)
        with pytest.raises(Exception, match="pack spool"):
            packer.flush()
    finally:
        packer.close()
