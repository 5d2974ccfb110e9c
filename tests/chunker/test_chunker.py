"""Tests for chunker: bounds, window independence, edit locality, params, and a boundary pin."""

import bisect
import io
import itertools
import random
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chunker
from chunker import (
    ALGORITHM,
    DEFAULT_WINDOW,
    ChunkerError,
    ChunkerParams,
    chunk_bytes,
    iter_chunks,
    iter_cut_lengths,
)
from chunker._fastcdc import cut_points

# Small sizes keep property tests fast while exercising many chunks per input.
SMALL = ChunkerParams(min_size=64, avg_size=256, max_size=1024)
SMALL_WINDOWS = st.integers(min_value=2 * SMALL.max_size, max_value=16 * SMALL.max_size)
FAST = settings(max_examples=150, deadline=None)


def random_bytes(seed: int, size: int) -> bytes:
    """Return size reproducible pseudo-random bytes (incompressible, like real file data)."""
    return random.Random(seed).randbytes(size)


# Hypothesis' own binaries are mostly low-entropy (runs of zeros: only max-size
# cuts); seeded random bytes give natural, content-defined cuts.
STREAMS = st.one_of(
    st.binary(max_size=8 * 1024),
    st.builds(random_bytes, st.integers(0, 2**32), st.integers(0, 48 * 1024)),
)


def reader(data: bytes, sizes: list[int] | None = None) -> Callable[[int], bytes]:
    """Return a read(n) over data that returns at most the next of sizes bytes (cycled)."""
    stream = io.BytesIO(data)
    limits: Iterator[int | None] = itertools.cycle(sizes) if sizes else itertools.repeat(None)

    def read(n: int) -> bytes:
        limit = next(limits)
        return stream.read(n if limit is None else min(n, limit))

    return read


def streamed(
    data: bytes, params: ChunkerParams, window: int, sizes: list[int] | None = None
) -> list[bytes]:
    """Return the chunks iter_chunks makes of data read through reader(data, sizes)."""
    return list(iter_chunks(reader(data, sizes), params, window))


def cut_ends(chunks: list[bytes], shift: int = 0) -> list[int]:
    """Return the stream offset at which each chunk ends, minus shift."""
    return [end - shift for end in itertools.accumulate(len(chunk) for chunk in chunks)]


def test_exported_names() -> None:
    """The package exports exactly the documented API."""
    assert sorted(chunker.__all__) == sorted(
        [
            "ALGORITHM",
            "DEFAULT_WINDOW",
            "ChunkerError",
            "ChunkerParams",
            "chunk_bytes",
            "iter_chunks",
            "iter_cut_lengths",
        ]
    )
    assert ALGORITHM == "fastcdc-1.7.0"
    assert 2 * ChunkerParams().max_size <= DEFAULT_WINDOW


@FAST
@given(data=STREAMS, window=SMALL_WINDOWS)
def test_chunks_concatenate_and_respect_bounds(data: bytes, window: int) -> None:
    """Chunks join back to the input; all but the last lie in [min, max], the last is non-empty."""
    for chunks in (chunk_bytes(data, SMALL), streamed(data, SMALL, window)):
        assert b"".join(chunks) == data
        assert all(SMALL.min_size <= len(chunk) <= SMALL.max_size for chunk in chunks[:-1])
        assert all(0 < len(chunk) <= SMALL.max_size for chunk in chunks[-1:])


@FAST
@given(data=STREAMS, first=SMALL_WINDOWS, second=SMALL_WINDOWS)
def test_boundaries_do_not_depend_on_window(data: bytes, first: int, second: int) -> None:
    """Any two windows give the same chunks as chunking the whole input at once."""
    assert streamed(data, SMALL, first) == streamed(data, SMALL, second) == chunk_bytes(data, SMALL)


def readinto_over(data: bytes, sizes: list[int]) -> Callable[[memoryview], int]:
    """Return a readinto(view) over data that fills at most the next of sizes bytes."""
    stream = io.BytesIO(data)
    limits = itertools.cycle(sizes)

    def readinto(view: memoryview) -> int:
        return stream.readinto(view[: next(limits)])

    return readinto


def unused_read(n: int) -> bytes:
    raise AssertionError("read() called although readinto was given")


@FAST
@given(
    streams=st.lists(STREAMS, min_size=1, max_size=4),
    window=SMALL_WINDOWS,
    sizes=st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=20),
    in_place=st.booleans(),
)
def test_a_reused_window_buffer_gives_every_stream_its_own_chunks(
    streams: list[bytes], window: int, sizes: list[int], in_place: bool
) -> None:
    """One buffer chunks stream after stream (as backup does, file after file) exactly
    as a fresh window would: nothing of an earlier, longer stream leaks into the next.
    So too when readinto fills the window in place, short fills or not."""
    buffer = bytearray(window)
    for data in streams:
        if in_place:
            into = readinto_over(data, sizes)
            chunks = list(iter_chunks(unused_read, SMALL, buffer, readinto=into))
        else:
            chunks = list(iter_chunks(reader(data, sizes), SMALL, buffer))
        assert chunks == chunk_bytes(data, SMALL)
        assert all(isinstance(c, bytes) for c in chunks)


@FAST
@given(
    streams=st.lists(STREAMS, min_size=1, max_size=4),
    window=SMALL_WINDOWS,
    sizes=st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=20),
)
def test_cut_lengths_are_the_lengths_of_the_chunks(
    streams: list[bytes], window: int, sizes: list[int]
) -> None:
    """iter_cut_lengths gives the lengths of chunk_bytes's chunks, in order, whatever the
    window and the fills, on one buffer reused stream after stream; an empty stream
    gives no list, and no list of a longer stream is empty."""
    buffer = bytearray(window)
    for data in streams:
        lists = list(iter_cut_lengths(readinto_over(data, sizes), SMALL, buffer))
        assert [n for lengths in lists for n in lengths] == [
            len(chunk) for chunk in chunk_bytes(data, SMALL)
        ]
        assert all(lists)
        assert len(lists) <= max(1, -(-len(data) // (window - SMALL.max_size)))


def test_cut_lengths_reject_a_small_window_and_a_boastful_readinto() -> None:
    """The same checks as iter_chunks: the window, at call time, and the fill."""
    with pytest.raises(ChunkerError, match="window"):
        iter_cut_lengths(readinto_over(b"x", [1]), SMALL, bytearray(2 * SMALL.max_size - 1))
    with pytest.raises(ChunkerError, match="more than the room"):
        list(iter_cut_lengths(lambda view: len(view) + 1, SMALL, bytearray(2 * SMALL.max_size)))


def test_readinto_reporting_more_than_the_room_is_rejected() -> None:
    """A readinto claiming more bytes than its view holds raises ChunkerError."""

    def boastful(view: memoryview) -> int:
        return len(view) + 1

    buffer = bytearray(2 * SMALL.max_size)
    with pytest.raises(ChunkerError, match="more than the room"):
        list(iter_chunks(unused_read, SMALL, buffer, readinto=boastful))


@FAST
@given(
    data=STREAMS,
    window=SMALL_WINDOWS,
    sizes=st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=20),
)
def test_short_reads_do_not_change_boundaries(data: bytes, window: int, sizes: list[int]) -> None:
    """A reader returning short reads before the end yields the same chunks as one big read."""
    assert streamed(data, SMALL, window, sizes) == chunk_bytes(data, SMALL)


@FAST
@given(
    seed=st.integers(0, 2**32),
    where=st.floats(min_value=0, max_value=1),
    inserted=st.binary(min_size=1, max_size=32),
)
def test_insert_changes_only_nearby_chunks(seed: int, where: float, inserted: bytes) -> None:
    """Inserting bytes keeps every chunk before the edit and resynchronises soon after it."""
    data = random_bytes(seed, 48 * 1024)
    position = int(where * len(data))
    old = chunk_bytes(data, SMALL)
    new = chunk_bytes(data[:position] + inserted + data[position:], SMALL)
    old_ends = cut_ends(old)
    # A cut depends only on the bytes before it, so chunks ending by the edit
    # survive; not the last chunk, which ended only because the data did.
    kept = sum(1 for end in old_ends[:-1] if end <= position)
    assert new[:kept] == old[:kept]
    # The first cut both streams share after the edit (the end of data always is
    # one) came within 3 * max_size in 20,000 random trials; 8 leaves a wide margin.
    new_ends = cut_ends(new, shift=len(inserted))
    resync = min(end for end in set(old_ends) & set(new_ends) if end >= position)
    assert resync - position <= 8 * SMALL.max_size
    # From there on the chunk sequences coincide.
    assert (
        old[bisect.bisect_right(old_ends, resync) :] == new[bisect.bisect_right(new_ends, resync) :]
    )


def test_default_params_on_mebibytes_of_random_data() -> None:
    """With the real defaults, several windows and short reads agree with one whole-input call."""
    params = ChunkerParams()
    data = random_bytes(7, 40 * 1024 * 1024)
    whole = chunk_bytes(data, params)
    assert b"".join(whole) == data
    assert all(params.min_size <= len(chunk) <= params.max_size for chunk in whole[:-1])
    assert streamed(data, params, 2 * params.max_size) == whole
    assert streamed(data, params, DEFAULT_WINDOW, sizes=[3 * 1024 * 1024 + 1, 12345]) == whole


def test_pinned_boundaries_for_default_params() -> None:
    """Chunk lengths of a fixed input are pinned: a change means a different gear table or rules."""
    data = random_bytes(2026, 8 * 1024 * 1024)
    lengths = [len(chunk) for chunk in chunk_bytes(data, ChunkerParams())]
    assert lengths == [
        552542, 392783, 491302, 294951, 881594, 791348, 359073, 615218,
        503364, 776707, 370676, 371951, 709176, 287884, 374765, 615274,
    ]  # fmt: skip


def test_pinned_boundaries_for_the_first_default_params() -> None:
    """Repositories made before the defaults were halved keep their boundaries, and dedup."""
    data = random_bytes(2026, 8 * 1024 * 1024)
    first = ChunkerParams(min_size=256 * 1024, avg_size=1024 * 1024, max_size=8 * 1024 * 1024)
    lengths = [len(chunk) for chunk in chunk_bytes(data, first)]
    assert lengths == [1521922, 1091250, 791348, 2269198, 792348, 932503, 990039]


def test_empty_input_has_no_chunks() -> None:
    """An empty stream or buffer yields no chunks at all."""
    assert chunk_bytes(b"", SMALL) == []
    assert streamed(b"", SMALL, 2 * SMALL.max_size) == []


def test_memoryview_input_matches_bytes() -> None:
    """chunk_bytes gives the same chunks for a memoryview, of any item format, as for bytes."""
    data = random_bytes(3, 10_000)
    assert chunk_bytes(memoryview(data).cast("I"), SMALL) == chunk_bytes(data, SMALL)


def test_reads_never_exceed_window() -> None:
    """iter_chunks never asks for more than the window, so memory stays bounded by it."""
    asked: list[int] = []
    read = reader(random_bytes(4, 20_000))

    def recording_read(n: int) -> bytes:
        asked.append(n)
        return read(n)

    list(iter_chunks(recording_read, SMALL, 2 * SMALL.max_size))
    assert asked
    assert all(0 < n <= 2 * SMALL.max_size for n in asked)


def test_window_smaller_than_two_max_sizes_is_rejected() -> None:
    """A window under 2 * max_size raises ChunkerError when iter_chunks is called."""
    with pytest.raises(ChunkerError, match="window"):
        iter_chunks(reader(b"data"), SMALL, 2 * SMALL.max_size - 1)


def test_read_returning_more_than_asked_is_rejected() -> None:
    """A read(n) that returns more than n bytes raises ChunkerError instead of overrunning."""

    def greedy_read(n: int) -> bytes:
        return bytes(n + 1)

    with pytest.raises(ChunkerError, match="more than asked"):
        list(iter_chunks(greedy_read, SMALL, 2 * SMALL.max_size))


def test_missing_extension_raises_chunker_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without fastcdc's C extension, chunking raises a ChunkerError that says how to fix it."""
    monkeypatch.setattr("chunker._fastcdc._load", lambda: None)
    with pytest.raises(ChunkerError, match=r"fastcdc\.fastcdc_cy\) is not installed"):
        chunk_bytes(b"data", SMALL)
    with pytest.raises(ChunkerError, match="reinstall"):
        iter_chunks(reader(b"data"), SMALL, 2 * SMALL.max_size)


@pytest.mark.parametrize(
    "params",
    [
        ChunkerParams(min_size=4096, avg_size=2048, max_size=65536),
        ChunkerParams(min_size=1024, avg_size=4096, max_size=2048),
        ChunkerParams(algorithm="fastcdc-2.0"),
        ChunkerParams(algorithm=""),
        ChunkerParams(min_size=63, avg_size=256, max_size=1024),
        ChunkerParams(min_size=64, avg_size=255, max_size=1024),
        ChunkerParams(min_size=64, avg_size=256, max_size=1023),
        ChunkerParams(min_size=64, avg_size=256, max_size=2**30 + 1),
        ChunkerParams(min_size=0, avg_size=0, max_size=0),
        ChunkerParams(min_size=True, avg_size=256, max_size=1024),
    ],
)
def test_validate_rejects_bad_params(params: ChunkerParams) -> None:
    """validate raises ChunkerError for unknown algorithms, out-of-range or disordered sizes."""
    with pytest.raises(ChunkerError):
        params.validate()
    with pytest.raises(ChunkerError):
        chunk_bytes(b"data", params)


def test_validate_accepts_defaults_and_range_edges() -> None:
    """The defaults and fastcdc's extreme accepted sizes pass validation."""
    ChunkerParams().validate()
    ChunkerParams(min_size=64, avg_size=256, max_size=1024).validate()
    ChunkerParams(min_size=2**26, avg_size=2**28, max_size=2**30).validate()


@given(
    sizes=st.tuples(st.integers(64, 2**26), st.integers(256, 2**28), st.integers(1024, 2**30)).map(
        sorted
    )
)
def test_dict_round_trip(sizes: list[int]) -> None:
    """from_dict(to_dict(p)) == p for every valid p."""
    params = ChunkerParams(ALGORITHM, *sizes)
    assert ChunkerParams.from_dict(params.to_dict()) == params


def test_to_dict_fields() -> None:
    """to_dict writes exactly the four recorded fields."""
    assert ChunkerParams().to_dict() == {
        "algorithm": ALGORITHM,
        "min_size": 128 * 1024,
        "avg_size": 512 * 1024,
        "max_size": 4 * 1024 * 1024,
    }


@pytest.mark.parametrize(
    "change",
    [
        {"algorithm": None},
        {"algorithm": 1},
        {"min_size": "65536"},
        {"avg_size": 1.5},
        {"max_size": None},
        {"max_size": True},
        {"min_size": 10},
        {"algorithm": "rabin"},
        {"extra": 1},
    ],
)
def test_from_dict_rejects_wrong_fields(change: dict[str, object]) -> None:
    """from_dict raises ChunkerError for wrong-typed, invalid or unknown fields."""
    with pytest.raises(ChunkerError):
        ChunkerParams.from_dict({**ChunkerParams().to_dict(), **change})


@pytest.mark.parametrize("missing", ["algorithm", "min_size", "avg_size", "max_size"])
def test_from_dict_rejects_missing_fields(missing: str) -> None:
    """from_dict raises ChunkerError naming a missing field."""
    fields = ChunkerParams().to_dict()
    del fields[missing]
    with pytest.raises(ChunkerError, match=missing):
        ChunkerParams.from_dict(fields)


@pytest.mark.parametrize("garbage", [{}, [], "fastcdc", None, 42])
def test_from_dict_rejects_garbage(garbage: object) -> None:
    """from_dict raises ChunkerError, not TypeError, for values that are no params mapping."""
    with pytest.raises(ChunkerError):
        ChunkerParams.from_dict(garbage)  # type: ignore[arg-type]


def test_data_no_longer_than_min_size_is_one_chunk_without_fastcdc(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """fastcdc never cuts before min_size, so chunk_bytes returns such data whole, the
    same object, without calling it (most files are that short); empty data is no chunk."""

    def no_fastcdc(*_args: object) -> list[tuple[int, int]]:
        raise AssertionError("fastcdc called for data no longer than min_size")

    data = random_bytes(7, SMALL.min_size)
    assert cut_points(memoryview(data), SMALL) == [(0, len(data))]
    monkeypatch.setattr("chunker._stream.cut_points", no_fastcdc)
    assert chunk_bytes(data, SMALL)[0] is data
    assert chunk_bytes(data[:10], SMALL) == [data[:10]]
    assert chunk_bytes(b"", SMALL) == []
    with pytest.raises(AssertionError):
        chunk_bytes(data + b"x", SMALL)
