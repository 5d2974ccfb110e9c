"""The boundary to fastcdc's C extension: cut points of an in-memory buffer."""

import functools
import importlib
from typing import Any

from chunker._errors import ChunkerError
from chunker._params import ChunkerParams


@functools.cache
def _load() -> Any:
    """fastcdc's C extension, or None if it is missing.

    Imported on first chunking, not with the module: commands that never chunk
    (restore, snapshots, ...) do not pay for it, and a backup pays only after
    Argon2id has released its 64 MiB.
    """
    # By its module path: `import fastcdc` alone would fall back silently to the
    # pure-Python implementation, which is ~100x slower. (fastcdc/__init__.py still
    # runs first and imports click, a hutch dependency.)
    try:
        return importlib.import_module("fastcdc.fastcdc_cy")
    except ImportError:  # pragma: no cover - only on a broken installation
        return None


def cut_points(view: memoryview, params: ChunkerParams) -> list[tuple[int, int]]:
    """Return (offset, length) of each chunk fastcdc finds in view, in order.

    params must already be validated: fastcdc only asserts its ranges.
    """
    chunks = require_extension().fastcdc_cy(
        view, params.min_size, params.avg_size, params.max_size, fat=False
    )
    # The extension is untyped; Chunk.offset and Chunk.length are C integers.
    return [(int(chunk.offset), int(chunk.length)) for chunk in chunks]


def require_extension() -> Any:
    """Return fastcdc's C extension; raise ChunkerError if it cannot be imported."""
    extension = _load()
    if extension is None:
        raise ChunkerError(
            "fastcdc C extension (fastcdc.fastcdc_cy) is not installed: "
            "reinstall hutch's dependencies"
        )
    return extension
