"""Tests for crypto.argon2: the Argon2id call and a derivation started ahead of need."""

import threading

import pytest

from crypto import argon2

INPUTS = (b"password", bytes(range(16)), 64, 1, 1)


def test_nothing_started_gives_nothing() -> None:
    """finish() without a started derivation returns None, so the caller derives."""
    assert argon2.finish(INPUTS) is None


def test_a_started_derivation_gives_its_key() -> None:
    """start() then finish() with the same inputs returns argon2id's key, once."""
    argon2.start(INPUTS)
    assert argon2.finish(INPUTS) == argon2.argon2id(INPUTS)
    assert argon2.finish(INPUTS) is None


def test_other_inputs_wait_and_get_nothing() -> None:
    """finish() with other inputs waits for the started derivation and returns None."""
    argon2.start(INPUTS)
    assert argon2.finish((b"other", *INPUTS[1:])) is None
    assert not [t for t in threading.enumerate() if t.name == "argon2id"]


def test_a_failed_start_leaves_the_error_to_the_caller() -> None:
    """A derivation that fails in its thread gives None; deriving again raises."""
    short_salt = (b"password", b"1234", 64, 1, 1)
    argon2.start(short_salt)
    assert argon2.finish(short_salt) is None
    with pytest.raises(ValueError, match="Salt is too short"):
        argon2.argon2id(short_salt)


def test_four_lanes_match_openssl() -> None:
    """Four lanes, whatever the threads, give the key OpenSSL's Argon2id gives (pinned
    from `cryptography`, the implementation repositories were made with before)."""
    key = argon2.argon2id((b"correct horse", bytes(range(16)), 256, 2, 4))
    assert key.hex() == "561fa692be9487c38899b5e0d9cc1efdded2ab15a5776d9590fa7aab2cfc885f"
