"""Chunker parameters: the values a repository config records to fix chunk boundaries."""

from collections.abc import Mapping
from dataclasses import dataclass

from chunker._errors import ChunkerError

# Names the gear table and cut rules of fastcdc 1.7.0's C extension. Boundaries
# under any other algorithm differ, so a repository records this string and a
# mismatch must stop a backup rather than silently break deduplication.
ALGORITHM: str = "fastcdc-1.7.0"

# fastcdc's accepted ranges (fastcdc/const.py); the extension only asserts
# them, and asserts vanish under `python -O`, so we check them ourselves.
_SIZE_RANGES: dict[str, tuple[int, int]] = {
    "min_size": (64, 64 * 1024 * 1024),
    "avg_size": (256, 256 * 1024 * 1024),
    "max_size": (1024, 1024 * 1024 * 1024),
}
_FIELDS: tuple[str, ...] = ("algorithm", "min_size", "avg_size", "max_size")


@dataclass(frozen=True, slots=True)
class ChunkerParams:
    """Algorithm and size bounds of content-defined chunking."""

    algorithm: str = ALGORITHM
    # Half restic's average and maximum: an edit stores about half as many
    # new bytes, for twice the index entries per GiB stored (46 bytes each).
    min_size: int = 128 * 1024
    avg_size: int = 512 * 1024
    max_size: int = 4 * 1024 * 1024

    def validate(self) -> None:
        """Raise ChunkerError unless fastcdc accepts these parameters."""
        if self.algorithm != ALGORITHM:
            raise ChunkerError(
                f"chunker algorithm {self.algorithm!r} is not supported (expected {ALGORITHM!r})"
            )
        for name, (low, high) in _SIZE_RANGES.items():
            value = _as_int(name, getattr(self, name))
            if not low <= value <= high:
                raise ChunkerError(f"chunker {name} {value} is outside [{low}, {high}]")
        if not self.min_size <= self.avg_size <= self.max_size:
            raise ChunkerError(
                f"chunker sizes must satisfy min <= avg <= max, got "
                f"{self.min_size} / {self.avg_size} / {self.max_size}"
            )

    def to_dict(self) -> dict[str, object]:
        """Return the fields as a plain dict for the repository config."""
        return {
            "algorithm": self.algorithm,
            "min_size": self.min_size,
            "avg_size": self.avg_size,
            "max_size": self.max_size,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> "ChunkerParams":
        """Build validated parameters from a repository config mapping."""
        # Every field is required and no other is allowed: a field we do not
        # know could change boundaries, and guessing it would break deduplication.
        if not isinstance(d, Mapping):
            raise ChunkerError(f"chunker params must be a mapping, not {type(d).__name__}")
        missing = [name for name in _FIELDS if name not in d]
        if missing:
            raise ChunkerError(f"chunker params: missing fields {missing}")
        unknown = sorted(str(key) for key in d if key not in _FIELDS)
        if unknown:
            raise ChunkerError(f"chunker params: unknown fields {unknown}")
        algorithm = d["algorithm"]
        if not isinstance(algorithm, str):
            raise ChunkerError(f"chunker algorithm must be a str, not {type(algorithm).__name__}")
        params = cls(
            algorithm,
            _as_int("min_size", d["min_size"]),
            _as_int("avg_size", d["avg_size"]),
            _as_int("max_size", d["max_size"]),
        )
        params.validate()
        return params


def _as_int(name: str, value: object) -> int:
    """Return value if it is a real int, else raise ChunkerError naming the field."""
    # bool is an int subclass, but True as a size is a bug, not 1 byte.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ChunkerError(f"chunker {name} must be an int, not {type(value).__name__}")
    return value
