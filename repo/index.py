"""Index files and the compact in-memory index of blob locations (docs/design.md, index)."""

from __future__ import annotations

import contextlib
import ctypes
import struct
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import msgpack

from repo.errors import DamagedObject, RepoError
from repo.types import ID_SIZE, BlobId, BlobLocation, BlobType

INDEX_VERSION = 1
# docs/design.md, "Index files": id 32 bytes, offset u64, length u32, raw length u32.
INDEX_RECORD = struct.Struct("<32sQII")


@dataclass(slots=True)
class IndexedPack:
    """One pack as an index file lists it."""

    pack_id: bytes
    size: int
    header_length: int
    btype: BlobType
    blobs: list[tuple[BlobId, int, int, int]] = field(default_factory=list)


def encode_index(packs: Iterable[IndexedPack], supersedes: Iterable[bytes] = ()) -> bytes:
    """Plaintext of an index file (sealed by the caller)."""
    data: bytes = msgpack.packb(
        {
            "version": INDEX_VERSION,
            "supersedes": list(supersedes),
            "packs": [
                [
                    p.pack_id,
                    p.size,
                    p.header_length,
                    int(p.btype),
                    b"".join(INDEX_RECORD.pack(*b) for b in p.blobs),
                ]
                for p in packs
            ],
        },
        use_bin_type=True,
    )
    return data


def decode_index(plain: bytes, *, name: str) -> tuple[list[IndexedPack], list[bytes]]:
    """Decode an index file's plaintext into (packs, superseded index ids)."""
    try:
        doc = msgpack.unpackb(plain, raw=False)
        if doc["version"] != INDEX_VERSION:
            raise DamagedObject(f"{name}: unsupported index version {doc['version']}")
        packs = []
        for pack_id, size, hlen, btype, records in doc["packs"]:
            if len(pack_id) != ID_SIZE or len(records) % INDEX_RECORD.size:
                raise DamagedObject(f"{name}: malformed pack entry")
            blobs = list(INDEX_RECORD.iter_unpack(records))
            packs.append(IndexedPack(bytes(pack_id), size, hlen, BlobType(btype), blobs))
        return packs, [bytes(s) for s in doc["supersedes"]]
    except (KeyError, TypeError, ValueError, msgpack.UnpackException) as exc:
        raise DamagedObject(f"{name}: malformed index") from exc


# In memory (docs/design.md, "Index in memory"): per blob type, 256 buckets by the id's
# first byte, each one bytes object of sorted fixed-width records: the id's other 31
# bytes, pack number (3 bytes), offset, length, raw length. 46 bytes a blob, and no
# Python object per blob.
_MEM = struct.Struct("<31s3sIII")
_BUCKETS = 256
MAX_PACKS = 1 << 24


class _Table:
    """The loaded blobs of one type: one buffer of records sorted by bucket, then by id,
    allocated once at its final size so no freed staging memory stays resident."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.starts: list[int] = [0] * (_BUCKETS + 1)  # first record of each bucket

    def stage(self) -> list[bytearray]:
        """The records as one staging buffer per bucket (the table is emptied)."""
        size = _MEM.size
        staged = [
            bytearray(self.data[self.starts[b] * size : self.starts[b + 1] * size])
            for b in range(_BUCKETS)
        ]
        self.data = bytearray()
        self.starts = [0] * (_BUCKETS + 1)
        return staged

    def build(self, staged: list[bytearray]) -> None:
        """Sort each bucket, dropping repeated ids (a blob indexed twice keeps one place)."""
        size = _MEM.size
        self.data = bytearray(sum(len(raw) for raw in staged))
        at = 0
        for b, raw in enumerate(staged):
            self.starts[b] = at // size
            records = sorted(raw[i : i + size] for i in range(0, len(raw), size))
            raw.clear()  # release the staging memory bucket by bucket
            for i, record in enumerate(records):
                if i == 0 or record[:31] != records[i - 1][:31]:
                    self.data[at : at + size] = record
                    at += size
        self.starts[_BUCKETS] = at // size
        del self.data[at:]

    def __len__(self) -> int:
        return self.starts[_BUCKETS]

    def find(self, blob_id: BlobId) -> int:
        """The byte offset of a blob's record, -1 when absent."""
        data = self.data
        key = blob_id[1:]
        size = _MEM.size
        lo, hi = self.starts[blob_id[0]], self.starts[blob_id[0] + 1]
        while lo < hi:
            mid = (lo + hi) // 2
            if data[mid * size : mid * size + 31] < key:
                lo = mid + 1
            else:
                hi = mid
        if lo < self.starts[blob_id[0] + 1] and data[lo * size : lo * size + 31] == key:
            return lo * size
        return -1

    def position(self, blob_id: BlobId) -> int:
        at = self.find(blob_id)
        return -1 if at < 0 else at // _MEM.size

    def records(self) -> Iterator[tuple[BlobId, int, int, int, int]]:
        size = _MEM.size
        for b in range(_BUCKETS):
            chunk = self.data[self.starts[b] * size : self.starts[b + 1] * size]
            for rest, pack, offset, length, raw in _MEM.iter_unpack(chunk):
                yield bytes((b,)) + rest, int.from_bytes(pack, "little"), offset, length, raw


class MasterIndex:
    """Every known blob location: loaded index files plus blobs saved by this process."""

    # Blobs saved by this process wait in a dict, merged into the tables past this size.
    MERGE_AT = 100_000

    def __init__(self) -> None:
        # Packs by number: their ids end to end, and their sizes (compact, like the tables).
        self._pack_ids = bytearray()
        self._pack_sizes = array("Q")
        self._pack_numbers: dict[bytes, int] = {}
        self._tables: dict[BlobType, _Table] = {t: _Table() for t in BlobType}
        self._pending: dict[BlobType, dict[BlobId, BlobLocation]] = {t: {} for t in BlobType}

    def _pack_number(self, pack_id: bytes, size: int) -> int:
        if len(self._pack_numbers) < len(self._pack_sizes):  # dropped after a load
            self._pack_numbers = {self._pack_id(n): n for n in range(len(self._pack_sizes))}
        number = self._pack_numbers.get(pack_id)
        if number is None:
            number = len(self._pack_sizes)
            if number >= MAX_PACKS:
                raise RepoError(f"more than {MAX_PACKS} packs: too many for this version")
            self._pack_numbers[pack_id] = number
            self._pack_ids += pack_id
            self._pack_sizes.append(size)
        return number

    def _pack_id(self, number: int) -> bytes:
        return bytes(self._pack_ids[number * ID_SIZE : (number + 1) * ID_SIZE])

    @property
    def pack_ids(self) -> list[bytes]:
        return [self._pack_id(n) for n in range(len(self._pack_sizes))]

    @property
    def pack_sizes(self) -> list[int]:
        return list(self._pack_sizes)

    def _stage(self) -> dict[BlobType, list[bytearray]]:
        """Staging buckets holding the records already in the tables."""
        return {t: self._tables[t].stage() for t in BlobType}

    def load(self, packs: Iterable[IndexedPack]) -> None:
        """Add these packs' blobs to the tables."""
        staged = self._stage()
        for pack in packs:
            number = self._pack_number(pack.pack_id, pack.size)
            buckets = staged[pack.btype]
            packed_number = number.to_bytes(3, "little")
            for blob_id, offset, length, raw in pack.blobs:
                buckets[blob_id[0]] += _MEM.pack(blob_id[1:], packed_number, offset, length, raw)
        for btype, buckets in staged.items():
            self._tables[btype].build(buckets)
        self._pack_numbers = {}  # rebuilt when a pack is added; not worth its memory
        _release_free_memory()

    def _merge_pending(self) -> None:
        staged = self._stage()
        for btype, pending in self._pending.items():
            for blob_id, loc in pending.items():
                number = self._pack_numbers[loc.pack].to_bytes(3, "little")
                staged[btype][blob_id[0]] += _MEM.pack(
                    blob_id[1:], number, loc.offset, loc.length, loc.raw_length
                )
            pending.clear()
        for btype, buckets in staged.items():
            self._tables[btype].build(buckets)

    def add_pack(self, pack: IndexedPack) -> None:
        """Record a pack this process wrote."""
        pending = self._pending[pack.btype]
        self._pack_number(pack.pack_id, pack.size)
        for blob_id, offset, length, raw in pack.blobs:
            pending[blob_id] = BlobLocation(pack.pack_id, offset, length, raw)
        if sum(len(p) for p in self._pending.values()) > self.MERGE_AT:
            self._merge_pending()

    def lookup(self, btype: BlobType, blob_id: BlobId) -> BlobLocation | None:
        loc = self._pending[btype].get(blob_id)
        if loc is not None:
            return loc
        table = self._tables[btype]
        at = table.find(blob_id)
        if at < 0:
            return None
        _rest, pack, offset, length, raw = _MEM.unpack_from(table.data, at)
        return BlobLocation(self._pack_id(int.from_bytes(pack, "little")), offset, length, raw)

    def has(self, btype: BlobType, blob_id: BlobId) -> bool:
        return blob_id in self._pending[btype] or self._tables[btype].find(blob_id) >= 0

    def position(self, btype: BlobType, blob_id: BlobId) -> int:
        """The blob's place among the loaded blobs of its type (for bitmaps); -1 if absent."""
        return self._tables[btype].position(blob_id)

    def loaded_count(self, btype: BlobType) -> int:
        return len(self._tables[btype])

    def count(self, btype: BlobType) -> int:
        return len(self._tables[btype]) + len(self._pending[btype])

    def iter_blobs(self, btype: BlobType) -> Iterator[tuple[BlobId, BlobLocation]]:
        for blob_id, pack, offset, length, raw in self._tables[btype].records():
            yield blob_id, BlobLocation(self._pack_id(pack), offset, length, raw)
        yield from self._pending[btype].items()


def _release_free_memory() -> None:
    """Give the staging memory back to the system: glibc keeps freed heap otherwise,
    and the index is the largest thing a command builds."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL(None).malloc_trim(0)
