"""Tests for the layout of repo.index's in-memory tables: 44-byte records in maps of exact
size, wide locations beside them, in-place merges, the pack table and memory release."""

from __future__ import annotations

import gc
import mmap
import weakref

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import U32, seeded

import repo.index
from repo.errors import RepoError
from repo.index import IndexedPack, MasterIndex
from repo.types import BlobLocation, BlobType

RECORD = 44
WIDE = 2**24  # the smallest length that does not fit a record's 3 bytes

Blob = tuple[bytes, int, int, int]


def _table(index: MasterIndex, btype: BlobType = BlobType.DATA) -> repo.index._Table:
    return index._tables[btype]


def _pack(pack_id: bytes, blobs: list[Blob], btype: BlobType = BlobType.DATA) -> IndexedPack:
    return IndexedPack(pack_id, 1000, 100, btype, blobs)


def _small_blobs(ids: list[bytes]) -> list[Blob]:
    return [(b, i * 100, 100, 200) for i, b in enumerate(ids)]


def _check_table(index: MasterIndex, btype: BlobType) -> None:
    """The table's records are exactly as long as its blobs, sorted strictly by id (no id
    twice), each in the bucket of its first 12 bits; positions follow that order, and
    every wide record, in the table or pending, has its location in the dict."""
    table = _table(index, btype)
    # An empty table keeps its first page, never touched: a map cannot be empty.
    assert len(table.data) == (RECORD * len(table) if len(table) else mmap.PAGESIZE)
    ids = [blob_id for blob_id, _ in table.records()]
    assert ids == sorted(set(ids))
    assert [index.position(btype, b) for b in ids] == list(range(len(ids)))
    for at, blob_id in enumerate(ids):
        bucket = blob_id[0] * 16 + blob_id[1] // 16
        assert table.starts[bucket] <= at < table.starts[bucket + 1]
    marked = {b for b, _ in table.records() if table._record(table.find(b))[1] == b"\xff" * 3}
    marked |= {b for b, record in table.pending.items() if record[31:34] == b"\xff" * 3}
    # Until the next insert, a blob pending with a narrow record may keep a wide location.
    assert marked <= set(table.wide) <= marked | set(table.pending)


def test_records_fill_an_exact_map() -> None:
    """1,000 blobs take 44 bytes each in the table: no spare capacity."""
    rng = seeded(3)
    index = MasterIndex()
    index.load(
        _pack(rng.randbytes(32), _small_blobs([rng.randbytes(32) for _ in range(100)]))
        for _ in range(10)
    )
    assert isinstance(_table(index).data, mmap.mmap)
    assert len(_table(index).data) == RECORD * 1000
    assert len(_table(index, BlobType.TREE)) == 0
    _check_table(index, BlobType.DATA)


def test_repeated_ids_leave_no_gap() -> None:
    """Blobs listed twice are kept once and the table shrinks to the unique count."""
    rng = seeded(4)
    ids = [rng.randbytes(32) for _ in range(50)]
    index = MasterIndex()
    index.load([_pack(b"\x01" * 32, _small_blobs(ids)), _pack(b"\x02" * 32, _small_blobs(ids))])
    assert len(_table(index)) == 50
    assert len(_table(index).data) == RECORD * 50
    _check_table(index, BlobType.DATA)
    index.load([_pack(b"\x03" * 32, _small_blobs(ids[:10]))])  # all known already
    assert len(_table(index).data) == RECORD * 50
    _check_table(index, BlobType.DATA)


def test_pending_blobs_merge_into_the_table_in_place() -> None:
    """Past MERGE_AT pending blobs, they join the sorted table and the dict empties."""
    rng = seeded(5)
    index = MasterIndex()
    index.MERGE_AT = 10
    loaded = [rng.randbytes(32) for _ in range(300)]
    index.load([_pack(b"\x01" * 32, _small_blobs(loaded))])
    added = [rng.randbytes(32) for _ in range(11)]
    index.add_pack(_pack(b"\x02" * 32, _small_blobs(added)))
    assert index.count(BlobType.DATA) == index.loaded_count(BlobType.DATA) == 311
    assert not _table(index).pending
    assert len(_table(index).data) == RECORD * 311
    _check_table(index, BlobType.DATA)
    for i, blob_id in enumerate(added):
        assert index.lookup(BlobType.DATA, blob_id) == BlobLocation(b"\x02" * 32, i * 100, 100, 200)


@pytest.mark.parametrize("first_byte", [0x00, 0x80, 0xFF])
def test_few_new_blobs_are_inserted_among_many(first_byte: int) -> None:
    """A merge of a few blobs into a full group puts each in its place, the smallest and
    largest ids included, and keeps the record of an id already there."""
    rng = seeded(first_byte)
    old = sorted(bytes([first_byte]) + rng.randbytes(31) for _ in range(400))
    others = [bytes([first_byte ^ 1]) + rng.randbytes(31) for _ in range(50)]
    index = MasterIndex()
    index.MERGE_AT = 0
    index.load([_pack(b"\x01" * 32, _small_blobs(old + others))])
    smallest, largest = bytes([first_byte]) + b"\x00" * 31, bytes([first_byte]) + b"\xff" * 31
    middle = bytes([first_byte]) + rng.randbytes(31)
    again = old[123]
    index.add_pack(_pack(b"\x02" * 32, _small_blobs([largest, middle, again, smallest])))
    assert index.loaded_count(BlobType.DATA) == 453
    assert index.lookup(BlobType.DATA, again) == BlobLocation(b"\x01" * 32, 12300, 100, 200)
    assert index.lookup(BlobType.DATA, smallest) == BlobLocation(b"\x02" * 32, 300, 100, 200)
    assert index.lookup(BlobType.DATA, largest) == BlobLocation(b"\x02" * 32, 0, 100, 200)
    for i, blob_id in enumerate(old + others):
        assert index.has(BlobType.DATA, blob_id), i
    _check_table(index, BlobType.DATA)


WIDE_BLOBS = [
    pytest.param((WIDE, 100), id="length-16MiB"),
    pytest.param((2**30 + 7, 2**31), id="length-1GiB"),
    pytest.param((100, WIDE), id="raw-16MiB"),
    pytest.param((100, 2**40), id="raw-1TiB"),
]


@pytest.mark.parametrize("lengths", WIDE_BLOBS)
@pytest.mark.parametrize("offset", [0, U32, U32 + 1, 2**64 - 1])
@pytest.mark.parametrize("how", ["load", "add"])
def test_wide_locations_round_trip(lengths: tuple[int, int], offset: int, how: str) -> None:
    """Lengths of 2^24 and more, and offsets past 32 bits, come back exactly."""
    length, raw = lengths
    rng = seeded(6)
    small = _small_blobs([rng.randbytes(32) for _ in range(20)])
    wide_id = rng.randbytes(32)
    blobs = [*small[:10], (wide_id, offset, length, raw), *small[10:]]
    index = MasterIndex()
    index.MERGE_AT = 5
    pack = _pack(b"\x09" * 32, blobs)
    if how == "load":
        index.load([pack])
    else:
        index.add_pack(pack)
    assert not _table(index).pending
    want = BlobLocation(b"\x09" * 32, offset, length, raw)
    assert index.lookup(BlobType.DATA, wide_id) == want
    assert dict(index.iter_blobs(BlobType.DATA))[wide_id] == want
    for blob_id, o, n, r in small:
        assert index.lookup(BlobType.DATA, blob_id) == BlobLocation(b"\x09" * 32, o, n, r)
    assert len(_table(index).wide) == 1
    _check_table(index, BlobType.DATA)


def test_largest_narrow_location_needs_no_dict() -> None:
    """A length of 2^24 - 1 and an offset of 2^32 - 1 still fit a record."""
    index = MasterIndex()
    index.load([_pack(b"\x01" * 32, [(b"\x05" * 32, U32, WIDE - 1, WIDE - 1)])])
    assert not _table(index).wide
    assert index.lookup(BlobType.DATA, b"\x05" * 32) == BlobLocation(
        b"\x01" * 32, U32, WIDE - 1, WIDE - 1
    )


@pytest.mark.parametrize("wide_first", [True, False])
def test_wide_and_narrow_copies_agree(wide_first: bool) -> None:
    """A blob stored twice, once with a wide location, resolves to one of its copies, the
    same in lookup and iter_blobs, and leaves no stale wide entry."""
    blob = b"\x42" * 32
    wide = _pack(b"\x01" * 32, [(blob, 0, 2**25, 2**25)])
    narrow = _pack(b"\x02" * 32, [(blob, 100, 10, 20)])
    index = MasterIndex()
    index.load([wide, narrow] if wide_first else [narrow, wide])
    loc = index.lookup(BlobType.DATA, blob)
    assert loc in (
        BlobLocation(wide.pack_id, *wide.blobs[0][1:]),
        BlobLocation(narrow.pack_id, *narrow.blobs[0][1:]),
    )
    assert list(index.iter_blobs(BlobType.DATA)) == [(blob, loc)]
    _check_table(index, BlobType.DATA)


def test_pack_found_only_at_id_boundaries() -> None:
    """A pack id that appears inside two neighbouring ids is a new pack, not a match."""
    first, second = b"a" * 16 + b"b" * 16, b"c" * 16 + b"d" * 16
    straddling = b"b" * 16 + b"c" * 16
    index = MasterIndex()
    index.load([_pack(first, []), _pack(second, [])])
    index.add_pack(_pack(straddling, [(b"\x07" * 32, 0, 1, 1)]))
    index.add_pack(_pack(second, [(b"\x08" * 32, 0, 1, 1)]))
    assert index.pack_ids == [first, second, straddling]
    assert index.lookup(BlobType.DATA, b"\x07" * 32) == BlobLocation(straddling, 0, 1, 1)
    assert index.lookup(BlobType.DATA, b"\x08" * 32) == BlobLocation(second, 0, 1, 1)


def test_pack_numbers_stop_below_the_wide_mark(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pack number 2^24 - 1 marks wide records, so it is never given to a pack."""
    assert repo.index.MAX_PACKS == 2**24 - 1
    monkeypatch.setattr(repo.index, "MAX_PACKS", 2)
    index = MasterIndex()
    index.load([_pack(b"\x01" * 32, []), _pack(b"\x02" * 32, [])])
    with pytest.raises(RepoError, match="more than 2 packs"):
        index.add_pack(_pack(b"\x03" * 32, []))


class _NoRemap(mmap.mmap):
    """A map that cannot resize, like any on a system without mremap."""

    def resize(self, newsize: int) -> None:
        raise SystemError("mmap: resizing not available--no mremap()")


@pytest.mark.parametrize("size", [10, 4096, 100_000])
def test_map_is_copied_where_it_cannot_resize(size: int) -> None:
    """Without mremap, a table's map is replaced by a copy of the new size."""
    old = _NoRemap(-1, 4096, flags=mmap.MAP_PRIVATE)
    old[:5] = b"hello"
    new = repo.index._resized(old, size)
    assert old.closed
    assert len(new) == size
    assert new[:5] == b"hello"[:size]


class _Trims:
    """Stands in for the heap trim: records, at each call, how many watched packs live."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self._packs: list[weakref.ref[IndexedPack]] = []

    def watch(self, packs: list[IndexedPack]) -> None:
        self._packs.extend(weakref.ref(p) for p in packs)

    def __call__(self) -> None:
        self.calls.append(sum(ref() is not None for ref in self._packs))


@pytest.fixture
def trims(monkeypatch: pytest.MonkeyPatch) -> _Trims:
    fake = _Trims()
    monkeypatch.setattr(repo.index, "_release_free_memory", fake)
    return fake


def _many_packs(count: int) -> list[IndexedPack]:
    """Packs of one blob each."""
    return [
        _pack(n.to_bytes(32, "big"), [(n.to_bytes(32, "little"), 0, 1, 1)]) for n in range(count)
    ]


def test_heap_is_trimmed_when_a_loaded_list_is_freed(trims: _Trims) -> None:
    """The heap is trimmed after a load, and again once its caller frees the packs."""
    packs = _many_packs(300)
    trims.watch(packs)
    index = MasterIndex()
    index.load(packs)
    gc.collect()
    assert trims.calls == [300]
    del packs
    assert trims.calls == [300, 0]
    assert index.count(BlobType.DATA) == 300


def test_heap_is_trimmed_when_a_dict_of_lists_is_freed(trims: _Trims) -> None:
    """Packs freed file by file (each list from its end): the trim comes once all but
    fewer than EVERY packs are gone."""
    made = _many_packs(1000)
    files = {n: made[n * 200 : (n + 1) * 200] for n in range(5)}
    trims.watch(made)
    del made
    index = MasterIndex()
    index.load(p for packs in files.values() for p in packs)
    assert trims.calls == [1000]
    del files
    assert len(trims.calls) == 2
    assert trims.calls[1] < repo.index._ReleaseWatch.EVERY
    assert index.count(BlobType.DATA) == 1000


def test_a_new_load_forgets_the_packs_of_the_last(trims: _Trims) -> None:
    """Packs of an earlier load no longer trigger a trim once another load ran."""
    first, second = _many_packs(10), _many_packs(20)[10:]
    index = MasterIndex()
    index.load(first)
    index.load(second)
    del first
    assert len(trims.calls) == 2
    del second
    assert len(trims.calls) == 3


# Ids in three groups only, so that groups fill and merges insert among many records.
fresh_ids = st.builds(
    lambda first, rest: bytes([first]) + rest,
    st.sampled_from([0x00, 0x80, 0xFF]),
    st.binary(min_size=31, max_size=31),
)
ids_pool = st.lists(fresh_ids, min_size=1, max_size=12, unique=True)
sizes = st.integers(0, 5000) | st.sampled_from([WIDE - 1, WIDE, 2**33])
offsets = st.integers(0, 10**6) | st.sampled_from([U32, U32 + 1, 2**64 - 1])


@st.composite
def _operations(draw: st.DrawFn) -> list[tuple[str, list[IndexedPack]]]:
    """Loads and add_packs of packs whose blob ids repeat (from a small pool, or fresh)."""
    pool = draw(ids_pool)
    blob_id = st.sampled_from(pool) | fresh_ids
    blob = st.tuples(blob_id, offsets, sizes, sizes)
    pack = st.builds(
        IndexedPack,
        pack_id=st.sampled_from([bytes([n]) * 32 for n in range(6)]),
        size=st.just(1000),
        header_length=st.just(10),
        btype=st.sampled_from(BlobType),
        blobs=st.lists(blob, max_size=24),
    )
    step = st.tuples(st.sampled_from(["load", "add"]), st.lists(pack, min_size=1, max_size=4))
    return draw(st.lists(step, min_size=1, max_size=10))


@settings(max_examples=150, deadline=None)
@given(operations=_operations(), merge_at=st.integers(0, 12))
def test_index_agrees_with_a_model(
    operations: list[tuple[str, list[IndexedPack]]], merge_at: int
) -> None:
    """Through any mix of loads, adds and merges, every blob is found at one of the
    locations it was given, absent ids are not, and the tables stay exact and sorted."""
    index = MasterIndex()
    index.MERGE_AT = merge_at
    model: dict[BlobType, dict[bytes, set[BlobLocation]]] = {t: {} for t in BlobType}
    sizes_by_pack: dict[bytes, int] = {}
    for how, packs in operations:
        if how == "load":
            index.load(packs)
        else:
            for pack in packs:
                index.add_pack(pack)
        for pack in packs:
            sizes_by_pack.setdefault(pack.pack_id, pack.size)
            for blob_id, offset, length, raw in pack.blobs:
                loc = BlobLocation(pack.pack_id, offset, length, raw)
                model[pack.btype].setdefault(blob_id, set()).add(loc)
    for btype, blobs in model.items():
        for blob_id, locations in blobs.items():
            assert index.has(btype, blob_id)
            assert index.lookup(btype, blob_id) in locations
        iterated = list(index.iter_blobs(btype))
        assert {b for b, _ in iterated} == set(blobs)
        assert all(loc in blobs[b] for b, loc in iterated)
        _check_table(index, btype)
        for absent in (b"\x00" * 32, b"\x7f" * 32, b"\xff" * 32):
            assert index.has(btype, absent) == (absent in blobs)
    assert dict(zip(index.pack_ids, index.pack_sizes, strict=True)) == sizes_by_pack
