"""Index files and the compact in-memory index of blob locations (docs/design.md, index)."""

from __future__ import annotations

import bisect
import struct
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import overload

import msgpack

from repo.errors import DamagedObject
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


class _Ids(Sequence[bytes]):
    """Views a concatenation of 32-byte ids as a sequence, for bisect."""

    def __init__(self, ids: bytes) -> None:
        self._ids = ids

    def __len__(self) -> int:
        return len(self._ids) // ID_SIZE

    @overload
    def __getitem__(self, i: int) -> bytes: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[bytes]: ...
    def __getitem__(self, i: int | slice) -> bytes | Sequence[bytes]:
        if isinstance(i, slice):
            raise TypeError("no slicing")
        return self._ids[i * ID_SIZE : (i + 1) * ID_SIZE]


class _Table:
    """Sorted fixed-width arrays of one blob type: about 52 bytes per blob."""

    def __init__(self, entries: list[tuple[bytes, int, int, int, int]]) -> None:
        entries.sort()
        # A blob indexed twice (two backups stored it concurrently) keeps one place.
        entries = [e for i, e in enumerate(entries) if i == 0 or e[0] != entries[i - 1][0]]
        self.ids = _Ids(b"".join(e[0] for e in entries))
        self.packs = array("I", (e[1] for e in entries))
        self.offsets = array("Q", (e[2] for e in entries))
        self.lengths = array("I", (e[3] for e in entries))
        self.raws = array("I", (e[4] for e in entries))

    def find(self, blob_id: BlobId) -> int:
        i = bisect.bisect_left(self.ids, blob_id)
        if i < len(self.ids) and self.ids[i] == blob_id:
            return i
        return -1


class MasterIndex:
    """Every known blob location: loaded index files plus blobs saved by this process."""

    def __init__(self) -> None:
        self.pack_ids: list[bytes] = []
        self.pack_sizes: list[int] = []
        self._pack_numbers: dict[bytes, int] = {}
        self._tables: dict[BlobType, _Table] = {t: _Table([]) for t in BlobType}
        self._pending: dict[BlobType, dict[BlobId, BlobLocation]] = {t: {} for t in BlobType}

    def _pack_number(self, pack_id: bytes, size: int) -> int:
        number = self._pack_numbers.get(pack_id)
        if number is None:
            number = len(self.pack_ids)
            self._pack_numbers[pack_id] = number
            self.pack_ids.append(pack_id)
            self.pack_sizes.append(size)
        return number

    def load(self, packs: Iterable[IndexedPack]) -> None:
        """Replace the loaded tables with these packs (blobs indexed twice keep one place)."""
        entries: dict[BlobType, list[tuple[bytes, int, int, int, int]]] = {t: [] for t in BlobType}
        for pack in packs:
            number = self._pack_number(pack.pack_id, pack.size)
            rows = entries[pack.btype]
            for blob_id, offset, length, raw in pack.blobs:
                rows.append((blob_id, number, offset, length, raw))
        for btype, rows in entries.items():
            self._tables[btype] = _Table(rows)

    def add_pack(self, pack: IndexedPack) -> None:
        """Record a pack this process wrote."""
        pending = self._pending[pack.btype]
        for blob_id, offset, length, raw in pack.blobs:
            pending[blob_id] = BlobLocation(pack.pack_id, offset, length, raw)
        self._pack_number(pack.pack_id, pack.size)

    def lookup(self, btype: BlobType, blob_id: BlobId) -> BlobLocation | None:
        loc = self._pending[btype].get(blob_id)
        if loc is not None:
            return loc
        table = self._tables[btype]
        i = table.find(blob_id)
        if i < 0:
            return None
        return BlobLocation(
            self.pack_ids[table.packs[i]], table.offsets[i], table.lengths[i], table.raws[i]
        )

    def position(self, btype: BlobType, blob_id: BlobId) -> int:
        """The blob's place among the loaded blobs of its type (for bitmaps); -1 if absent."""
        return self._tables[btype].find(blob_id)

    def loaded_count(self, btype: BlobType) -> int:
        return len(self._tables[btype].ids)

    def has(self, btype: BlobType, blob_id: BlobId) -> bool:
        return blob_id in self._pending[btype] or self._tables[btype].find(blob_id) >= 0

    def count(self, btype: BlobType) -> int:
        return len(self._tables[btype].ids) + len(self._pending[btype])

    def iter_blobs(self, btype: BlobType) -> Iterator[tuple[BlobId, BlobLocation]]:
        table = self._tables[btype]
        for i in range(len(table.ids)):
            yield (
                table.ids[i],
                BlobLocation(
                    self.pack_ids[table.packs[i]], table.offsets[i], table.lengths[i], table.raws[i]
                ),
            )
        yield from self._pending[btype].items()
