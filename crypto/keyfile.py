"""Key files: the master key sealed under a password-derived key, and their wrapper format.

A key file is a msgpack map of plaintext wrapper fields (version, KDF name and
parameters, salt) plus ``sealed``, the KEY object holding the master key and
who created the key file (docs/design.md, "Key material and crypto").
"""

import os
from dataclasses import dataclass, field
from typing import TypeVar

import msgpack

from crypto.aead import FORMAT_VERSION, OVERHEAD, ObjectType, seal, unseal
from crypto.errors import AuthenticationError, KeyFileError, WrongPassword
from crypto.kdf import DEFAULT_KDF_PARAMS, SALT_SIZE, KdfParams, derive_key

KEYFILE_VERSION = 1
MASTER_KEY_PART_SIZE = 32
# A key file is well under 1 KiB; refusing anything bigger bounds what the
# msgpack decoder will allocate for a planted file.
MAX_KEYFILE_SIZE = 64 * 1024
_KDF_NAME = "argon2id"
_WRAPPER_FIELDS = frozenset(
    {"version", "kdf", "memory_kib", "iterations", "lanes", "salt", "sealed"}
)
_SEALED_FIELDS = frozenset({"encryption", "id", "chunker", "hostname", "username", "created"})

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class MasterKey:
    """The three independent secrets of a repository."""

    # repr=False: a logged or printed MasterKey must not leak the secrets.
    encryption: bytes = field(repr=False)
    id_key: bytes = field(repr=False)
    chunker: bytes = field(repr=False)  # reserved for keyed chunking

    def __post_init__(self) -> None:
        for name in ("encryption", "id_key", "chunker"):
            if len(getattr(self, name)) != MASTER_KEY_PART_SIZE:
                raise ValueError(f"master key {name} must be {MASTER_KEY_PART_SIZE} bytes")

    @classmethod
    def generate(cls) -> "MasterKey":
        """Return fresh random key material."""
        return cls(*(os.urandom(MASTER_KEY_PART_SIZE) for _ in range(3)))


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """Who created a key file and when; kept inside the sealed part."""

    hostname: str
    username: str
    created: str  # RFC 3339, as given by the caller


@dataclass(frozen=True, slots=True)
class _Wrapper:
    """The parsed plaintext fields of a key file."""

    params: KdfParams
    salt: bytes
    sealed: bytes


def create_keyfile(
    master: MasterKey, password: bytes, info: KeyInfo, params: KdfParams = DEFAULT_KDF_PARAMS
) -> bytes:
    """Seal ``master`` and ``info`` under ``password`` and return the key file bytes."""
    salt = os.urandom(SALT_SIZE)
    payload = _pack(
        {
            "encryption": master.encryption,
            "id": master.id_key,
            "chunker": master.chunker,
            "hostname": info.hostname,
            "username": info.username,
            "created": info.created,
        }
    )
    sealed = seal(
        derive_key(password, salt, params), ObjectType.KEY, payload, _associated(params, salt)
    )
    data = _pack(
        {
            "version": KEYFILE_VERSION,
            "kdf": _KDF_NAME,
            "memory_kib": params.memory_kib,
            "iterations": params.iterations,
            "lanes": params.lanes,
            "salt": salt,
            "sealed": sealed,
        }
    )
    if len(data) > MAX_KEYFILE_SIZE:
        raise ValueError("key info too long: the key file would not open again")
    return data


def open_keyfile(data: bytes, password: bytes) -> tuple[MasterKey, KeyInfo]:
    """Return the master key and key info sealed in ``data`` under ``password``."""
    wrapper = _parse_wrapper(data)
    key = derive_key(password, wrapper.salt, wrapper.params)
    associated = _associated(wrapper.params, wrapper.salt)
    try:
        payload = unseal(key, ObjectType.KEY, wrapper.sealed, associated, name="key file")
    except AuthenticationError as exc:
        raise WrongPassword("wrong password or no key file matches") from exc
    return _parse_sealed(payload)


def read_kdf_params(data: bytes) -> KdfParams:
    """Return the KDF parameters of a key file without deriving anything."""
    return _parse_wrapper(data).params


def _associated(params: KdfParams, salt: bytes) -> bytes:
    # The plaintext wrapper fields are authenticated, so editing the KDF
    # parameters or the salt in a key file makes it fail to open.
    return _pack(
        [KEYFILE_VERSION, _KDF_NAME, params.memory_kib, params.iterations, params.lanes, salt]
    )


def _parse_wrapper(data: bytes) -> _Wrapper:
    fields = _unpack_map(data, "key file")
    version = _field(fields, "version", int, "key file")
    if version != KEYFILE_VERSION:
        raise KeyFileError(f"key file: unsupported version {version}")
    kdf = _field(fields, "kdf", str, "key file")
    if kdf != _KDF_NAME:
        raise KeyFileError(f"key file: unsupported KDF {kdf!r}")
    _reject_unexpected(fields, _WRAPPER_FIELDS, "key file")
    params = KdfParams(
        memory_kib=_field(fields, "memory_kib", int, "key file"),
        iterations=_field(fields, "iterations", int, "key file"),
        lanes=_field(fields, "lanes", int, "key file"),
    )
    # Checked here, before any key derivation, so a planted key file asking
    # for huge parameters is refused instead of run.
    params.check()
    salt = _field(fields, "salt", bytes, "key file")
    if len(salt) != SALT_SIZE:
        raise KeyFileError(f"key file: salt is {len(salt)} bytes, expected {SALT_SIZE}")
    sealed = _field(fields, "sealed", bytes, "key file")
    # Framing damage is not a wrong password; say so without running the KDF.
    if len(sealed) < OVERHEAD or sealed[0] != FORMAT_VERSION or sealed[1] != ObjectType.KEY:
        raise KeyFileError("key file: sealed part is truncated or not a KEY object")
    return _Wrapper(params, salt, sealed)


def _parse_sealed(payload: bytes) -> tuple[MasterKey, KeyInfo]:
    what = "key file sealed part"
    fields = _unpack_map(payload, what)
    _reject_unexpected(fields, _SEALED_FIELDS, what)
    parts = [_field(fields, name, bytes, what) for name in ("encryption", "id", "chunker")]
    for name, part in zip(("encryption", "id", "chunker"), parts, strict=True):
        if len(part) != MASTER_KEY_PART_SIZE:
            raise KeyFileError(
                f"{what}: {name} key is {len(part)} bytes, expected {MASTER_KEY_PART_SIZE}"
            )
    info = KeyInfo(
        hostname=_field(fields, "hostname", str, what),
        username=_field(fields, "username", str, what),
        created=_field(fields, "created", str, what),
    )
    return MasterKey(*parts), info


def _pack(value: object) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def _unpack_map(data: bytes, what: str) -> dict[object, object]:
    if len(data) > MAX_KEYFILE_SIZE:
        raise KeyFileError(f"{what}: {len(data)} bytes, larger than any key file")
    try:
        value: object = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_str_len=MAX_KEYFILE_SIZE,
            max_bin_len=MAX_KEYFILE_SIZE,
            max_array_len=16,
            max_map_len=16,
            max_ext_len=0,
        )
    except (ValueError, msgpack.UnpackException) as exc:
        raise KeyFileError(f"{what}: not valid msgpack ({exc})") from exc
    if not isinstance(value, dict):
        raise KeyFileError(f"{what}: not a msgpack map")
    return value


def _field(fields: dict[object, object], name: str, kind: type[_T], what: str) -> _T:
    value = fields.get(name)
    if value is None:
        raise KeyFileError(f"{what}: field {name!r} is missing")
    # bool is a subclass of int, but a msgpack true is not a number here.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise KeyFileError(f"{what}: field {name!r} is not {kind.__name__}")
    return value


def _reject_unexpected(fields: dict[object, object], expected: frozenset[str], what: str) -> None:
    unexpected = sorted(repr(key) for key in fields.keys() - expected)
    if unexpected:
        raise KeyFileError(f"{what}: unexpected fields {', '.join(unexpected)}")
