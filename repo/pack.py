"""Pack files: blobs of one type, an encrypted header and a trailer (docs/design.md, packs)."""

from __future__ import annotations

import contextlib
import os
import struct
from dataclasses import dataclass

from crypto import AuthenticationError, ObjectType, seal, unseal
from repo.digest import sha256
from repo.errors import DamagedObject
from repo.types import BlobId, BlobType

# docs/design.md, "Pack header": type u8, id 32 bytes, offset u64, length u32, raw length u32.
HEADER_RECORD = struct.Struct("<B32sQII")
# docs/design.md, "Pack trailer": the sealed header's length, u32 little-endian.
TRAILER = struct.Struct("<I")
DEFAULT_PACK_SIZE = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class PackedBlob:
    """One header record: a blob's type, id and place inside its pack."""

    btype: BlobType
    blob_id: BlobId
    offset: int
    length: int
    raw_length: int


class PackBuilder:
    """Accumulates sealed blobs of one type and finishes them into pack bytes."""

    def __init__(self, btype: BlobType) -> None:
        self.btype = btype
        self.blobs: list[PackedBlob] = []
        # One growing buffer: joining parts at the end would hold the pack twice.
        self._data = bytearray()

    @property
    def size(self) -> int:
        return len(self._data)

    def add(self, blob_id: BlobId, sealed: bytes | bytearray, raw_length: int) -> None:
        self.blobs.append(PackedBlob(self.btype, blob_id, self.size, len(sealed), raw_length))
        self._data += sealed

    def finish(self, key: bytes) -> tuple[bytes, bytearray, int]:
        """Return (pack id, pack bytes, sealed header length)."""
        sealed = _header(key, self.blobs)
        data, self._data = self._data, bytearray()
        data += sealed
        data += TRAILER.pack(len(sealed))
        return sha256(data), data, len(sealed)


def _header(key: bytes, blobs: list[PackedBlob]) -> bytearray:
    return seal(
        key,
        ObjectType.PACK_HEADER,
        b"".join(
            HEADER_RECORD.pack(b.btype, b.blob_id, b.offset, b.length, b.raw_length) for b in blobs
        ),
    )


# PackWriter gathers writes smaller than this, up to this many bytes, into one write:
# a system call and a hash update per tiny blob cost more than sealing it.
GATHER = 64 * 1024


class PackWriter:
    """Writes sealed blobs of one type straight into a pack file: a backup never holds
    a pack in a Python buffer (docs/design.md, packs), only up to GATHER bytes of small
    blobs not written yet. The pack id is hashed from the finished file
    (repo.digest.file_digest).

    The caller owns the file descriptor `fd`, and closes it once the pack is stored.
    """

    def __init__(self, btype: BlobType, fd: int) -> None:
        self.btype = btype
        self.fd = fd
        self.blobs: list[PackedBlob] = []
        self.size = 0  # bytes added, gathered ones included
        self._gathered = bytearray()

    def _write(self, data: bytes | bytearray) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    def _flush(self) -> None:
        if self._gathered:
            self._write(self._gathered)
            self._gathered = bytearray()

    def _add_bytes(self, data: bytes | bytearray) -> None:
        if len(data) < GATHER:
            self._gathered += data
            if len(self._gathered) >= GATHER:
                self._flush()
        else:
            self._flush()
            self._write(data)
        self.size += len(data)

    def add(self, blob_id: BlobId, sealed: bytes | bytearray, raw_length: int) -> None:
        self.blobs.append(PackedBlob(self.btype, blob_id, self.size, len(sealed), raw_length))
        self._add_bytes(sealed)

    def finish(self, key: bytes) -> int:
        """Write header and trailer; return the sealed header's length."""
        sealed = _header(key, self.blobs)
        self._add_bytes(sealed)
        self._add_bytes(TRAILER.pack(len(sealed)))
        self._flush()
        return len(sealed)


class Spool:
    """A file a pack is written to before it is stored: a named file (`path`) that
    storing renames into place, or an anonymous in-memory file (`path` is None) that
    storing uploads from. Open for reading too: the finished pack is hashed from it."""

    def __init__(self, fd: int, path: str | None) -> None:
        self.fd = fd
        self.path = path

    @property
    def name(self) -> str:
        return self.path or "pack spool"

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def discard(self) -> None:
        """Close, and remove the file if it is still there (a stored one was renamed)."""
        self.close()
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


def parse_header(key: bytes, plain: bytes, *, name: str) -> list[PackedBlob]:
    """Decode the records of an already-unsealed pack header."""
    if len(plain) % HEADER_RECORD.size:
        raise DamagedObject(f"{name}: header has a partial record")
    out = []
    for btype, blob_id, offset, length, raw in HEADER_RECORD.iter_unpack(plain):
        if btype not in (BlobType.DATA, BlobType.TREE):
            raise DamagedObject(f"{name}: header names unknown blob type {btype}")
        out.append(PackedBlob(BlobType(btype), blob_id, offset, length, raw))
    return out


def read_header(key: bytes, tail: bytes, pack_size: int, *, name: str) -> list[PackedBlob]:
    """Decode a pack's header from the pack's last bytes (`tail` must hold header + trailer)."""
    if len(tail) < TRAILER.size:
        raise DamagedObject(f"{name}: too short for a pack")
    (hlen,) = TRAILER.unpack_from(tail, len(tail) - TRAILER.size)
    if hlen + TRAILER.size > min(len(tail), pack_size):
        raise DamagedObject(f"{name}: header length {hlen} out of range")
    start = len(tail) - TRAILER.size - hlen
    try:
        plain = unseal(key, ObjectType.PACK_HEADER, tail[start : start + hlen], name=name)
    except AuthenticationError as exc:
        raise DamagedObject(str(exc)) from exc
    blobs = parse_header(key, plain, name=name)
    limit = pack_size - TRAILER.size - hlen
    for b in blobs:
        if b.offset + b.length > limit:
            raise DamagedObject(f"{name}: blob {b.blob_id.hex()[:16]} lies outside the pack")
    return blobs
