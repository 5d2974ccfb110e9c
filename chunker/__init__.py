"""Content-defined chunking: splits byte streams into deduplicable chunks with fastcdc.

Imports nothing else of hutch. The chunk boundaries depend only on the data and
ChunkerParams (recorded in the repository config), never on how the data is read.
"""

from chunker._errors import ChunkerError
from chunker._params import ALGORITHM, ChunkerParams
from chunker._stream import DEFAULT_WINDOW, chunk_bytes, iter_chunks, iter_cut_lengths

__all__ = [
    "ALGORITHM",
    "DEFAULT_WINDOW",
    "ChunkerError",
    "ChunkerParams",
    "chunk_bytes",
    "iter_chunks",
    "iter_cut_lengths",
]
