"""Key material, key files, Argon2id KDF, AEAD object framing and keyed BLAKE3 ids.

Imports nothing else of hutch. Public names are re-exported here; the
submodules are implementation detail. Each submodule is imported when one of its
names is first used, not with the package: cli/early.py starts Argon2id from
crypto.argon2 before the rest of hutch, AEAD and BLAKE3 included, is loaded.
"""

import importlib

TYPE_CHECKING = False  # importing typing costs start-up time; type checkers know the name
if TYPE_CHECKING:
    from crypto.aead import (
        FORMAT_VERSION,
        HEADER_SIZE,
        NONCE_SIZE,
        OVERHEAD,
        SUBKEY_CONTEXT,
        TAG_SIZE,
        ObjectType,
        seal,
        seal_parts,
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

_HOME = {
    "FORMAT_VERSION": "crypto.aead",
    "HEADER_SIZE": "crypto.aead",
    "NONCE_SIZE": "crypto.aead",
    "OVERHEAD": "crypto.aead",
    "ObjectType": "crypto.aead",
    "SUBKEY_CONTEXT": "crypto.aead",
    "TAG_SIZE": "crypto.aead",
    "seal": "crypto.aead",
    "seal_parts": "crypto.aead",
    "unseal": "crypto.aead",
    "AuthenticationError": "crypto.errors",
    "CryptoError": "crypto.errors",
    "KeyFileError": "crypto.errors",
    "WrongPassword": "crypto.errors",
    "ID_SIZE": "crypto.ids",
    "id_hash": "crypto.ids",
    "CHEAP": "crypto.kdf",
    "DEFAULT_KDF_PARAMS": "crypto.kdf",
    "KdfParams": "crypto.kdf",
    "SALT_SIZE": "crypto.kdf",
    "derive_key": "crypto.kdf",
    "KEYFILE_VERSION": "crypto.keyfile",
    "KeyInfo": "crypto.keyfile",
    "MasterKey": "crypto.keyfile",
    "create_keyfile": "crypto.keyfile",
    "open_keyfile": "crypto.keyfile",
    "read_kdf_params": "crypto.keyfile",
}

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
    "seal_parts",
    "unseal",
]


def __getattr__(name: str) -> object:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'crypto' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
