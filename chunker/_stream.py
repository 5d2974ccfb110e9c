"""Content-defined chunking of streams and in-memory data, window by window."""

from collections.abc import Callable, Iterator

from chunker._errors import ChunkerError
from chunker._fastcdc import cut_points, require_extension
from chunker._params import ChunkerParams

# Bytes read and chunked per fastcdc call: large enough that the per-call
# overhead vanishes, small enough to keep memory flat on huge files.
DEFAULT_WINDOW: int = 32 * 1024 * 1024


def iter_chunks(
    read: Callable[[int], bytes],
    params: ChunkerParams,
    window: int | bytearray = DEFAULT_WINDOW,
    readinto: Callable[[memoryview], int] | None = None,
) -> Iterator[bytes]:
    """Split the stream produced by repeated read(n) calls (b"" = end) into content-defined chunks.

    The chunks equal those of chunk_bytes on the whole stream, whatever the
    window and however short the reads. `window` is a size, or a buffer to chunk
    in (its length is the window), which a caller chunking many streams one after
    another reuses instead of allocating a window per stream. With a buffer,
    `readinto(view)` (bytes put at the start of view; 0 = end), if given, fills it
    in place of read: the bytes land in the window without a copy on the way. Raises
    ChunkerError at call time for bad params, a window under 2 * max_size, or a
    missing fastcdc extension.
    """
    params.validate()
    require_extension()
    size = len(window) if isinstance(window, bytearray) else window
    # A window of at least two maximal chunks always holds one final chunk
    # before the (possibly unfinished) last one, so every window makes progress.
    if size < 2 * params.max_size:
        raise ChunkerError(
            f"chunker window {size} is smaller than 2 * max_size ({2 * params.max_size})"
        )
    return _iter_windows(read, params, window, readinto)


def chunk_bytes(data: bytes | memoryview, params: ChunkerParams) -> list[bytes]:
    """Split in-memory data into content-defined chunks in one fastcdc call."""
    params.validate()
    require_extension()  # a broken installation fails on every file, not on the first large one
    if len(data) <= params.min_size:
        # fastcdc looks for no cut before min_size: data this short is one chunk (none
        # when empty), and the call would only cost its set-up (most files are short).
        return [bytes(data)] if data else []
    view = memoryview(data).cast("B")
    return [bytes(view[offset : offset + length]) for offset, length in cut_points(view, params)]


def _iter_windows(
    read: Callable[[int], bytes],
    params: ChunkerParams,
    window: int | bytearray,
    readinto: Callable[[memoryview], int] | None,
) -> Iterator[bytes]:
    """Chunk the stream one window at a time, carrying each window's unfinished tail."""
    fill = _filler(read, readinto)
    if isinstance(window, bytearray):
        view = memoryview(window)
        filled, is_end = fill(view, 0)
        if not filled:
            return
    else:
        first, is_end = _read_window(read, window)
        if is_end:
            # Most files fit in one window: chunk them straight from the read,
            # without allocating a window-sized buffer per file.
            yield from chunk_bytes(first, params)
            return
        # Longer streams reuse one buffer for every window: a fresh window-sized
        # allocation per window costs a page fault per 4 KiB and slows chunking.
        view = memoryview(bytearray(first))
        del first
        filled = window
    for cuts in _final_cuts(fill, params, view, filled, is_end):
        for offset, length in cuts:
            yield bytes(view[offset : offset + length])


def iter_cut_lengths(
    readinto: Callable[[memoryview], int], params: ChunkerParams, window: bytearray
) -> Iterator[list[int]]:
    """The lengths of the chunks iter_chunks would give for the stream that repeated
    readinto(view) calls fill (0 = end), a list per window chunked.

    For a process that only finds the boundaries, while another reads the bytes
    between them. Raises ChunkerError at call time as iter_chunks does.
    """
    params.validate()
    require_extension()
    if len(window) < 2 * params.max_size:
        raise ChunkerError(
            f"chunker window {len(window)} is smaller than 2 * max_size ({2 * params.max_size})"
        )
    return _iter_lengths(readinto, params, window)


def _iter_lengths(
    readinto: Callable[[memoryview], int], params: ChunkerParams, window: bytearray
) -> Iterator[list[int]]:
    fill = _filler(_no_read, readinto)
    view = memoryview(window)
    filled, is_end = fill(view, 0)
    if not filled:
        return
    for cuts in _final_cuts(fill, params, view, filled, is_end):
        yield [length for _offset, length in cuts]


def _final_cuts(
    fill: Callable[[memoryview, int], tuple[int, bool]],
    params: ChunkerParams,
    view: memoryview,
    filled: int,
    is_end: bool,
) -> Iterator[list[tuple[int, int]]]:
    """The (offset, length) in view of each window's final chunks, a list per window;
    view holds that window's bytes until the next list is asked for."""
    while True:
        cuts = cut_points(view[:filled], params)
        tail_offset = filled
        if not is_end:
            # fastcdc cuts the chunk at offset o by looking only at bytes
            # o .. o + max_size, so every chunk but the last is final; the last
            # may only have stopped at the window's edge and must see more data.
            tail_offset, _ = cuts.pop()
        yield cuts
        if is_end:
            return
        # Move the tail to the front (memoryview assignment handles the overlap).
        view[: filled - tail_offset] = view[tail_offset:filled]
        filled, is_end = fill(view, filled - tail_offset)


def _no_read(size: int) -> bytes:  # pragma: no cover - a filler with readinto never reads
    raise AssertionError("read() called where readinto() fills the window")


def _read_window(read: Callable[[int], bytes], window: int) -> tuple[bytes, bool]:
    """Return up to window bytes from the start of the stream, and whether it ended."""
    parts: list[bytes] = []
    size = 0
    while size < window:
        part = _read(read, window - size)
        if not part:
            return b"".join(parts), True
        parts.append(part)
        size += len(part)
    return b"".join(parts), False


def _filler(
    read: Callable[[int], bytes], readinto: Callable[[memoryview], int] | None
) -> Callable[[memoryview, int], tuple[int, bool]]:
    """fill(view, filled): read into view after its first filled bytes until it is full
    or the stream ends; returns the new fill level and whether the stream ended."""

    def fill(view: memoryview, filled: int) -> tuple[int, bool]:
        window = len(view)
        while filled < window:
            part = _read(read, window - filled)
            if not part:
                return filled, True
            view[filled : filled + len(part)] = part
            filled += len(part)
        return filled, False

    if readinto is None:
        return fill
    into = readinto

    def fill_in_place(view: memoryview, filled: int) -> tuple[int, bool]:
        window = len(view)
        while filled < window:
            n = into(view[filled:])
            if n > window - filled:
                raise ChunkerError(f"readinto reported {n} bytes, more than the room given")
            if not n:
                return filled, True
            filled += n
        return filled, False

    return fill_in_place


def _read(read: Callable[[int], bytes], size: int) -> bytes:
    """Call read(size) and check that it kept to size.

    A read may return fewer bytes than asked before the end (pipes, files that
    shrink), so callers keep reading and treat only b"" as the end.
    """
    part = read(size)
    if len(part) > size:
        raise ChunkerError(f"read({size}) returned {len(part)} bytes, more than asked")
    return part
