"""Object framing: sealing and unsealing repository objects with AES-256-GCM.

Stored bytes (docs/design.md, "Key material and crypto"):
``version (1) ‖ type (1) ‖ nonce (24) ‖ ciphertext ‖ GCM tag (16)``.
"""

import enum
import os

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crypto.errors import AuthenticationError

FORMAT_VERSION = 1


class ObjectType(enum.IntEnum):
    """The type byte of a framed object; bound into the associated data."""

    DATA = 1
    TREE = 2
    PACK_HEADER = 3
    INDEX = 4
    SNAPSHOT = 5
    CONFIG = 6
    LOCK = 7
    KEY = 8


KEY_SIZE = 32
NONCE_SIZE = 24
# The first half of the nonce derives a per-object subkey and the second half
# is the GCM nonce: random 96-bit GCM nonces under one key are only safe for
# about 2^32 messages, a per-object subkey lifts that limit.
_SUBKEY_NONCE_SIZE = 12
TAG_SIZE = 16
HEADER_SIZE = 2 + NONCE_SIZE
OVERHEAD = HEADER_SIZE + TAG_SIZE
# Changing this string changes every subkey, i.e. the on-disk format.
SUBKEY_CONTEXT = "hutch 2026-11-26 object subkey v1"
# seal_parts() joins smaller plaintexts: a streaming GCM object costs more to set up
# than copying them.
_STREAM_FROM = 64 * 1024


def seal(
    key: bytes, otype: ObjectType, plaintext: bytes | memoryview, associated: bytes = b""
) -> bytearray:
    """Encrypt and authenticate ``plaintext`` as an object of type ``otype``."""
    return _seal_with_nonce(key, otype, plaintext, associated, os.urandom(NONCE_SIZE))


def seal_parts(
    key: bytes,
    otype: ObjectType,
    parts: tuple[bytes | bytearray | memoryview, ...],
    associated: bytes = b"",
) -> bytearray:
    """seal() of the parts' concatenation, without joining them first: a blob's marker
    byte in front of a megabyte of incompressible data would cost a copy of it all."""
    if sum(map(len, parts)) < _STREAM_FROM:
        return seal(key, otype, b"".join(parts), associated)
    return _seal_with_nonce(key, otype, parts, associated, os.urandom(NONCE_SIZE))


def unseal(
    key: bytes,
    otype: ObjectType,
    data: bytes | memoryview,
    associated: bytes = b"",
    *,
    name: str = "object",
) -> bytes:
    """Return the plaintext of a sealed object; raise AuthenticationError naming it otherwise."""
    _check_key(key)
    view = memoryview(data)
    if len(view) < OVERHEAD:
        raise AuthenticationError(f"{name}: truncated")
    version, type_byte = view[0], view[1]
    if version != FORMAT_VERSION:
        raise AuthenticationError(f"{name}: unsupported format version {version}")
    if type_byte != otype:
        actual = _type_name(type_byte)
        raise AuthenticationError(f"{name}: is a {actual} object, expected {otype.name}")
    nonce = bytes(view[2:HEADER_SIZE])
    aead = AESGCM(_subkey(key, nonce))
    try:
        return aead.decrypt(nonce[_SUBKEY_NONCE_SIZE:], view[HEADER_SIZE:], _aad(otype, associated))
    except InvalidTag as exc:
        raise AuthenticationError(f"{name}: authentication failed") from exc


def _seal_with_nonce(
    key: bytes,
    otype: ObjectType,
    plaintext: bytes | memoryview | tuple[bytes | bytearray | memoryview, ...],
    associated: bytes,
    nonce: bytes,
) -> bytearray:
    """Seal with a caller-chosen nonce; only seal(), seal_parts() and the format test
    vectors use this. ``plaintext`` is one buffer or the parts of one."""
    _check_key(key)
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"nonce must be {NONCE_SIZE} bytes, got {len(nonce)}")
    subkey = _subkey(key, nonce)
    parts = plaintext if isinstance(plaintext, tuple) else (plaintext,)
    # Encrypted in place behind the header: joining header and ciphertext afterwards
    # would copy every stored byte once more.
    out = bytearray(HEADER_SIZE + sum(map(len, parts)) + TAG_SIZE)
    out[0], out[1] = FORMAT_VERSION, otype
    out[2:HEADER_SIZE] = nonce
    view = memoryview(out)
    if len(parts) == 1:
        AESGCM(subkey).encrypt_into(
            nonce[_SUBKEY_NONCE_SIZE:], parts[0], _aad(otype, associated), view[HEADER_SIZE:]
        )
        return out
    # The same GCM, fed part by part: each update writes exactly its part's length,
    # and the buffer after it has the 15 spare bytes update_into asks for (the tag's).
    encryptor = Cipher(algorithms.AES(subkey), modes.GCM(nonce[_SUBKEY_NONCE_SIZE:])).encryptor()
    encryptor.authenticate_additional_data(_aad(otype, associated))
    at = HEADER_SIZE
    for part in parts:
        at += encryptor.update_into(part, view[at:])
    encryptor.finalize()
    view[at:] = encryptor.tag
    return out


def _subkey(key: bytes, nonce: bytes) -> bytes:
    """Derive the per-object AES-256 key from the encryption key and the nonce's first half."""
    material = key + nonce[:_SUBKEY_NONCE_SIZE]
    return blake3.blake3(material, derive_key_context=SUBKEY_CONTEXT).digest()


def _aad(otype: ObjectType, associated: bytes) -> bytes:
    # Binding version and type stops an object being served as another kind;
    # callers add the blob id so one blob cannot be served as another.
    return bytes([FORMAT_VERSION, otype]) + associated


def _check_key(key: bytes) -> None:
    if len(key) != KEY_SIZE:
        raise ValueError(f"encryption key must be {KEY_SIZE} bytes, got {len(key)}")


def _type_name(type_byte: int) -> str:
    try:
        return ObjectType(type_byte).name
    except ValueError:
        return f"unknown type {type_byte}"
