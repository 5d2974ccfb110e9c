"""Tests pinning the public names of the crypto package."""

import importlib

import crypto


def test_exported_names() -> None:
    """crypto exports exactly its documented public API."""
    assert set(crypto.__all__) == {
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
    }
    assert all(hasattr(crypto, name) for name in crypto.__all__)


def test_error_hierarchy() -> None:
    """Every crypto error derives from CryptoError."""
    for error in (crypto.AuthenticationError, crypto.WrongPassword, crypto.KeyFileError):
        assert issubclass(error, crypto.CryptoError)


def test_every_exported_name_resolves() -> None:
    """Each public name loads from its submodule on first use (the package imports
    them lazily), and is the submodule's own object."""
    for name in crypto.__all__:
        value = getattr(crypto, name)
        home = importlib.import_module(crypto._HOME[name])
        assert getattr(home, name) is value
