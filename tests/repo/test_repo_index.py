"""Tests for repo.index: index file encoding and the in-memory MasterIndex."""

from __future__ import annotations

import contextlib
import random

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import U32, blob_ids, blob_types, seeded

from repo.blob import MARK_ZSTD, decompress
from repo.errors import DamagedObject
from repo.index import INDEX_RECORD, IndexedPack, MasterIndex, decode_index, encode_index
from repo.types import BlobLocation, BlobType

NAME = "index 1234abcd"

records = st.tuples(blob_ids, st.integers(0, 2**64 - 1), st.integers(0, U32), st.integers(0, U32))
indexed_packs = st.builds(
    IndexedPack,
    pack_id=blob_ids,
    size=st.integers(0, 2**40),
    header_length=st.integers(0, U32),
    btype=blob_types,
    blobs=st.lists(records, max_size=10),
)


def _pack(pack_id: bytes, btype: BlobType, ids: list[bytes]) -> IndexedPack:
    blobs = [(b, i * 100, 100, 90 + i) for i, b in enumerate(ids)]
    return IndexedPack(pack_id, 100 * len(ids) + 200, 120, btype, blobs)


def _ids(rng: random.Random, n: int) -> list[bytes]:
    return [rng.randbytes(32) for _ in range(n)]


@given(packs=st.lists(indexed_packs, max_size=6), supersedes=st.lists(blob_ids, max_size=4))
def test_encode_decode_round_trip(packs: list[IndexedPack], supersedes: list[bytes]) -> None:
    """decode_index(encode_index(packs, supersedes)) returns the same packs and list."""
    decoded, superseded = decode_index(encode_index(packs, supersedes), name=NAME)
    assert decoded == packs
    assert superseded == supersedes


def _entries(plain: bytes) -> list[list[object]]:
    """The pack entries of a version-2 index plaintext, decompressed."""
    doc = msgpack.unpackb(plain)
    assert doc["version"] == 2
    entries: list[list[object]] = msgpack.unpackb(decompress(doc["packs"], name=NAME))
    return entries


def test_blob_records_are_fixed_width_binary() -> None:
    """Each pack's blobs are one msgpack bin of fixed-width records, not one object per blob."""
    ids = _ids(seeded(1), 3)
    plain = encode_index([_pack(b"\x07" * 32, BlobType.DATA, ids)])
    (entry,) = _entries(plain)
    assert isinstance(entry[4], bytes)
    assert len(entry[4]) == 3 * INDEX_RECORD.size == 3 * 48
    assert msgpack.unpackb(plain)["supersedes"] == []


def test_pack_entries_are_compressed() -> None:
    """The entries are stored zstd-compressed: the records' small numbers shrink."""
    ids = _ids(seeded(2), 2000)
    packs = [_pack(seeded(3 + i).randbytes(32), BlobType.DATA, ids[i::4]) for i in range(4)]
    plain = encode_index(packs)
    doc = msgpack.unpackb(plain)
    assert doc["packs"][0] == MARK_ZSTD
    assert len(plain) < 0.8 * 2000 * INDEX_RECORD.size
    assert decode_index(plain, name=NAME)[0] == packs


def test_version_1_files_are_still_read() -> None:
    """An index file of version 1, its entries a plain array, decodes as before."""
    ids = _ids(seeded(4), 3)
    pack = _pack(b"\x07" * 32, BlobType.TREE, ids)
    records = b"".join(INDEX_RECORD.pack(*b) for b in pack.blobs)
    plain = _doc(version=1, packs=[[pack.pack_id, pack.size, 120, 2, records]], supersedes=[])
    assert decode_index(plain, name=NAME) == ([pack], [])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32), n_present=st.integers(0, 300), n_packs=st.integers(1, 8))
def test_lookup_many_random_ids(seed: int, n_present: int, n_packs: int) -> None:
    """Every loaded id is found at its location; random absent ids are not found."""
    rng = seeded(seed)
    present = _ids(rng, n_present)
    packs, expected = [], {}
    for p in range(n_packs):
        chunk = present[p::n_packs]
        btype = BlobType.DATA if p % 2 else BlobType.TREE
        pack = _pack(rng.randbytes(32), btype, chunk)
        packs.append(pack)
        for blob_id, offset, length, raw in pack.blobs:
            expected[blob_id] = (btype, BlobLocation(pack.pack_id, offset, length, raw))
    index = MasterIndex()
    index.load(packs)
    for blob_id, (btype, loc) in expected.items():
        assert index.lookup(btype, blob_id) == loc
        assert index.has(btype, blob_id)
        other = BlobType.DATA if btype is BlobType.TREE else BlobType.TREE
        assert index.lookup(other, blob_id) is None
    for absent in _ids(rng, 200):
        for btype in BlobType:
            assert index.lookup(btype, absent) is None
            assert not index.has(btype, absent)


def test_lookup_boundaries() -> None:
    """Ids smaller than, larger than and between loaded ids are absent."""
    ids = [b"\x10" * 32, b"\x80" * 32]
    index = MasterIndex()
    index.load([_pack(b"\x01" * 32, BlobType.DATA, ids)])
    for absent in (b"\x00" * 32, b"\x11" * 32, b"\xff" * 32):
        assert index.lookup(BlobType.DATA, absent) is None
    assert index.lookup(BlobType.DATA, b"\x80" * 32) == BlobLocation(b"\x01" * 32, 100, 100, 91)


def test_empty_index_finds_nothing() -> None:
    """A new MasterIndex knows no blob."""
    index = MasterIndex()
    assert index.lookup(BlobType.DATA, b"\x00" * 32) is None
    assert index.count(BlobType.TREE) == 0
    assert list(index.iter_blobs(BlobType.DATA)) == []


def test_duplicates_keep_one_valid_location() -> None:
    """A blob listed in two packs resolves to one of its two real locations."""
    blob = b"\x42" * 32
    first = _pack(b"\x01" * 32, BlobType.DATA, [blob])
    second = _pack(b"\x02" * 32, BlobType.DATA, [b"\x00" * 32, blob])
    index = MasterIndex()
    index.load([first, second])
    loc = index.lookup(BlobType.DATA, blob)
    assert loc in (BlobLocation(b"\x01" * 32, 0, 100, 90), BlobLocation(b"\x02" * 32, 100, 100, 91))


def test_duplicates_are_counted_once() -> None:
    """A blob listed in two packs is counted and iterated once."""
    blob = b"\x42" * 32
    index = MasterIndex()
    index.load(
        [_pack(b"\x01" * 32, BlobType.DATA, [blob]), _pack(b"\x02" * 32, BlobType.DATA, [blob])]
    )
    assert index.count(BlobType.DATA) == 1
    assert [b for b, _ in index.iter_blobs(BlobType.DATA)] == [blob]


def test_pending_pack_is_found() -> None:
    """Blobs of a pack added by this process are found before any index file lists them."""
    index = MasterIndex()
    index.load([_pack(b"\x01" * 32, BlobType.DATA, [b"\x10" * 32])])
    pack = _pack(b"\x02" * 32, BlobType.TREE, [b"\x20" * 32, b"\x30" * 32])
    index.add_pack(pack)
    assert index.lookup(BlobType.TREE, b"\x30" * 32) == BlobLocation(b"\x02" * 32, 100, 100, 91)
    assert index.has(BlobType.TREE, b"\x20" * 32)
    assert index.lookup(BlobType.DATA, b"\x20" * 32) is None
    assert index.lookup(BlobType.DATA, b"\x10" * 32) is not None
    assert index.count(BlobType.TREE) == 2
    assert b"\x02" * 32 in index.pack_ids


def test_pending_survives_a_reload() -> None:
    """load() replaces the loaded tables but keeps blobs added by this process."""
    index = MasterIndex()
    index.add_pack(_pack(b"\x02" * 32, BlobType.DATA, [b"\x20" * 32]))
    index.load([_pack(b"\x01" * 32, BlobType.DATA, [b"\x10" * 32])])
    assert index.has(BlobType.DATA, b"\x20" * 32)
    assert index.has(BlobType.DATA, b"\x10" * 32)


def test_pack_ids_and_sizes_are_recorded_once() -> None:
    """Every pack appears once in pack_ids, with its size, however often it is named."""
    pack = _pack(b"\x05" * 32, BlobType.DATA, [b"\x01" * 32])
    index = MasterIndex()
    index.load([pack, pack])
    index.add_pack(pack)
    assert index.pack_ids == [b"\x05" * 32]
    assert index.pack_sizes == [pack.size]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), n_loaded=st.integers(0, 60), n_pending=st.integers(0, 30))
def test_iter_blobs_yields_everything(seed: int, n_loaded: int, n_pending: int) -> None:
    """iter_blobs yields every loaded and pending blob of a type, with its location."""
    rng = seeded(seed)
    loaded = _pack(rng.randbytes(32), BlobType.DATA, _ids(rng, n_loaded))
    trees = _pack(rng.randbytes(32), BlobType.TREE, _ids(rng, 5))
    pending = _pack(rng.randbytes(32), BlobType.DATA, _ids(rng, n_pending))
    index = MasterIndex()
    index.load([loaded, trees])
    index.add_pack(pending)
    got = dict(index.iter_blobs(BlobType.DATA))
    want = {
        b: BlobLocation(p.pack_id, o, n, r) for p in (loaded, pending) for b, o, n, r in p.blobs
    }
    assert got == want
    assert index.count(BlobType.DATA) == n_loaded + n_pending
    assert {b for b, _ in index.iter_blobs(BlobType.TREE)} == {b[0] for b in trees.blobs}


def _doc(**changes: object) -> bytes:
    """A version-1 index plaintext (entries not compressed) with some fields changed."""
    doc: dict[str, object] = {
        "version": 1,
        "supersedes": [],
        "packs": [[b"\x01" * 32, 100, 50, 1, b""]],
    }
    doc.update(changes)
    return msgpack.packb(doc, use_bin_type=True)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "plain",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xc1", id="bad-msgpack"),
        pytest.param(b"\x93\x01\x02", id="truncated-msgpack"),
        pytest.param(msgpack.packb([1, 2, 3]), id="not-a-map"),
        pytest.param(msgpack.packb({"version": 1}), id="no-packs"),
        pytest.param(_doc(version=3), id="unknown-version"),
        pytest.param(_doc(version=2), id="v2-packs-not-bytes"),
        pytest.param(_doc(version=2, packs=b"\x01not zstd"), id="v2-corrupt-zstd"),
        pytest.param(_doc(version=2, packs=b"\x00\x93\x01"), id="v2-truncated-entries"),
        pytest.param(_doc(version=2, packs=b"\x07"), id="v2-unknown-marker"),
        pytest.param(_doc(packs=[[b"\x01" * 31, 100, 50, 1, b""]]), id="short-pack-id"),
        pytest.param(_doc(packs=[[b"\x01" * 32, 100, 50, 1, b"x" * 47]]), id="partial-record"),
        pytest.param(_doc(packs=[[b"\x01" * 32, 100, 50, 7, b""]]), id="unknown-blob-type"),
        pytest.param(_doc(packs=[[b"\x01" * 32, 100, 50]]), id="short-entry"),
        pytest.param(_doc(packs=[[b"\x01" * 32, 100, 50, 1, 5]]), id="records-not-bytes"),
        pytest.param(_doc(packs=7), id="packs-not-a-list"),
        pytest.param(_doc(supersedes=["zz"]), id="supersedes-str"),
        pytest.param(encode_index([]) + b"\x00", id="trailing-bytes"),
    ],
)
def test_malformed_index_is_damaged(plain: bytes) -> None:
    """Malformed index plaintext raises DamagedObject naming the index file."""
    with pytest.raises(DamagedObject, match=NAME):
        decode_index(plain, name=NAME)


@given(st.binary(max_size=200))
def test_random_bytes_raise_only_damaged_object(data: bytes) -> None:
    """Arbitrary bytes either decode or raise DamagedObject, never another exception."""
    with contextlib.suppress(DamagedObject):
        decode_index(data, name=NAME)
