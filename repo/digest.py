"""SHA-256, which names packs and repository files (docs/design.md, object names)."""

from __future__ import annotations

import os
from typing import Any

from cryptography.hazmat.primitives.hashes import SHA256, Hash

# Below this size the OpenSSL that cryptography already holds hashes the data: hashlib
# would map in the system's OpenSSL too (about 4 MiB resident), and key files, config
# and locks are hashed before Argon2id runs, whose 64 MiB come on top. Above it,
# hashlib, which releases the GIL while it hashes a pack.
_SMALL = 1 << 20


def _hashlib() -> Any:
    import hashlib  # noqa: PLC0415

    return hashlib


def sha256(data: bytes | bytearray | memoryview) -> bytes:
    """The 32-byte SHA-256 digest of data."""
    if len(data) < _SMALL:
        h = Hash(SHA256())
        h.update(data)
        return h.finalize()
    digest: bytes = _hashlib().sha256(data).digest()
    return digest


def sha256_hasher() -> Any:
    """An incremental SHA-256 (hashlib's: it releases the GIL on large updates)."""
    return _hashlib().sha256()


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    """The SHA-256 digest of data as 64 lowercase hex characters."""
    return sha256(data).hex()


# Read back a block at a time to hash a pack file: large enough that the hash releases
# the GIL for long, small enough to stay in the CPU's cache.
DIGEST_BLOCK = 1024 * 1024


def file_digest(fd: int) -> bytes:
    """The SHA-256 of the whole file open as fd (its pack id, for a pack file).

    Read with pread, so whatever else uses fd, its position is no matter. A backup
    hashes each pack once it is finished, on the thread that stores it, not as it is
    written: the writes are made under the lock the compressing threads share, and
    hashing there held up them all (docs/design.md, packs)."""
    hasher = sha256_hasher()
    block = bytearray(DIGEST_BLOCK)
    view = memoryview(block)
    offset = 0
    while n := os.preadv(fd, [block], offset):
        hasher.update(view[:n])
        offset += n
    digest: bytes = hasher.digest()
    return digest
