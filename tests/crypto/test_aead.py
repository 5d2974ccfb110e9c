"""Tests for crypto.aead: object framing, authentication and the pinned format."""

import blake3
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from crypto import (
    FORMAT_VERSION,
    HEADER_SIZE,
    OVERHEAD,
    SUBKEY_CONTEXT,
    AuthenticationError,
    ObjectType,
    seal,
    seal_parts,
    unseal,
)
from crypto.aead import _seal_with_nonce, _subkey

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
VECTOR_NONCE = bytes(range(0x40, 0x58))
VECTOR_BLOB_ID = bytes(range(0x80, 0xA0))
VECTOR_PLAINTEXT = b"hutch object framing"
VECTOR_SUBKEY = "aa4b9ad5643699ec11d7ab4e33ec5d1abef5bad9b23106fa82f6335045262c83"
VECTOR_SEALED = (
    "0101"
    "404142434445464748494a4b4c4d4e4f5051525354555657"
    "c1268d510f52f408b6b6dfc0e5a5ac04cb884aa3"
    "376452caac8ee6b0f44ae9f886b44aaf"
)

object_types = st.sampled_from(ObjectType)
payloads = st.binary(max_size=512)
associated_data = st.binary(max_size=64)


def test_overhead_is_42_bytes() -> None:
    """The framing adds a 26-byte header and a 16-byte tag."""
    assert HEADER_SIZE == 26
    assert OVERHEAD == 42
    assert len(seal(KEY, ObjectType.DATA, b"abc")) == 3 + OVERHEAD


@given(otype=object_types, plaintext=payloads, associated=associated_data)
def test_round_trip(otype: ObjectType, plaintext: bytes, associated: bytes) -> None:
    """Unsealing a sealed object returns the plaintext."""
    sealed = seal(KEY, otype, plaintext, associated)
    assert unseal(KEY, otype, sealed, associated) == plaintext


def test_round_trip_memoryview() -> None:
    """Plaintext and sealed data may be passed as memoryviews."""
    buffer = bytearray(b"..payload..")
    sealed = seal(KEY, ObjectType.TREE, memoryview(buffer)[2:-2])
    framed = memoryview(b"xx" + sealed)[2:]
    assert unseal(KEY, ObjectType.TREE, framed) == b"payload"


def test_header_layout() -> None:
    """A sealed object starts with the format version and the type byte."""
    sealed = seal(KEY, ObjectType.SNAPSHOT, b"x")
    assert sealed[0] == FORMAT_VERSION
    assert sealed[1] == ObjectType.SNAPSHOT


def test_nonces_are_random() -> None:
    """Sealing the same plaintext twice gives different objects."""
    assert seal(KEY, ObjectType.DATA, b"same") != seal(KEY, ObjectType.DATA, b"same")


@given(otype=object_types, plaintext=payloads, associated=associated_data, data=st.data())
def test_flipped_bit_fails(
    otype: ObjectType, plaintext: bytes, associated: bytes, data: st.DataObject
) -> None:
    """Flipping any single bit of a sealed object makes unsealing fail."""
    sealed = bytearray(seal(KEY, otype, plaintext, associated))
    bit = data.draw(st.integers(0, len(sealed) * 8 - 1))
    sealed[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(AuthenticationError, match="blob 3f2a"):
        unseal(KEY, otype, bytes(sealed), associated, name="blob 3f2a")


@given(plaintext=payloads, data=st.data())
def test_truncation_fails(plaintext: bytes, data: st.DataObject) -> None:
    """Any strict prefix of a sealed object fails to unseal."""
    sealed = seal(KEY, ObjectType.DATA, plaintext)
    cut = data.draw(st.integers(0, len(sealed) - 1))
    with pytest.raises(AuthenticationError, match=r"^pack 01: "):
        unseal(KEY, ObjectType.DATA, sealed[:cut], name="pack 01")


def test_short_object_reports_truncated() -> None:
    """An object shorter than the framing overhead is reported as truncated."""
    with pytest.raises(AuthenticationError, match=r"^index 7: truncated$"):
        unseal(KEY, ObjectType.INDEX, b"\x01\x04", name="index 7")


def test_wrong_type_fails() -> None:
    """A DATA object cannot be opened as a TREE."""
    sealed = seal(KEY, ObjectType.DATA, b"chunk")
    with pytest.raises(AuthenticationError, match=r"^tree ab: is a DATA object, expected TREE$"):
        unseal(KEY, ObjectType.TREE, sealed, name="tree ab")


def test_rewritten_type_byte_fails() -> None:
    """Rewriting the type byte to match the expected type still fails authentication."""
    sealed = bytearray(seal(KEY, ObjectType.DATA, b"chunk"))
    sealed[1] = ObjectType.TREE
    with pytest.raises(AuthenticationError, match=r"^tree ab: authentication failed$"):
        unseal(KEY, ObjectType.TREE, bytes(sealed), name="tree ab")


def test_unknown_type_byte_is_named() -> None:
    """An unknown type byte is reported by its value."""
    sealed = bytearray(seal(KEY, ObjectType.DATA, b"chunk"))
    sealed[1] = 99
    with pytest.raises(AuthenticationError, match="is a unknown type 99 object, expected DATA"):
        unseal(KEY, ObjectType.DATA, bytes(sealed))


def test_unsupported_version_fails() -> None:
    """An object of another format version is refused by name."""
    sealed = bytearray(seal(KEY, ObjectType.LOCK, b"lock"))
    sealed[0] = 2
    with pytest.raises(AuthenticationError, match=r"^lock x: unsupported format version 2$"):
        unseal(KEY, ObjectType.LOCK, bytes(sealed), name="lock x")


def test_blob_served_as_another_blob_fails() -> None:
    """A blob sealed under one id does not open under another id."""
    sealed = seal(KEY, ObjectType.DATA, b"chunk", bytes(32))
    with pytest.raises(AuthenticationError, match=r"^blob 01: authentication failed$"):
        unseal(KEY, ObjectType.DATA, sealed, b"\x01" * 32, name="blob 01")


def test_wrong_key_fails() -> None:
    """An object does not open under another key."""
    sealed = seal(KEY, ObjectType.CONFIG, b"config")
    with pytest.raises(AuthenticationError, match="config: authentication failed"):
        unseal(OTHER_KEY, ObjectType.CONFIG, sealed, name="config")


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_key_must_be_32_bytes(size: int) -> None:
    """seal and unseal refuse keys that are not 32 bytes."""
    with pytest.raises(ValueError, match="32 bytes"):
        seal(bytes(size), ObjectType.DATA, b"x")
    with pytest.raises(ValueError, match="32 bytes"):
        unseal(bytes(size), ObjectType.DATA, bytes(OVERHEAD))


def test_subkey_vector() -> None:
    """The per-object subkey is BLAKE3 derive_key over key ‖ first 12 nonce bytes (pinned)."""
    assert SUBKEY_CONTEXT == "hutch 2026-11-26 object subkey v1"
    assert _subkey(KEY, VECTOR_NONCE).hex() == VECTOR_SUBKEY


def test_sealed_object_vector() -> None:
    """A DATA blob sealed with a fixed key and nonce has pinned bytes."""
    sealed = _seal_with_nonce(KEY, ObjectType.DATA, VECTOR_PLAINTEXT, VECTOR_BLOB_ID, VECTOR_NONCE)
    assert sealed.hex() == VECTOR_SEALED
    assert unseal(KEY, ObjectType.DATA, sealed, VECTOR_BLOB_ID) == VECTOR_PLAINTEXT


def test_sealed_object_vector_matches_spec() -> None:
    """The pinned object decrypts with the format rebuilt from the primitives alone."""
    sealed = bytes.fromhex(VECTOR_SEALED)
    nonce = sealed[2:26]
    subkey = blake3.blake3(KEY + nonce[:12], derive_key_context=SUBKEY_CONTEXT).digest()
    aad = bytes([1, ObjectType.DATA]) + VECTOR_BLOB_ID
    assert AESGCM(subkey).decrypt(nonce[12:], sealed[26:], aad) == VECTOR_PLAINTEXT


@given(
    parts=st.lists(st.binary(max_size=3000), min_size=1, max_size=4),
    associated=associated_data,
    big=st.booleans(),
)
def test_sealing_parts_equals_sealing_them_joined(
    parts: list[bytes], associated: bytes, big: bool
) -> None:
    """Fed part by part (streaming GCM), the sealed bytes are those of the joined
    plaintext, byte for byte, and they open to it."""
    if big:  # past seal_parts' streaming threshold
        parts = [*parts, bytes(range(256)) * 300]
    joined = b"".join(parts)
    by_parts = _seal_with_nonce(KEY, ObjectType.DATA, tuple(parts), associated, VECTOR_NONCE)
    whole = _seal_with_nonce(KEY, ObjectType.DATA, joined, associated, VECTOR_NONCE)
    assert by_parts == whole
    sealed = seal_parts(KEY, ObjectType.TREE, tuple(memoryview(p) for p in parts), associated)
    assert unseal(KEY, ObjectType.TREE, sealed, associated) == joined
