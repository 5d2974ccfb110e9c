"""Tests for crypto.ids: keyed BLAKE3 blob ids."""

from hypothesis import given
from hypothesis import strategies as st

from crypto import ID_SIZE, id_hash

ID_KEY = bytes(range(32))


def test_id_hash_vector() -> None:
    """The id of b"hutch" under key bytes(range(32)) is pinned."""
    assert (
        id_hash(ID_KEY, b"hutch").hex()
        == "d5a995e0f00f60f86495feb3f879e917a14296e5505c80ba2d9301b0bf898b73"
    )


@given(st.binary(max_size=4096))
def test_id_is_32_bytes_and_accepts_memoryview(data: bytes) -> None:
    """Ids are 32 bytes and do not depend on the buffer type."""
    digest = id_hash(ID_KEY, data)
    assert len(digest) == ID_SIZE == 32
    assert id_hash(ID_KEY, memoryview(data)) == digest


def test_id_depends_on_key() -> None:
    """The same data under another id key has another id."""
    assert id_hash(ID_KEY, b"hutch") != id_hash(bytes(32), b"hutch")
