"""Tests for repo.blob: the compression marker, zstd, sealing and verification of blobs."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import ENC_KEY, ID_KEY, OTHER_KEY, blob_types, compressible, payloads

from crypto import id_hash
from repo.blob import (
    MARK_RAW,
    MARK_ZSTD,
    SMALL_FROM,
    SMALL_LEVEL,
    compress,
    compress_parts,
    decompress,
    open_blob,
    open_data_view,
    seal_blob,
)
from repo.errors import DamagedObject
from repo.types import BlobType

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

NAME = "data blob 0123456789abcdef"


def _sealed(btype: BlobType, data: bytes) -> tuple[bytes, bytes]:
    blob_id = id_hash(ID_KEY, data)
    return blob_id, seal_blob(ENC_KEY, btype, blob_id, compress(data, 3))


@given(data=payloads | compressible, level=st.integers(0, 5))
def test_compress_round_trip(data: bytes, level: int) -> None:
    """decompress(compress(x)) == x for every level, including 0 (no compression)."""
    assert decompress(compress(data, level), name=NAME) == data


@given(data=payloads | compressible, level=st.integers(1, 5))
def test_compress_never_grows_by_more_than_the_marker(data: bytes, level: int) -> None:
    """The stored payload is at most one byte longer than the data."""
    assert len(compress(data, level)) <= len(data) + 1


@given(inputs=st.lists(st.tuples(payloads | compressible, st.integers(1, 5)), max_size=6))
def test_kept_contexts_store_what_a_fresh_context_stores(inputs: list[tuple[bytes, int]]) -> None:
    """Small data goes through a context the thread keeps; whatever it compressed
    before, at whatever level, the stored bytes are those of a one-shot zstd call."""
    for data, level in [*inputs, (bytes(300_000), 3), *inputs]:
        stored = compress(data, level)
        if stored[0] == MARK_ZSTD:
            used = max(level, SMALL_LEVEL) if len(data) < SMALL_FROM else level
            assert stored[1:] == zstd.compress(data, level=used)


@pytest.mark.parametrize("size", [4000, SMALL_FROM - 1, SMALL_FROM, 100_000])
def test_small_data_is_compressed_at_the_small_level_at_least(size: int) -> None:
    """Under SMALL_FROM the configured level 2 becomes SMALL_LEVEL (3), whose output
    differs from level 2's on text; from SMALL_FROM on, level 2 is level 2."""
    words = b" ".join(b"%d:%s" % (i, b"backup restore chunk pack"[i % 20 :]) for i in range(20_000))
    data = words[:size]
    stored = compress(data, 2)
    assert stored[0] == MARK_ZSTD
    expected = SMALL_LEVEL if size < SMALL_FROM else 2
    assert stored[1:] == zstd.compress(data, level=expected)
    assert zstd.compress(data, level=2) != zstd.compress(data, level=SMALL_LEVEL)
    # A higher configured level is kept.
    assert compress(data, 5)[1:] == zstd.compress(data, level=5)


def test_threads_compress_alike() -> None:
    """Two threads compressing at once get the bytes one thread gets."""
    texts = [b"line %d of a text file\n" % i * (i % 50 + 1) for i in range(400)]
    expected = [compress(t, 3) for t in texts]
    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(lambda t: compress(t, 3), texts)) == expected


@given(data=compressible)
def test_compressible_data_uses_zstd(data: bytes) -> None:
    """Repetitive data longer than 64 bytes is stored zstd-compressed and smaller."""
    stored = compress(data, 3)
    assert stored[0] == MARK_ZSTD
    assert len(stored) < len(data)


def test_random_bytes_use_the_raw_marker() -> None:
    """Data zstd cannot shrink (random bytes) is stored raw, behind the raw marker."""
    data = os.urandom(4096)
    assert compress(data, 3) == bytes([MARK_RAW]) + data


def test_level_zero_stores_raw() -> None:
    """Level 0 means no compression, even for compressible data."""
    assert compress(b"a" * 1000, 0) == bytes([MARK_RAW]) + b"a" * 1000


def test_compress_accepts_memoryview() -> None:
    """compress() takes a memoryview as well as bytes."""
    data = b"xyz" * 100
    assert decompress(compress(memoryview(data), 3), name=NAME) == data


@pytest.mark.parametrize("mark", [2, 7, 255])
def test_unknown_marker_is_damaged(mark: int) -> None:
    """A compression marker other than raw or zstd raises DamagedObject naming the blob."""
    with pytest.raises(DamagedObject, match=f"{NAME}: unknown compression marker {mark}"):
        decompress(bytes([mark]) + b"payload", name=NAME)


def test_empty_payload_is_damaged() -> None:
    """A payload without even a marker byte raises DamagedObject."""
    with pytest.raises(DamagedObject, match=NAME):
        decompress(b"", name=NAME)


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda z: z[: len(z) // 2], id="truncated"),
        pytest.param(lambda z: b"\x00\x00\x00\x00" + z[4:], id="bad-magic"),
        pytest.param(lambda z: z + b"trailing junk", id="trailing-junk"),
        pytest.param(lambda z: b"not zstd at all", id="garbage"),
    ],
)
def test_corrupt_zstd_frame_is_damaged(mangle: object) -> None:
    """A broken zstd frame behind the zstd marker raises DamagedObject naming the blob."""
    stored = compress(b"hello world " * 100, 3)
    assert stored[0] == MARK_ZSTD
    broken = bytes([MARK_ZSTD]) + mangle(stored[1:])  # type: ignore[operator]
    with pytest.raises(DamagedObject, match=NAME):
        decompress(broken, name=NAME)


@given(btype=blob_types, data=payloads | compressible)
def test_seal_open_round_trip(btype: BlobType, data: bytes) -> None:
    """open_blob returns the data a blob was sealed from."""
    blob_id, stored = _sealed(btype, data)
    assert open_blob(ENC_KEY, ID_KEY, btype, blob_id, stored) == data
    assert open_blob(ENC_KEY, ID_KEY, btype, blob_id, memoryview(stored)) == data


def test_open_with_wrong_id_is_damaged() -> None:
    """A blob served under another blob's id fails and the error names the requested id."""
    _, stored = _sealed(BlobType.DATA, b"first")
    other = id_hash(ID_KEY, b"second")
    with pytest.raises(DamagedObject, match=f"data blob {other.hex()[:16]}"):
        open_blob(ENC_KEY, ID_KEY, BlobType.DATA, other, stored)


@pytest.mark.parametrize(
    ("stored_as", "read_as"),
    [(BlobType.DATA, BlobType.TREE), (BlobType.TREE, BlobType.DATA)],
)
def test_open_with_wrong_type_is_damaged(stored_as: BlobType, read_as: BlobType) -> None:
    """A data blob cannot be read as a tree blob, nor the other way round."""
    blob_id, stored = _sealed(stored_as, b"[1, []]")
    with pytest.raises(DamagedObject, match=blob_id.hex()[:16]):
        open_blob(ENC_KEY, ID_KEY, read_as, blob_id, stored)


def test_open_with_wrong_type_byte_rewritten_is_damaged() -> None:
    """Rewriting the type byte of a stored blob still fails authentication."""
    blob_id, stored = _sealed(BlobType.DATA, b"some data")
    forged = stored[:1] + bytes([BlobType.TREE]) + stored[2:]
    with pytest.raises(DamagedObject, match=blob_id.hex()[:16]):
        open_blob(ENC_KEY, ID_KEY, BlobType.TREE, blob_id, forged)


@given(data=payloads, position=st.integers(min_value=0), bit=st.integers(0, 7))
def test_flipped_bit_is_damaged(data: bytes, position: int, bit: int) -> None:
    """Flipping any bit of a stored blob raises DamagedObject naming the blob."""
    blob_id, stored = _sealed(BlobType.DATA, data)
    damaged = bytearray(stored)
    damaged[position % len(damaged)] ^= 1 << bit
    with pytest.raises(DamagedObject, match=f"data blob {blob_id.hex()[:16]}"):
        open_blob(ENC_KEY, ID_KEY, BlobType.DATA, blob_id, bytes(damaged))


def test_truncated_blob_is_damaged() -> None:
    """A stored blob cut short raises DamagedObject."""
    blob_id, stored = _sealed(BlobType.TREE, b"tree bytes")
    for cut in (0, 10, len(stored) - 1):
        with pytest.raises(DamagedObject, match=f"tree blob {blob_id.hex()[:16]}"):
            open_blob(ENC_KEY, ID_KEY, BlobType.TREE, blob_id, stored[:cut])


def test_wrong_encryption_key_is_damaged() -> None:
    """A blob sealed under another key fails authentication."""
    blob_id, stored = _sealed(BlobType.DATA, b"secret")
    with pytest.raises(DamagedObject):
        open_blob(OTHER_KEY, ID_KEY, BlobType.DATA, blob_id, stored)


def test_content_not_matching_id_is_damaged() -> None:
    """A correctly sealed blob whose plaintext does not hash to its id is rejected."""
    claimed = id_hash(ID_KEY, b"what the id says")
    stored = seal_blob(ENC_KEY, BlobType.DATA, claimed, compress(b"what is stored", 3))
    with pytest.raises(DamagedObject, match="content does not match its id"):
        open_blob(ENC_KEY, ID_KEY, BlobType.DATA, claimed, stored)


def test_id_key_matters() -> None:
    """Opening with another id key fails the id check."""
    blob_id, stored = _sealed(BlobType.DATA, b"data")
    with pytest.raises(DamagedObject, match="does not match its id"):
        open_blob(ENC_KEY, OTHER_KEY, BlobType.DATA, blob_id, stored)


def _stored_data(data: bytes, level: int = 3) -> tuple[bytes, bytes]:
    blob_id = id_hash(ID_KEY, data)
    return blob_id, bytes(seal_blob(ENC_KEY, BlobType.DATA, blob_id, compress(data, level)))


def test_open_data_view_of_raw_and_zstd_blobs() -> None:
    """Stored raw, the plaintext comes back as a view (no copy); stored with zstd, as
    bytes of the size the index gives; both equal to what open_blob returns."""
    for data, kind in ((os.urandom(5000), memoryview), (b"text " * 2000, bytes)):
        blob_id, stored = _stored_data(data)
        got = open_data_view(ENC_KEY, ID_KEY, blob_id, stored, len(data))
        assert isinstance(got, kind)
        assert bytes(got) == open_blob(ENC_KEY, ID_KEY, BlobType.DATA, blob_id, stored) == data


@pytest.mark.parametrize("size", [0, 9999, 10001, 1 << 20])
def test_open_data_view_with_another_size_takes_the_general_path(size: int) -> None:
    """A size other than the blob's own (never written so, but not trusted) still gives
    the blob's authentic bytes, checked against its id."""
    data = b"text " * 2000
    blob_id, stored = _stored_data(data)
    assert open_data_view(ENC_KEY, ID_KEY, blob_id, stored, size) == data


def test_open_data_view_names_damage() -> None:
    """A broken zstd frame, a flipped bit and content not matching the id are each
    DamagedObject naming the blob."""
    data = b"text " * 2000
    blob_id = id_hash(ID_KEY, data)
    broken = seal_blob(ENC_KEY, BlobType.DATA, blob_id, bytes((MARK_ZSTD,)) + b"not zstd")
    with pytest.raises(DamagedObject, match=f"{blob_id.hex()[:16]}: corrupt compressed"):
        open_data_view(ENC_KEY, ID_KEY, blob_id, bytes(broken), len(data))
    _, stored = _stored_data(data)
    flipped = bytearray(stored)
    flipped[40] ^= 1
    with pytest.raises(DamagedObject, match=blob_id.hex()[:16]):
        open_data_view(ENC_KEY, ID_KEY, blob_id, bytes(flipped), len(data))
    other_id = id_hash(ID_KEY, b"other")
    lying = seal_blob(ENC_KEY, BlobType.DATA, other_id, compress(data, 3))
    with pytest.raises(DamagedObject, match="does not match its id"):
        open_data_view(ENC_KEY, ID_KEY, other_id, bytes(lying), len(data))


@given(data=payloads, level=st.integers(0, 5))
def test_compress_parts_are_compress_split(data: bytes, level: int) -> None:
    """compress_parts gives compress()'s marker and payload, unjoined."""
    marker, payload = compress_parts(data, level)
    assert marker + bytes(payload) == compress(data, level)


def test_a_chunk_random_only_where_three_samples_fall_is_compressed() -> None:
    """Text between random start, middle and end still gets the chunk compressed."""
    size = 1280 * 1024
    text = b"".join(b"line %d of a text file, %d\n" % (i, i * i) for i in range(20_000))
    data = bytearray(os.urandom(size))
    data[96 * 1024 : 96 * 1024 + 384 * 1024] = text[: 384 * 1024]
    marker, payload = compress_parts(bytes(data), 2)
    assert marker == bytes([MARK_ZSTD])
    assert len(payload) < size - 256 * 1024


def test_an_incompressible_chunk_is_sealed_without_a_copy() -> None:
    """A raw chunk's payload is the chunk itself, and sealed from the parts it opens."""
    data = os.urandom(1024 * 1024)
    marker, payload = compress_parts(data, 3)
    assert marker == bytes([MARK_RAW])
    assert payload is data
    blob_id = id_hash(ID_KEY, data)
    stored = seal_blob(ENC_KEY, BlobType.DATA, blob_id, (marker, payload))
    assert open_blob(ENC_KEY, ID_KEY, BlobType.DATA, blob_id, bytes(stored)) == data
