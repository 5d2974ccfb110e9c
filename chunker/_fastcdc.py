"""The boundary to fastcdc's C extension: cut points of an in-memory buffer."""

from chunker._errors import ChunkerError
from chunker._params import ChunkerParams

# Import the C extension by its module path: `import fastcdc` alone would fall
# back silently to the pure-Python implementation, which is ~100x slower.
# (fastcdc/__init__.py still runs first and imports click, a hutch dependency.)
try:
    import fastcdc.fastcdc_cy as _extension
except ImportError:  # pragma: no cover - only on a broken installation
    _extension = None


def cut_points(view: memoryview, params: ChunkerParams) -> list[tuple[int, int]]:
    """Return (offset, length) of each chunk fastcdc finds in view, in order.

    params must already be validated: fastcdc only asserts its ranges.
    """
    require_extension()
    chunks = _extension.fastcdc_cy(
        view, params.min_size, params.avg_size, params.max_size, fat=False
    )
    # The extension is untyped; Chunk.offset and Chunk.length are C integers.
    return [(int(chunk.offset), int(chunk.length)) for chunk in chunks]


def require_extension() -> None:
    """Raise ChunkerError if fastcdc's C extension could not be imported."""
    if _extension is None:
        raise ChunkerError(
            "fastcdc C extension (fastcdc.fastcdc_cy) is not installed: "
            "reinstall hutch's dependencies"
        )
