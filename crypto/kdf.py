"""Argon2id password-based key derivation and its parameter limits."""

from dataclasses import dataclass

from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from crypto.errors import KeyFileError

SALT_SIZE = 16
DERIVED_KEY_SIZE = 32
# Parameters come from key files, which anyone with write access to the
# repository can plant: cap memory at 1 GiB so opening one cannot exhaust RAM.
MAX_MEMORY_KIB = 1024 * 1024
MAX_ITERATIONS = 64
MAX_LANES = 64


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id cost parameters; defaults follow docs/design.md (m = 64 MiB, t = 3, p = 4)."""

    memory_kib: int = 65536
    iterations: int = 3
    lanes: int = 4

    def check(self) -> None:
        """Raise KeyFileError if any parameter is outside the accepted limits."""
        if not 1 <= self.lanes <= MAX_LANES:
            raise KeyFileError(f"KDF lanes {self.lanes} outside [1, {MAX_LANES}]")
        if not 1 <= self.iterations <= MAX_ITERATIONS:
            raise KeyFileError(f"KDF iterations {self.iterations} outside [1, {MAX_ITERATIONS}]")
        # Argon2 itself needs at least 8 KiB per lane.
        low = 8 * self.lanes
        if not low <= self.memory_kib <= MAX_MEMORY_KIB:
            raise KeyFileError(
                f"KDF memory {self.memory_kib} KiB outside [{low}, {MAX_MEMORY_KIB}]"
            )


DEFAULT_KDF_PARAMS = KdfParams()
# Cheap enough for unit tests; never for real key files.
CHEAP = KdfParams(memory_kib=64, iterations=1, lanes=1)


def derive_key(password: bytes, salt: bytes, params: KdfParams) -> bytes:
    """Derive a 32-byte key from ``password`` with Argon2id after checking ``params``."""
    params.check()
    kdf = Argon2id(
        salt=salt,
        length=DERIVED_KEY_SIZE,
        iterations=params.iterations,
        lanes=params.lanes,
        memory_cost=params.memory_kib,
    )
    return kdf.derive(password)
