"""Key material, key files, Argon2id KDF, AEAD object framing and keyed BLAKE3 ids.

Imports nothing else of hutch. Public names are re-exported here; the
submodules are implementation detail.
"""

from crypto.aead import (
    FORMAT_VERSION,
    HEADER_SIZE,
    NONCE_SIZE,
    OVERHEAD,
    SUBKEY_CONTEXT,
    TAG_SIZE,
    ObjectType,
    seal,
    unseal,
)
from crypto.errors import AuthenticationError, CryptoError, KeyFileError, WrongPassword
from crypto.ids import ID_SIZE, id_hash
from crypto.kdf import CHEAP, DEFAULT_KDF_PARAMS, SALT_SIZE, KdfParams, derive_key
from crypto.keyfile import (
    KEYFILE_VERSION,
    KeyInfo,
    MasterKey,
    create_keyfile,
    open_keyfile,
    read_kdf_params,
)

__all__ = [
    "CHEAP",
    "DEFAULT_KDF_PARAMS",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "ID_SIZE",
    "KEYFILE_VERSION",
    "NONCE_SIZE",
    "OVERHEAD",
    "SALT_SIZE",
    "SUBKEY_CONTEXT",
    "TAG_SIZE",
    "AuthenticationError",
    "CryptoError",
    "KdfParams",
    "KeyFileError",
    "KeyInfo",
    "MasterKey",
    "ObjectType",
    "WrongPassword",
    "create_keyfile",
    "derive_key",
    "id_hash",
    "open_keyfile",
    "read_kdf_params",
    "seal",
    "unseal",
]
