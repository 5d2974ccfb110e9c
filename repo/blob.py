"""Blob codec: compression marker, zstd, sealing and verification (docs/design.md, blobs)."""

from __future__ import annotations

import contextlib
import sys
import threading
from typing import TypeVar

from crypto import AuthenticationError, ObjectType, id_hash, seal, seal_parts, unseal
from repo.errors import DamagedObject
from repo.types import BlobId, BlobType

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

# docs/design.md, "Blobs": the first plaintext byte says how the payload is stored.
MARK_RAW = 0
MARK_ZSTD = 1
_RAW = bytes((MARK_RAW,))
_ZSTD = bytes((MARK_ZSTD,))
_Data = TypeVar("_Data", bytes, bytes | memoryview)
# A blob's object type: looked up, since calling ObjectType(btype) costs some 2 µs a blob.
_OBJECT_TYPES = {btype: ObjectType(btype) for btype in BlobType}
# Level 2 rather than zstd's default 3: on text it compresses a quarter faster (the
# first backup of 300 MiB of text is bound by it on two cores) for 3 % more bytes, and
# the stored size stays below restic's (docs/benchmarks.md).
DEFAULT_LEVEL = 2
# Data under SMALL_FROM is compressed at SMALL_LEVEL at least. There the levels cost
# nearly the same (a blob's fixed costs, sealing, the header record, outweigh it): on
# the `src` corpus's text, level 3 took 6 % longer than 2 on 1 KiB and 14 % on 16 KiB,
# for 1.4-2.3 % fewer bytes; on the many-small-files benchmark's, 4 % fewer. Per byte,
# small blobs are where hutch's framing costs most against restic's.
SMALL_FROM = 16 * 1024
SMALL_LEVEL = 3


# Chunks at least this large are first sampled: compressing random data at level 2
# costs as much as compressing text, for nothing. A sample every SAMPLE_EVERY bytes,
# not three: a chunk that is half random and half text must not be stored raw, and
# small samples on a kept context cost less than three large ones with a new context.
SAMPLE_FROM = 128 * 1024
SAMPLE_SIZE = 4 * 1024
SAMPLE_EVERY = 128 * 1024


def _looks_incompressible(data: bytes | bytearray | memoryview) -> bool:
    """Whether samples (one every SAMPLE_EVERY bytes, and the end) all fail to shrink
    at the fastest level."""
    view = memoryview(data)
    last = len(view) - SAMPLE_SIZE
    compressor = _small_compressor(1)
    for start in [*range(0, last, SAMPLE_EVERY), last]:
        sample = view[start : start + SAMPLE_SIZE]
        packed = compressor.compress(sample, zstd.ZstdCompressor.FLUSH_FRAME)
        if len(packed) < SAMPLE_SIZE * 0.97:
            return False
    return True


# Each thread keeps a zstd context per level for data under SAMPLE_FROM (most files
# are that small): a new context per call costs about as much as compressing a few
# kilobytes, and it holds the GIL. Larger data gets a context of its own, freed at once:
# a kept context keeps tables and buffers sized for the largest input it has seen.
_contexts = threading.local()


def _small_compressor(level: int) -> zstd.ZstdCompressor:
    kept: dict[int, zstd.ZstdCompressor] | None = getattr(_contexts, "by_level", None)
    if kept is None:
        kept = _contexts.by_level = {}
    compressor = kept.get(level)
    if compressor is None:
        compressor = kept[level] = zstd.ZstdCompressor(level=level)
    return compressor


def compress(data: bytes | bytearray | memoryview, level: int) -> bytes:
    """Return `marker ‖ payload`: zstd where it shrinks the data, raw otherwise."""
    marker, payload = compress_parts(data, level)
    return marker + payload


def compress_parts(
    data: bytes | bytearray | memoryview, level: int
) -> tuple[bytes, bytes | bytearray | memoryview]:
    """compress() as its two parts, the marker byte and the payload (the data itself
    when stored raw), so that sealing them need not join them (seal_blob)."""
    if level > 0 and len(data) > 64:
        if len(data) >= SAMPLE_FROM:
            if _looks_incompressible(data):
                return _RAW, data
            packed = zstd.compress(data, level=level)
        else:
            if len(data) < SMALL_FROM:
                level = max(level, SMALL_LEVEL)
            packed = _small_compressor(level).compress(data, zstd.ZstdCompressor.FLUSH_FRAME)
        if len(packed) + 1 < len(data):
            return _ZSTD, packed
    return _RAW, data


def decompress(stored: bytes, *, name: str) -> bytes:
    """Invert compress(); a bad marker or a broken zstd frame is DamagedObject."""
    if not stored:
        raise DamagedObject(f"{name}: empty payload")
    mark = stored[0]
    if mark == MARK_RAW:
        return stored[1:]
    if mark == MARK_ZSTD:
        try:
            return zstd.decompress(memoryview(stored)[1:])
        except zstd.ZstdError as exc:
            raise DamagedObject(f"{name}: corrupt compressed data") from exc
    raise DamagedObject(f"{name}: unknown compression marker {mark}")


def seal_blob(
    key: bytes,
    btype: BlobType,
    blob_id: BlobId,
    payload: bytes | tuple[bytes, bytes | bytearray | memoryview],
) -> bytearray:
    """Seal a compressed payload, or its (marker, payload) parts as compress_parts()
    gives them; the blob id is associated data."""
    if isinstance(payload, tuple):
        return seal_parts(key, _OBJECT_TYPES[btype], payload, associated=blob_id)
    return seal(key, _OBJECT_TYPES[btype], payload, associated=blob_id)


def open_blob(
    enc_key: bytes, id_key: bytes, btype: BlobType, blob_id: BlobId, stored: bytes | memoryview
) -> bytes:
    """Authenticate, decompress and re-hash one blob; any mismatch is DamagedObject."""
    name = f"{'tree' if btype is BlobType.TREE else 'data'} blob {blob_id.hex()[:16]}"
    data = decompress(_unseal_blob(enc_key, btype, blob_id, stored, name), name=name)
    return _verified(id_key, blob_id, data, name)


def open_data_view(
    enc_key: bytes, id_key: bytes, blob_id: BlobId, stored: bytes | memoryview, size: int
) -> bytes | memoryview:
    """open_blob for a data blob of `size` plaintext bytes (as the index says), for
    restore and dump: an uncompressed payload comes back as a view past its marker byte
    (slicing it off would copy every incompressible byte once more), and zstd fills one
    buffer of that size rather than growing a list of blocks and joining them."""
    name = f"data blob {blob_id.hex()[:16]}"
    payload = _unseal_blob(enc_key, BlobType.DATA, blob_id, stored, name)
    data: bytes | memoryview | None = None
    if payload[:1] == _RAW:
        data = memoryview(payload)[1:]
    elif payload[:1] == _ZSTD:
        decompressor = zstd.ZstdDecompressor()
        with contextlib.suppress(zstd.ZstdError):  # decompress() below says what
            out = decompressor.decompress(memoryview(payload)[1:], max_length=size)
            if decompressor.eof and not decompressor.unused_data and len(out) == size:
                data = out
    if data is None:  # anything unusual (another size, several frames, damage)
        data = decompress(payload, name=name)
    return _verified(id_key, blob_id, data, name)


def _unseal_blob(
    enc_key: bytes, btype: BlobType, blob_id: BlobId, stored: bytes | memoryview, name: str
) -> bytes:
    try:
        return unseal(enc_key, _OBJECT_TYPES[btype], stored, associated=blob_id, name=name)
    except AuthenticationError as exc:
        raise DamagedObject(str(exc)) from exc


def _verified(id_key: bytes, blob_id: BlobId, data: _Data, name: str) -> _Data:
    if id_hash(id_key, data) != blob_id:
        raise DamagedObject(f"{name}: content does not match its id")
    return data
