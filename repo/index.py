"""Index files and the compact in-memory index of blob locations (docs/design.md, index)."""

from __future__ import annotations

import bisect
import mmap
import operator
import struct
import weakref
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice

import msgpack

from repo.allocator import release_free_memory
from repo.blob import compress, decompress
from repo.errors import DamagedObject, RepoError
from repo.types import ID_SIZE, BlobId, BlobLocation, BlobType

# Version 2 compresses the pack entries; version 1 files, with the entries as a plain
# array, are still read.
INDEX_VERSION = 2
# Index files are small and written once per 16 packs: the better ratio costs nothing.
INDEX_LEVEL = 3
# docs/design.md, "Index files": id 32 bytes, offset u64, length u32, raw length u32.
INDEX_RECORD = struct.Struct("<32sQII")


@dataclass(slots=True, weakref_slot=True)
class IndexedPack:
    """One pack as an index file lists it."""

    pack_id: bytes
    size: int
    header_length: int
    btype: BlobType
    blobs: list[tuple[BlobId, int, int, int]] = field(default_factory=list)


def encode_index(packs: Iterable[IndexedPack], supersedes: Iterable[bytes] = ()) -> bytes:
    """Plaintext of an index file (sealed by the caller)."""
    entries = msgpack.packb(
        [
            [
                p.pack_id,
                p.size,
                p.header_length,
                int(p.btype),
                b"".join(INDEX_RECORD.pack(*b) for b in p.blobs),
            ]
            for p in packs
        ],
        use_bin_type=True,
    )
    data: bytes = msgpack.packb(
        {
            "version": INDEX_VERSION,
            "supersedes": list(supersedes),
            "packs": compress(entries, INDEX_LEVEL),
        },
        use_bin_type=True,
    )
    return data


def decode_index(plain: bytes, *, name: str) -> tuple[list[IndexedPack], list[bytes]]:
    """Decode an index file's plaintext into (packs, superseded index ids)."""
    try:
        doc = msgpack.unpackb(plain, raw=False)
        if doc["version"] == INDEX_VERSION:
            if not isinstance(doc["packs"], bytes):
                raise DamagedObject(f"{name}: malformed index")
            entries = msgpack.unpackb(decompress(doc["packs"], name=name), raw=False)
        elif doc["version"] == 1:
            entries = doc["packs"]
        else:
            raise DamagedObject(f"{name}: unsupported index version {doc['version']}")
        packs = []
        for pack_id, size, hlen, btype, records in entries:
            if len(pack_id) != ID_SIZE or len(records) % INDEX_RECORD.size:
                raise DamagedObject(f"{name}: malformed pack entry")
            blobs = list(INDEX_RECORD.iter_unpack(records))
            packs.append(IndexedPack(bytes(pack_id), size, hlen, BlobType(btype), blobs))
        return packs, [bytes(s) for s in doc["supersedes"]]
    except (KeyError, TypeError, ValueError, msgpack.UnpackException) as exc:
        raise DamagedObject(f"{name}: malformed index") from exc


# In memory (docs/design.md, "Index in memory"): per blob type, one buffer of fixed-width
# records sorted by id: the id's last 31 bytes, pack number (3 bytes), offset (4), length
# (3), raw length (3). 44 bytes a blob, and no Python object per blob. The id's first
# byte is not stored: it picks one of 256 groups; the high half of its second byte one of
# 16 buckets in the group, and a lookup searches one bucket. A location whose numbers do
# not fit is "wide": its record names the pack _WIDE, and the location sits in a dict.
_MEM = struct.Struct("<31s3sI3s3s")
_ID_REST = ID_SIZE - 1
_GROUPS = 256
_PER_GROUP = 16
_BUCKETS = _GROUPS * _PER_GROUP
_WIDE = (1 << 24) - 1
_WIDE_MARK = _WIDE.to_bytes(3, "little")
_WIDE_TAIL = _WIDE_MARK + bytes(_MEM.size - _ID_REST - len(_WIDE_MARK))
# Pack numbers 0 .. 2^24 - 2: the last 3-byte value marks a wide record.
MAX_PACKS = _WIDE
_WHOLE_RECORD = struct.Struct(f"{_MEM.size}s")
_FIRST = operator.itemgetter(0)
_ID_PART = operator.itemgetter(slice(0, _ID_REST))

_Location = tuple[int, int, int, int]  # pack number, offset, length, raw length
_Record = tuple[bytes, bytes, int, bytes, bytes]  # as _MEM unpacks it


def _bucket(blob_id: BlobId) -> int:
    """The bucket of an id: its first 12 bits."""
    return blob_id[0] << 4 | blob_id[1] >> 4


def _lower_bound(data: mmap.mmap, key: bytes, lo: int, hi: int) -> int:
    """The first record number in lo .. hi whose id part is not below key (binary
    search; records lo .. hi are sorted)."""
    size = _MEM.size
    while lo < hi:
        mid = (lo + hi) // 2
        if data[mid * size : mid * size + _ID_REST] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _new_map(size: int) -> mmap.mmap:
    # Private, like the heap: a shared map would count as shared memory, and forked
    # children would write through to it.
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)


def _resized(data: mmap.mmap, size: int) -> mmap.mmap:
    """The map at a new size: in place (mremap), or as a copy where the system has no
    mremap (macOS, the BSDs)."""
    try:
        data.resize(size)
    except (SystemError, OSError):
        copy = _new_map(size)
        kept = min(size, len(data))
        copy[:kept] = data[:kept]
        data.close()
        return copy
    return data


def _split(raw: bytes | bytearray) -> list[bytes]:
    """The records of a buffer, one bytes object each."""
    return list(map(_FIRST, _WHOLE_RECORD.iter_unpack(raw)))


def _sorted_unique(records: list[bytes]) -> list[bytes]:
    """The records sorted, each id once (the smallest record of a repeated id is kept)."""
    records.sort()
    ids = list(map(_ID_PART, records))
    if not any(map(operator.eq, ids, islice(ids, 1, None))):
        return records  # the usual case, found without a loop in Python
    return [r for r, i, before in zip(records, ids, [b"", *ids], strict=False) if i != before]


class _Table:
    """The loaded blobs of one type: records sorted by id in an anonymous memory map of
    exactly their size. The map lies outside the malloc heap, so growing it
    or freeing it never strands heap memory, and it grows in place when blobs are added."""

    def __init__(self) -> None:
        # Made now rather than amid a load's short-lived objects, whose pymalloc arena
        # (1 MiB) a long-lived object would keep. A map cannot be empty: this page is
        # only touched once blobs come.
        self.data = _new_map(mmap.PAGESIZE)
        self.starts = array("Q", bytes(8 * (_BUCKETS + 1)))  # first record of each bucket
        self.wide: dict[BlobId, _Location] = {}
        # Records of blobs this process saved, not inserted yet (MasterIndex.add_pack).
        self.pending: dict[BlobId, bytes] = {}

    def __len__(self) -> int:
        return self.starts[_BUCKETS]

    def records_for(
        self, number: int, blobs: Iterable[tuple[BlobId, int, int, int]]
    ) -> Iterator[tuple[BlobId, bytes]]:
        """Each blob of a pack with its record; the location of a wide one goes to the dict
        (until an insert finds no wide record of the blob, inserted or pending)."""
        packed = number.to_bytes(3, "little")
        pack = _MEM.pack
        for blob_id, offset, length, raw in blobs:
            try:
                length_bytes, raw_bytes = length.to_bytes(3, "little"), raw.to_bytes(3, "little")
                record = pack(blob_id[1:], packed, offset, length_bytes, raw_bytes)
            except (struct.error, OverflowError):  # a number too large for its field
                self.wide.setdefault(blob_id, (number, offset, length, raw))
                record = blob_id[1:] + _WIDE_TAIL
            yield blob_id, record

    def insert(self, staged: list[bytearray]) -> None:
        """Add staged records (unsorted, per group; the buffers are emptied) and keep the
        table sorted. A repeated id keeps one record."""
        size = _MEM.size
        added = sum(map(len, staged))
        if not added:
            return
        starts = self.starts
        end = starts[_BUCKETS] * size + added
        data = self.data = _resized(self.data, end)
        # Written from the end down, so old records move up before anything lands on them.
        write = end
        new_starts = [end] * (_BUCKETS + 1)  # in bytes until the gap below is known
        for g in reversed(range(_GROUPS)):
            new = _split(staged[g])
            staged[g].clear()  # give the staging memory back as we go
            write = self._merge_group(g, new, write, new_starts)
        if write:  # repeated ids were dropped: close the gap they left at the start
            data.move(0, write, end - write)
            self.data = _resized(data, end - write)
        for b, at in enumerate(new_starts):
            starts[b] = (at - write) // size
        if self.wide:  # drop the locations of wide records that lost to a narrow one
            for blob_id in [i for i in self.wide if not self._holds_wide(i)]:
                del self.wide[blob_id]

    def _merge_group(self, group: int, new: list[bytes], write: int, starts: list[int]) -> int:
        """Merge new records into a group (its old records not moved yet), the merged
        group ending at byte `write`; returns the byte where it starts, and sets the byte
        where each of its buckets starts in `starts`."""
        data = self.data
        old = self.starts
        size = _MEM.size
        first = group * _PER_GROUP
        lo, hi = old[first], old[first + _PER_GROUP]
        if new and hi - lo < 8 * len(new):
            # Many new records for the group: sort it whole.
            merged = b"".join(_sorted_unique(_split(data[lo * size : hi * size]) + new))
            write -= len(merged)
            data[write : write + len(merged)] = merged
            # Its buckets start where a binary search of the records' first bytes says.
            firsts = merged[::size]
            for i in range(_PER_GROUP):
                starts[first + i] = write + bisect.bisect_left(firsts, i << 4) * size
            return write
        # A few: each goes where a binary search of its bucket puts it, the records
        # above it moving up in one piece.
        added = [0] * _PER_GROUP
        for record in reversed(_sorted_unique(new)):
            key = record[:_ID_REST]
            bucket = record[0] >> 4
            at = _lower_bound(data, key, old[first + bucket], min(old[first + bucket + 1], hi))
            if at < hi and data[at * size : at * size + _ID_REST] == key:
                continue  # already indexed
            write -= (hi - at) * size
            data.move(write, at * size, (hi - at) * size)
            write -= size
            data[write : write + size] = record
            hi = at
            added[bucket] += 1
        write -= (hi - lo) * size
        data.move(write, lo * size, (hi - lo) * size)
        # Each bucket moved with the group, and up by the records added below it.
        below = write - lo * size
        for i in range(_PER_GROUP):
            starts[first + i] = old[first + i] * size + below
            below += added[i] * size
        return write

    def _holds_wide(self, blob_id: BlobId) -> bool:
        """Whether the blob's record in the table, or its pending one, is wide."""
        pending = self.pending.get(blob_id, b"")
        if pending[_ID_REST : _ID_REST + len(_WIDE_MARK)] == _WIDE_MARK:
            return True
        at = self.find(blob_id)
        return at >= 0 and self._record(at)[1] == _WIDE_MARK

    def _record(self, at: int) -> _Record:
        fields: _Record = _MEM.unpack_from(self.data, at * _MEM.size)
        return fields

    def find(self, blob_id: BlobId) -> int:
        """The record number of a blob, -1 when absent."""
        data = self.data
        key = blob_id[1:]
        size = _MEM.size
        bucket = _bucket(blob_id)
        end = self.starts[bucket + 1]
        at = _lower_bound(data, key, self.starts[bucket], end)
        if at < end and data[at * size : at * size + _ID_REST] == key:
            return at
        return -1

    def location(self, blob_id: BlobId) -> _Location | None:
        at = self.find(blob_id)
        if at < 0:
            return None
        return self._location(blob_id, self._record(at))

    def location_in(self, blob_id: BlobId, record: bytes) -> _Location:
        """The location a record of this table holds (one pending, say)."""
        fields: _Record = _MEM.unpack(record)
        return self._location(blob_id, fields)

    def _location(self, blob_id: BlobId, record: _Record) -> _Location:
        _rest, number, offset, length, raw = record
        if number == _WIDE_MARK:
            return self.wide[blob_id]
        return (
            int.from_bytes(number, "little"),
            offset,
            int.from_bytes(length, "little"),
            int.from_bytes(raw, "little"),
        )

    def records(self) -> Iterator[tuple[BlobId, _Location]]:
        size = _MEM.size
        for g in range(_GROUPS):
            lo, hi = self.starts[g * _PER_GROUP], self.starts[(g + 1) * _PER_GROUP]
            chunk = self.data[lo * size : hi * size]
            first = bytes((g,))
            for record in _MEM.iter_unpack(chunk):
                blob_id = first + record[0]
                yield blob_id, self._location(blob_id, record)


class _ReleaseWatch:
    """Gives free heap memory back to the system once the packs of a load are released.

    The decoded index files a load reads are several times larger than the index, and
    glibc keeps most of the heap they held resident after their owner frees them. One
    pack in EVERY is watched, and the last: however a list (or a dict of lists) of packs
    is freed, fewer than EVERY packs go after the last watched one."""

    EVERY = 64

    def __init__(self) -> None:
        self._refs: list[weakref.ref[IndexedPack]] = []
        self._alive = 0
        self._armed = False
        self._callback = self._released  # one bound method for every ref

    def reset(self) -> None:
        """Forget the packs of an earlier load."""
        self._refs.clear()
        self._alive = 0
        self._armed = False

    def watch(self, pack: IndexedPack) -> None:
        self._refs.append(weakref.ref(pack, self._callback))
        self._alive += 1

    def arm(self) -> None:
        """The load is done (and trimmed): trim again when the watched packs are gone."""
        if self._alive:
            self._armed = True
        else:
            self.reset()

    def _released(self, _ref: weakref.ref[IndexedPack]) -> None:
        self._alive -= 1
        if self._armed and not self._alive:
            self.reset()
            _release_free_memory()


class MasterIndex:
    """Every known blob location: loaded index files plus blobs saved by this process."""

    # Blobs saved by this process wait as records in a dict (some 200 bytes a blob with
    # its id), merged into the tables past this size; a merge moves a table once.
    MERGE_AT = 4096

    def __init__(self) -> None:
        # Packs by number: their ids end to end, and their sizes (compact, like the tables).
        self._pack_ids = bytearray()
        self._pack_sizes = array("Q")
        self._tables: dict[BlobType, _Table] = {t: _Table() for t in BlobType}
        self._release_watch = _ReleaseWatch()

    def _new_pack(self, pack_id: bytes, size: int) -> int:
        number = len(self._pack_sizes)
        if number >= MAX_PACKS:
            raise RepoError(f"more than {MAX_PACKS} packs: too many for this version")
        self._pack_ids += pack_id
        self._pack_sizes.append(size)
        return number

    def _find_pack(self, pack_id: bytes) -> int:
        """A pack's number, -1 if unknown: a scan of the ids, so that no dict of every
        pack id stays in memory for the packs this process adds."""
        at = self._pack_ids.find(pack_id)
        while at > 0 and at % ID_SIZE:  # across two ids; never seen with real ids
            at = self._pack_ids.find(pack_id, at + 1)
        return at // ID_SIZE if at >= 0 else -1

    def _pack_id(self, number: int) -> bytes:
        return bytes(self._pack_ids[number * ID_SIZE : (number + 1) * ID_SIZE])

    @property
    def pack_ids(self) -> list[bytes]:
        return [self._pack_id(n) for n in range(len(self._pack_sizes))]

    @property
    def pack_sizes(self) -> list[int]:
        return list(self._pack_sizes)

    def load(self, packs: Iterable[IndexedPack]) -> None:
        """Add these packs' blobs to the tables."""
        numbers = {self._pack_id(n): n for n in range(len(self._pack_sizes))}
        staged = {t: [bytearray() for _ in range(_GROUPS)] for t in BlobType}
        watch = self._release_watch
        watch.reset()
        pack: IndexedPack | None = None
        for count, pack in enumerate(packs):
            if not count % watch.EVERY:
                watch.watch(pack)
            number = numbers.get(pack.pack_id)
            if number is None:
                number = numbers[pack.pack_id] = self._new_pack(pack.pack_id, pack.size)
            groups = staged[pack.btype]
            for blob_id, record in self._tables[pack.btype].records_for(number, pack.blobs):
                groups[blob_id[0]] += record
        if pack is not None:
            watch.watch(pack)  # the last
        del numbers  # only loads need it; held after, it would cost ~120 bytes a pack
        for btype, groups in staged.items():
            self._tables[btype].insert(groups)
        del staged
        _release_free_memory()
        watch.arm()

    def _merge_pending(self) -> None:
        for table in self._tables.values():
            pending = table.pending
            if not pending:
                continue
            staged = [bytearray() for _ in range(_GROUPS)]
            for blob_id, record in pending.items():
                staged[blob_id[0]] += record
            pending.clear()
            table.insert(staged)

    def add_pack(self, pack: IndexedPack) -> None:
        """Record a pack this process wrote."""
        number = self._find_pack(pack.pack_id)
        if number < 0:
            number = self._new_pack(pack.pack_id, pack.size)
        table = self._tables[pack.btype]
        table.pending.update(table.records_for(number, pack.blobs))
        if sum(len(t.pending) for t in self._tables.values()) > self.MERGE_AT:
            self._merge_pending()

    def lookup(self, btype: BlobType, blob_id: BlobId) -> BlobLocation | None:
        table = self._tables[btype]
        record = table.pending.get(blob_id)
        found = table.location(blob_id) if record is None else table.location_in(blob_id, record)
        if found is None:
            return None
        number, offset, length, raw = found
        return BlobLocation(self._pack_id(number), offset, length, raw)

    def has(self, btype: BlobType, blob_id: BlobId) -> bool:
        table = self._tables[btype]
        return blob_id in table.pending or table.find(blob_id) >= 0

    def position(self, btype: BlobType, blob_id: BlobId) -> int:
        """The blob's place among the loaded blobs of its type (for bitmaps); -1 if absent."""
        return self._tables[btype].find(blob_id)

    def loaded_count(self, btype: BlobType) -> int:
        return len(self._tables[btype])

    def count(self, btype: BlobType) -> int:
        return len(self._tables[btype]) + len(self._tables[btype].pending)

    def iter_blobs(self, btype: BlobType) -> Iterator[tuple[BlobId, BlobLocation]]:
        for blob_id, (number, offset, length, raw) in self._tables[btype].records():
            yield blob_id, BlobLocation(self._pack_id(number), offset, length, raw)
        for blob_id, record in self._tables[btype].pending.items():
            number, offset, length, raw = self._tables[btype].location_in(blob_id, record)
            yield blob_id, BlobLocation(self._pack_id(number), offset, length, raw)


def _release_free_memory() -> None:
    """Give freed heap memory back to the system: glibc keeps it otherwise, and the index
    is the largest thing a command builds."""
    release_free_memory()
