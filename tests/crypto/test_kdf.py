"""Tests for crypto.kdf: Argon2id derivation and parameter limits."""

import pytest

from crypto import CHEAP, DEFAULT_KDF_PARAMS, SALT_SIZE, KdfParams, KeyFileError, derive_key

SALT = bytes(range(SALT_SIZE))


def test_defaults_follow_design() -> None:
    """The default parameters are m = 64 MiB, t = 3, p = 4."""
    assert KdfParams() == DEFAULT_KDF_PARAMS == KdfParams(65536, 3, 4)


def test_cheap_vector() -> None:
    """Argon2id with the cheap test parameters gives a pinned key."""
    assert (
        derive_key(b"correct horse", SALT, CHEAP).hex()
        == "25ce5233cc1e4d37e9bca31bfef41710e40446cd1cb575932791c5fd3780bd3c"
    )


def test_derivation_depends_on_inputs() -> None:
    """Password, salt and parameters each change the derived key."""
    base = derive_key(b"pw", SALT, CHEAP)
    assert len(base) == 32
    assert derive_key(b"pw", SALT, CHEAP) == base
    assert derive_key(b"pw2", SALT, CHEAP) != base
    assert derive_key(b"pw", bytes(SALT_SIZE), CHEAP) != base
    assert derive_key(b"pw", SALT, KdfParams(64, 2, 1)) != base


@pytest.mark.parametrize(
    "params",
    [KdfParams(64, 1, 1), KdfParams(8, 1, 1), KdfParams(1024 * 1024, 64, 64), KdfParams()],
)
def test_check_accepts_limits(params: KdfParams) -> None:
    """Parameters at the edges of the limits are accepted."""
    params.check()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (KdfParams(memory_kib=1024 * 1024 + 1), "memory"),
        (KdfParams(memory_kib=2**40), "memory"),
        (KdfParams(memory_kib=31, lanes=4), "memory"),
        (KdfParams(iterations=0), "iterations"),
        (KdfParams(iterations=65), "iterations"),
        (KdfParams(lanes=0), "lanes"),
        (KdfParams(memory_kib=1024, lanes=65), "lanes"),
        (KdfParams(memory_kib=-1), "memory"),
    ],
)
def test_check_rejects_out_of_limits(params: KdfParams, message: str) -> None:
    """Parameters outside the limits raise KeyFileError naming the parameter."""
    with pytest.raises(KeyFileError, match=message):
        params.check()


def test_derive_key_checks_params_first() -> None:
    """derive_key refuses parameters beyond the limits instead of running."""
    with pytest.raises(KeyFileError):
        derive_key(b"pw", SALT, KdfParams(memory_kib=2**30))
