"""Tests for crypto.keyfile: creating, opening and refusing key files."""

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crypto import (
    CHEAP,
    AuthenticationError,
    KdfParams,
    KeyFileError,
    KeyInfo,
    MasterKey,
    ObjectType,
    WrongPassword,
    create_keyfile,
    derive_key,
    open_keyfile,
    read_kdf_params,
    seal,
)
from crypto import keyfile as keyfile_module

PASSWORD = b"p4ssw0rd-for-tests"
INFO = KeyInfo(hostname="laptop-hutch", username="ada-lovelace", created="2026-11-26T10:00:00Z")


@pytest.fixture(scope="module")
def master() -> MasterKey:
    """One master key shared by the tests of this module."""
    return MasterKey.generate()


@pytest.fixture(scope="module")
def keyfile(master: MasterKey) -> bytes:
    """A key file for ``master`` made with the cheap parameters."""
    return create_keyfile(master, PASSWORD, INFO, CHEAP)


def wrapper(data: bytes) -> dict[str, object]:
    """Decode the plaintext wrapper of a key file."""
    fields: dict[str, object] = msgpack.unpackb(data, raw=False)
    return fields


def encode(fields: object) -> bytes:
    """Encode a (possibly tampered) wrapper as msgpack."""
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return packed


def forbid_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any key derivation inside keyfile fail the test."""

    def fail(*_args: object) -> bytes:
        raise AssertionError("the KDF ran")

    monkeypatch.setattr(keyfile_module, "derive_key", fail)


def test_generate_gives_independent_secrets() -> None:
    """MasterKey.generate returns three distinct random 32-byte secrets."""
    key = MasterKey.generate()
    parts = {key.encryption, key.id_key, key.chunker}
    assert len(parts) == 3
    assert all(len(part) == 32 for part in parts)
    assert MasterKey.generate() != key


def test_master_key_repr_hides_secrets(master: MasterKey) -> None:
    """The repr of a master key does not show its secrets."""
    assert master.encryption.hex() not in repr(master)
    assert repr(master.encryption) not in repr(master)


def test_master_key_rejects_wrong_lengths() -> None:
    """A master key part of the wrong length is refused."""
    with pytest.raises(ValueError, match="32 bytes"):
        MasterKey(bytes(32), bytes(31), bytes(32))


def test_round_trip(master: MasterKey, keyfile: bytes) -> None:
    """A key file opens with its password and yields the master key and info."""
    assert open_keyfile(keyfile, PASSWORD) == (master, INFO)


def test_round_trip_default_params(master: MasterKey) -> None:
    """A key file made with the default Argon2id parameters opens again."""
    data = create_keyfile(master, PASSWORD, INFO)
    assert read_kdf_params(data) == KdfParams()
    assert open_keyfile(data, PASSWORD) == (master, INFO)


def test_wrapper_layout(keyfile: bytes) -> None:
    """The wrapper holds exactly the documented plaintext fields."""
    fields = wrapper(keyfile)
    assert set(fields) == {"version", "kdf", "memory_kib", "iterations", "lanes", "salt", "sealed"}
    assert fields["version"] == 1
    assert fields["kdf"] == "argon2id"
    assert (fields["memory_kib"], fields["iterations"], fields["lanes"]) == (64, 1, 1)
    assert isinstance(fields["salt"], bytes)
    assert len(fields["salt"]) == 16
    assert read_kdf_params(keyfile) == CHEAP


def test_two_key_files_differ_and_both_open(master: MasterKey, keyfile: bytes) -> None:
    """Key files of one master key use fresh salts and each opens with its own password."""
    other = create_keyfile(master, b"another password", INFO, CHEAP)
    assert wrapper(other)["salt"] != wrapper(keyfile)["salt"]
    assert open_keyfile(other, b"another password")[0] == master
    with pytest.raises(WrongPassword):
        open_keyfile(other, PASSWORD)


def test_secrets_and_names_not_in_bytes(master: MasterKey, keyfile: bytes) -> None:
    """Key file bytes reveal neither hostname, username, password nor key material."""
    for secret in (
        INFO.hostname.encode(),
        INFO.username.encode(),
        PASSWORD,
        master.encryption,
        master.id_key,
        master.chunker,
    ):
        assert secret not in keyfile


def test_wrong_password(keyfile: bytes) -> None:
    """A wrong password raises WrongPassword."""
    with pytest.raises(WrongPassword, match="wrong password or no key file matches") as info:
        open_keyfile(keyfile, b"not the password")
    assert isinstance(info.value.__cause__, AuthenticationError)


@pytest.mark.parametrize(
    ("field", "value"),
    [("memory_kib", 128), ("iterations", 2), ("lanes", 2), ("salt", bytes(16))],
)
def test_tampered_wrapper_fails(keyfile: bytes, field: str, value: object) -> None:
    """Changing an authenticated wrapper field makes the key file fail to open."""
    fields = wrapper(keyfile)
    fields[field] = value
    with pytest.raises(WrongPassword):
        open_keyfile(encode(fields), PASSWORD)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("memory_kib", 2**30, "memory"),
        ("memory_kib", 2**64 - 1, "memory"),
        ("iterations", 10**6, "iterations"),
        ("lanes", 1000, "lanes"),
    ],
)
def test_planted_huge_params_refused_before_kdf(
    keyfile: bytes, monkeypatch: pytest.MonkeyPatch, field: str, value: int, message: str
) -> None:
    """Parameters beyond the limits raise KeyFileError without running the KDF."""
    forbid_kdf(monkeypatch)
    fields = wrapper(keyfile)
    fields[field] = value
    with pytest.raises(KeyFileError, match=message):
        open_keyfile(encode(fields), PASSWORD)
    with pytest.raises(KeyFileError):
        read_kdf_params(encode(fields))


def tampered(keyfile: bytes, **changes: object) -> bytes:
    """Re-encode the wrapper of ``keyfile`` with fields changed (None deletes)."""
    fields = wrapper(keyfile)
    for name, value in changes.items():
        if value is None:
            del fields[name]
        else:
            fields[name] = value
    return encode(fields)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"version": 2}, "unsupported version 2"),
        ({"version": None}, "'version' is missing"),
        ({"version": True}, "'version' is not int"),
        ({"kdf": "scrypt"}, "unsupported KDF 'scrypt'"),
        ({"memory_kib": "64"}, "'memory_kib' is not int"),
        ({"lanes": None}, "'lanes' is missing"),
        ({"salt": bytes(8)}, "salt is 8 bytes"),
        ({"salt": "0123456789abcdef"}, "'salt' is not bytes"),
        ({"sealed": b"\x01\x08short"}, "sealed part is truncated"),
        ({"sealed": None}, "'sealed' is missing"),
        ({"extra": 1}, "unexpected fields 'extra'"),
    ],
)
def test_malformed_wrapper(
    keyfile: bytes, monkeypatch: pytest.MonkeyPatch, changes: dict[str, object], message: str
) -> None:
    """A malformed wrapper raises KeyFileError saying what is wrong, before any KDF."""
    forbid_kdf(monkeypatch)
    with pytest.raises(KeyFileError, match=message):
        open_keyfile(tampered(keyfile, **changes), PASSWORD)


def test_sealed_part_of_wrong_type(keyfile: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sealed part that is not a KEY object is a damaged key file, not a wrong password."""
    forbid_kdf(monkeypatch)
    original = wrapper(keyfile)["sealed"]
    assert isinstance(original, bytes)
    sealed = bytearray(original)
    sealed[1] = ObjectType.DATA
    with pytest.raises(KeyFileError, match="not a KEY object"):
        open_keyfile(tampered(keyfile, sealed=bytes(sealed)), PASSWORD)


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage", b"\xc1", encode([1, 2, 3]), encode("text"), encode({1: 2}), bytes(70000)],
)
def test_garbage_is_key_file_error(data: bytes) -> None:
    """Bytes that are not a key file raise KeyFileError."""
    with pytest.raises(KeyFileError):
        open_keyfile(data, PASSWORD)


def test_trailing_bytes_refused(keyfile: bytes) -> None:
    """Extra bytes after the wrapper map are refused."""
    with pytest.raises(KeyFileError, match="not valid msgpack"):
        open_keyfile(keyfile + b"\x00", PASSWORD)


@given(st.binary(max_size=256))
def test_arbitrary_bytes_are_key_file_error(data: bytes) -> None:
    """Arbitrary bytes raise KeyFileError and nothing else."""
    with pytest.raises(KeyFileError):
        read_kdf_params(data)


def forge(payload: object) -> bytes:
    """Seal ``payload`` correctly under PASSWORD, as a buggy or hostile writer could."""
    salt = bytes(16)
    associated = encode([1, "argon2id", 64, 1, 1, salt])
    sealed = seal(derive_key(PASSWORD, salt, CHEAP), ObjectType.KEY, encode(payload), associated)
    return encode(
        {
            "version": 1,
            "kdf": "argon2id",
            "memory_kib": 64,
            "iterations": 1,
            "lanes": 1,
            "salt": salt,
            "sealed": sealed,
        }
    )


GOOD_PAYLOAD = {
    "encryption": bytes(32),
    "id": bytes(32),
    "chunker": bytes(32),
    "hostname": "h",
    "username": "u",
    "created": "2026-11-26T10:00:00Z",
}


def test_forged_key_file_opens() -> None:
    """A key file built from the documented format by hand opens."""
    master, info = open_keyfile(forge(GOOD_PAYLOAD), PASSWORD)
    assert master == MasterKey(bytes(32), bytes(32), bytes(32))
    assert info == KeyInfo("h", "u", "2026-11-26T10:00:00Z")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"encryption": bytes(16)}, "encryption key is 16 bytes"),
        ({"id": bytes(33)}, "id key is 33 bytes"),
        ({"chunker": "x" * 32}, "'chunker' is not bytes"),
        ({"hostname": b"h"}, "'hostname' is not str"),
        ({"extra": 1}, "unexpected fields"),
    ],
)
def test_bad_sealed_material(changes: dict[str, object], message: str) -> None:
    """Authenticated material of the wrong shape raises KeyFileError."""
    with pytest.raises(KeyFileError, match=message):
        open_keyfile(forge(GOOD_PAYLOAD | changes), PASSWORD)


def test_sealed_part_not_a_map() -> None:
    """An authenticated sealed part that is not a map raises KeyFileError."""
    with pytest.raises(KeyFileError, match="not a msgpack map"):
        open_keyfile(forge([1, 2]), PASSWORD)
