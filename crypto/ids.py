"""Keyed BLAKE3 blob ids."""

import blake3

ID_SIZE = 32


def id_hash(id_key: bytes, data: bytes | memoryview) -> bytes:
    """Return the 32-byte keyed BLAKE3 id of ``data``.

    Keyed so that the storage provider cannot confirm known content by its id.
    """
    return blake3.blake3(data, key=id_key).digest()
