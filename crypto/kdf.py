"""Argon2id password-based key derivation and its parameter limits."""

from dataclasses import dataclass

from crypto import argon2
from crypto.errors import KeyFileError

SALT_SIZE = 16
DERIVED_KEY_SIZE = argon2.KEY_SIZE


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id cost parameters; defaults follow docs/design.md (m = 64 MiB, t = 3, p = 4)."""

    memory_kib: int = 65536
    iterations: int = 3
    lanes: int = 4

    def check(self) -> None:
        """Raise KeyFileError if any parameter is outside the accepted limits."""
        problem = argon2.problem(self.memory_kib, self.iterations, self.lanes)
        if problem is not None:
            raise KeyFileError(problem)


DEFAULT_KDF_PARAMS = KdfParams()
# Cheap enough for unit tests; never for real key files.
CHEAP = KdfParams(memory_kib=64, iterations=1, lanes=1)


def derive_key(password: bytes, salt: bytes, params: KdfParams) -> bytes:
    """Derive a 32-byte key from ``password`` with Argon2id after checking ``params``.

    Takes the result of a derivation started with the same inputs (cli/early.py starts
    one before the command line is imported).
    """
    params.check()
    inputs = (password, salt, params.memory_kib, params.iterations, params.lanes)
    key = argon2.finish(inputs)
    return key if key is not None else argon2.argon2id(inputs)
