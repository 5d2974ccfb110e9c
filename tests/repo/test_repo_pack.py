"""Tests for repo.pack: building packs, and reading and validating their headers."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import ENC_KEY, ID_KEY, OTHER_KEY, blob_lists, blob_types

from crypto import OVERHEAD, ObjectType, id_hash, seal
from repo import digest, pack
from repo.blob import compress, open_blob, seal_blob
from repo.digest import file_digest
from repo.errors import DamagedObject
from repo.pack import (
    HEADER_RECORD,
    TRAILER,
    PackBuilder,
    PackedBlob,
    PackWriter,
    read_header,
)
from repo.types import BlobType

NAME = "pack 3f2a91c0"


def _build(btype: BlobType, blobs: list[bytes]) -> tuple[bytes, bytes, int]:
    builder = PackBuilder(btype)
    for data in blobs:
        blob_id = id_hash(ID_KEY, data)
        builder.add(blob_id, seal_blob(ENC_KEY, btype, blob_id, compress(data, 3)), len(data))
    return builder.finish(ENC_KEY)


def _read(pack: bytes) -> list[PackedBlob]:
    return read_header(ENC_KEY, pack, len(pack), name=NAME)


SAMPLE = [b"alpha" * 30, b"beta", b"", b"gamma" * 200]


@given(btype=blob_types, blobs=blob_lists)
def test_header_round_trip(btype: BlobType, blobs: list[bytes]) -> None:
    """read_header returns one record per added blob, in order, with type, id and raw length."""
    _, pack, _ = _build(btype, blobs)
    records = _read(pack)
    assert [r.blob_id for r in records] == [id_hash(ID_KEY, b) for b in blobs]
    assert [r.raw_length for r in records] == [len(b) for b in blobs]
    assert all(r.btype is btype for r in records)


@given(btype=blob_types, blobs=blob_lists)
def test_slices_open_to_the_data(btype: BlobType, blobs: list[bytes]) -> None:
    """Each record's offset and length cut out a blob that opens to the original data."""
    _, pack, _ = _build(btype, blobs)
    records = _read(pack)
    for record, data in zip(records, blobs, strict=True):
        stored = pack[record.offset : record.offset + record.length]
        assert open_blob(ENC_KEY, ID_KEY, btype, record.blob_id, stored) == data


@given(blobs=blob_lists)
def test_blobs_are_contiguous_from_zero(blobs: list[bytes]) -> None:
    """Blobs are laid out back to back from offset 0, followed by header and trailer."""
    _, pack, header_length = _build(BlobType.DATA, blobs)
    records = _read(pack)
    offset = 0
    for record in records:
        assert record.offset == offset
        offset += record.length
    assert offset + header_length + TRAILER.size == len(pack)
    assert TRAILER.unpack(pack[-TRAILER.size :]) == (header_length,)


@given(blobs=blob_lists)
def test_pack_id_is_sha256_of_bytes(blobs: list[bytes]) -> None:
    """finish() names the pack by the SHA-256 of its bytes."""
    pack_id, pack, _ = _build(BlobType.DATA, blobs)
    assert pack_id == hashlib.sha256(pack).digest()


@given(blobs=blob_lists)
def test_header_length_matches_records(blobs: list[bytes]) -> None:
    """The sealed header holds one fixed-width record per blob plus the framing overhead."""
    _, _, header_length = _build(BlobType.TREE, blobs)
    assert header_length == len(blobs) * HEADER_RECORD.size + OVERHEAD


def test_header_is_encrypted() -> None:
    """No blob id appears in plaintext anywhere in the pack bytes."""
    blobs = [bytes([i]) * (50 + i) for i in range(20)]
    _, pack, _ = _build(BlobType.DATA, blobs)
    for data in blobs:
        assert id_hash(ID_KEY, data) not in pack
    assert blobs[-1] not in pack  # nor is blob content (compressible, yet sealed)


def test_builder_tracks_size() -> None:
    """PackBuilder.size is the number of blob bytes added so far."""
    builder = PackBuilder(BlobType.DATA)
    assert builder.size == 0
    builder.add(b"\x01" * 32, b"x" * 100, 58)
    builder.add(b"\x02" * 32, b"y" * 7, 3)
    assert builder.size == 107
    assert [(b.offset, b.length) for b in builder.blobs] == [(0, 100), (100, 7)]


def test_read_header_from_tail_only() -> None:
    """The header can be read from just the pack's last bytes, given the full pack size."""
    _, pack, header_length = _build(BlobType.DATA, SAMPLE)
    tail = pack[-(header_length + TRAILER.size) :]
    assert read_header(ENC_KEY, tail, len(pack), name=NAME) == _read(pack)


def test_empty_pack_round_trips() -> None:
    """A pack without blobs has an empty header and still reads back."""
    _, pack, _ = _build(BlobType.DATA, [])
    assert _read(pack) == []


@pytest.mark.parametrize("cut", [1, 3, 4, 5, 20])
def test_pack_truncated_at_the_end_is_damaged(cut: int) -> None:
    """A pack missing its last bytes raises DamagedObject naming the pack."""
    _, pack, _ = _build(BlobType.DATA, SAMPLE)
    with pytest.raises(DamagedObject, match=NAME):
        _read(pack[:-cut])


@pytest.mark.parametrize("cut", [1, 50])
def test_pack_truncated_at_the_start_is_damaged(cut: int) -> None:
    """A pack missing its first bytes has blobs outside the pack: DamagedObject."""
    _, pack, _ = _build(BlobType.DATA, SAMPLE)
    with pytest.raises(DamagedObject, match=NAME):
        _read(pack[cut:])


@pytest.mark.parametrize("size", [0, 1, 3])
def test_too_short_for_a_pack_is_damaged(size: int) -> None:
    """Fewer bytes than a trailer raise DamagedObject."""
    with pytest.raises(DamagedObject, match=NAME):
        read_header(ENC_KEY, b"\x00" * size, size, name=NAME)


@pytest.mark.parametrize("delta", [-1, 1, -40, 10_000, 2**32 - 1])
def test_wrong_header_length_is_damaged(delta: int) -> None:
    """A trailer giving the wrong header length raises DamagedObject."""
    _, pack, header_length = _build(BlobType.DATA, SAMPLE)
    wrong = (header_length + delta) % 2**32
    forged = pack[: -TRAILER.size] + TRAILER.pack(wrong)
    with pytest.raises(DamagedObject, match=NAME):
        _read(forged)


@given(bit=st.integers(0, 7), position=st.integers(min_value=0))
def test_flipped_header_bit_is_damaged(bit: int, position: int) -> None:
    """Flipping any bit of the sealed header raises DamagedObject naming the pack."""
    _, pack, header_length = _build(BlobType.DATA, SAMPLE)
    start = len(pack) - TRAILER.size - header_length
    damaged = bytearray(pack)
    damaged[start + position % header_length] ^= 1 << bit
    with pytest.raises(DamagedObject, match=NAME):
        _read(bytes(damaged))


def test_wrong_key_is_damaged() -> None:
    """A header sealed under another key fails authentication."""
    _, pack, _ = _build(BlobType.DATA, SAMPLE)
    with pytest.raises(DamagedObject, match=NAME):
        read_header(OTHER_KEY, pack, len(pack), name=NAME)


def _forged_pack(blob_bytes: bytes, header: bytes, otype: ObjectType) -> bytes:
    sealed = seal(ENC_KEY, otype, header)
    return blob_bytes + sealed + TRAILER.pack(len(sealed))


def test_header_sealed_as_another_type_is_damaged() -> None:
    """An object of another type in the header's place is refused."""
    header = HEADER_RECORD.pack(BlobType.DATA, b"\x01" * 32, 0, 10, 10)
    pack = _forged_pack(b"\x00" * 10, header, ObjectType.INDEX)
    with pytest.raises(DamagedObject, match=NAME):
        _read(pack)


def test_partial_header_record_is_damaged() -> None:
    """An authentic header whose length is not a whole number of records is refused."""
    header = HEADER_RECORD.pack(BlobType.DATA, b"\x01" * 32, 0, 10, 10) + b"\x00"
    with pytest.raises(DamagedObject, match="partial record"):
        _read(_forged_pack(b"\x00" * 10, header, ObjectType.PACK_HEADER))


def test_unknown_blob_type_in_header_is_damaged() -> None:
    """An authentic header naming a blob type other than data or tree is refused."""
    header = HEADER_RECORD.pack(9, b"\x01" * 32, 0, 10, 10)
    with pytest.raises(DamagedObject, match="unknown blob type 9"):
        _read(_forged_pack(b"\x00" * 10, header, ObjectType.PACK_HEADER))


def test_record_outside_the_pack_is_damaged() -> None:
    """An authentic header placing a blob beyond the blob area is refused."""
    header = HEADER_RECORD.pack(BlobType.DATA, b"\x01" * 32, 5, 10, 10)
    with pytest.raises(DamagedObject, match="outside the pack"):
        _read(_forged_pack(b"\x00" * 14, header, ObjectType.PACK_HEADER))


@given(btype=blob_types, blobs=blob_lists)
def test_pack_writer_streams_the_same_layout_to_a_file(btype: BlobType, blobs: list[bytes]) -> None:
    """PackWriter writes to its file what PackBuilder builds in memory: blobs back to back,
    then header and trailer; the pack id is the SHA-256 of the file's bytes."""
    fd = os.memfd_create("pack-test")
    try:
        writer = PackWriter(btype, fd)
        for data in blobs:
            blob_id = id_hash(ID_KEY, data)
            writer.add(blob_id, seal_blob(ENC_KEY, btype, blob_id, compress(data, 3)), len(data))
        header_length = writer.finish(ENC_KEY)
        pack_id = file_digest(fd)
        pack = os.pread(fd, writer.size + 1, 0)
    finally:
        os.close(fd)
    assert len(pack) == writer.size
    assert pack_id == hashlib.sha256(pack).digest()
    assert TRAILER.unpack(pack[-TRAILER.size :])[0] == header_length
    records = _read(pack)
    assert records == writer.blobs
    for record, data in zip(records, blobs, strict=True):
        stored = pack[record.offset : record.offset + record.length]
        assert open_blob(ENC_KEY, ID_KEY, btype, record.blob_id, stored) == data


@pytest.mark.parametrize(
    ("sizes", "expected_writes"),
    [
        # Stored sizes are size + 43 (marker, framing): 300 of 53 bytes, header and
        # trailer go in one write at the end.
        ([10] * 300, 1),
        # 53 | 70,043 | 48 + 65,043 + 44 | 200,043 | 46 + header + trailer
        ([10, 70_000, 5, 65_000, 1, 200_000, 3], 5),
        # GATHER bytes stored is large already: | 65,536 | 44 | 131,115 | header + trailer
        ([pack.GATHER - 43, 1, pack.GATHER * 2], 4),
    ],
)
def test_pack_writer_gathers_small_writes(
    sizes: list[int], expected_writes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small sealed blobs reach the file a gather at a time, large ones at once; the file
    is the same pack either way, and its id the SHA-256 of its bytes."""
    writes: list[int] = []
    real_write = os.write

    def counting(fd: int, data: bytes) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(pack.os, "write", counting)
    fd = os.memfd_create("pack-test")
    try:
        writer = PackWriter(BlobType.DATA, fd)
        datas = [bytes([i % 251]) * size for i, size in enumerate(sizes)]
        for data in datas:
            blob_id = id_hash(ID_KEY, data)
            writer.add(
                blob_id, seal_blob(ENC_KEY, BlobType.DATA, blob_id, compress(data, 0)), len(data)
            )
        writer.finish(ENC_KEY)
        pack_id = file_digest(fd)
        stored = os.pread(fd, writer.size + 1, 0)
    finally:
        os.close(fd)
    assert len(stored) == writer.size == sum(writes)
    assert pack_id == hashlib.sha256(stored).digest()
    assert len(writes) == expected_writes
    records = _read(stored)
    for record, data in zip(records, datas, strict=True):
        got = stored[record.offset : record.offset + record.length]
        assert open_blob(ENC_KEY, ID_KEY, BlobType.DATA, record.blob_id, got) == data


@pytest.mark.parametrize("size", [0, 1, digest.DIGEST_BLOCK, 2 * digest.DIGEST_BLOCK + 12_345])
def test_file_digest_hashes_the_whole_file(size: int) -> None:
    """A pack's id, hashed back from its file a block at a time, is the SHA-256 of all of
    it, whatever its size against the block."""
    data = os.urandom(size)
    fd = os.memfd_create("digest-test")
    try:
        os.write(fd, data)
        assert file_digest(fd) == hashlib.sha256(data).digest()
    finally:
        os.close(fd)
