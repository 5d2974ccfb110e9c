"""Tests for repo.readahead: files read ahead of the archiver."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from repo import readahead
from repo.readahead import Readers


def _files(tmp_path: Path, sizes: list[int]) -> list[bytes]:
    paths = []
    for i, size in enumerate(sizes):
        path = tmp_path / f"f{i:03d}"
        path.write_bytes(bytes([i % 251]) * size)
        paths.append(os.fsencode(path))
    return paths


def _read_all(feed: readahead.Feed) -> bytes:
    parts = []
    while part := feed.read(1 << 20):
        parts.append(part)
    return b"".join(parts)


@pytest.mark.parametrize("threads", [1, 2])
def test_small_files_are_read_ahead_beyond_one_per_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    """Given sizes, small files are handed out ahead of the archiver up to the byte
    budget, large ones one per thread; every feed still yields its file, in order."""
    monkeypatch.setattr(readahead, "READ_BLOCK", 1000)
    monkeypatch.setattr(readahead, "SMALL_AHEAD", 3000)
    monkeypatch.setattr(readahead, "DIRECT_MAX", -1)  # every file through the threads
    sizes = [500] * 10 + [5000] * 4 + [500] * 3
    paths = _files(tmp_path, sizes)
    readers = Readers(threads)
    started: list[int] = []
    original = readers._start

    def counting(path: bytes, size: int) -> readahead.Feed:
        started.append(paths.index(path))
        return original(path, size)

    monkeypatch.setattr(readers, "_start", counting)
    try:
        ahead_when_taken = []
        for i, feed in enumerate(readers.feeds(paths, sizes)):
            ahead_when_taken.append(len(started) - i)
            assert _read_all(feed) == bytes([i % 251]) * sizes[i]
    finally:
        readers.close()
    assert started == list(range(len(paths)))
    # Six small files of 500 bytes fit the 3000-byte budget, beyond the n always given.
    assert ahead_when_taken[0] == max(threads, 6)
    # Among the large files only one per thread is ahead.
    assert ahead_when_taken[10] == threads


def _refuse(path: bytes) -> readahead.Feed:
    raise AssertionError(f"{path!r} was handed to a reader thread")


def test_without_sizes_one_file_per_thread_is_ahead(tmp_path: Path) -> None:
    """Without sizes every file counts as large: n ahead, as before."""
    paths = _files(tmp_path, [10] * 8)
    readers = Readers(2)
    try:
        feeds = readers.feeds(paths)
        first = next(feeds)
        assert _read_all(first) == bytes([0]) * 10
        rest = [_read_all(f) for f in feeds]
    finally:
        readers.close()
    assert rest == [bytes([i % 251]) * 10 for i in range(1, 8)]


def _evict(path: bytes, *, check: bool = True) -> bool:
    """Drop the file's pages from the page cache; with `check`, whether a read would
    now wait (a read refused for waiting may still start reading the file in)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        if not check:
            return True
        try:
            os.preadv(fd, [bytearray(1)], 0, os.RWF_NOWAIT)
        except BlockingIOError:
            return True
        return False
    finally:
        os.close(fd)


def test_cached_small_files_are_read_without_a_thread(tmp_path: Path) -> None:
    """Small files whose bytes are all in the page cache are read whole by the caller:
    no reader thread is asked, and each feed has the file and its final fstat."""
    sizes = [0, 1, 700, readahead.DIRECT_MAX]
    paths = _files(tmp_path, sizes)
    readers = Readers(2)
    readers._start = _refuse  # type: ignore[method-assign]
    try:
        got = [(_read_all(feed), feed.after) for feed in readers.feeds(paths, sizes)]
    finally:
        readers.close()
    for i, (data, after) in enumerate(got):
        assert data == bytes([i % 251]) * sizes[i]
        assert after is not None and after.st_size == sizes[i]


def test_a_read_feed_serves_any_read_size(tmp_path: Path) -> None:
    """The chunker asks for less than a whole file at times: a ReadFeed hands it out
    in pieces, then b"" for good."""
    path = _files(tmp_path, [10])[0]
    feed = readahead.read_cached(path, 10)
    assert feed is not None
    assert [feed.read(4), feed.read(4), feed.read(4), feed.read(4)] == [
        b"\0" * 4,
        b"\0" * 4,
        b"\0" * 2,
        b"",
    ]


def test_files_not_in_the_page_cache_go_to_the_threads(tmp_path: Path) -> None:
    """A small file the page cache does not hold is read by a reader thread: the
    archiver's thread does not wait for the disk."""
    sizes = [700, 700]
    paths = _files(tmp_path, sizes)
    if not _evict(paths[1]):
        pytest.skip("this file system keeps the file cached (tmpfs): nothing to evict")
    # Evicted again before each read: a read refused for waiting (the check's too)
    # starts reading the file in.
    _evict(paths[1], check=False)
    assert readahead.read_cached(paths[0], 700) is not None
    assert readahead.read_cached(paths[1], 700) is None
    _evict(paths[1], check=False)
    readers = Readers(1)
    try:
        # Each feed is read before the next is taken: taking one ends the one before.
        got = [(type(f), _read_all(f)) for f in readers.feeds(paths, sizes)]
        assert got == [(readahead.ReadFeed, bytes([0]) * 700), (readahead.Feed, bytes([1]) * 700)]
    finally:
        readers.close()


def test_a_file_changed_since_its_stat_goes_to_the_threads(tmp_path: Path) -> None:
    """A file whose size is no longer the one the walk saw (grown, shrunk), or that is
    no longer a regular file, is left to a reader thread, which reads what is there
    or reports the error."""
    grown, shrunk = _files(tmp_path, [800, 800])
    assert readahead.read_cached(grown, 700) is None
    assert readahead.read_cached(shrunk, 900) is None
    fifo = os.fsencode(tmp_path / "fifo")
    os.mkfifo(fifo)
    assert readahead.read_cached(fifo, 0) is None
    assert readahead.read_cached(os.fsencode(tmp_path), 4096) is None  # now a folder
    assert readahead.read_cached(b"/dev/null", 0) is None  # reads as empty, but is no file
    assert readahead.read_cached(os.fsencode(tmp_path / "gone"), 5) is None
    readers = Readers(1)
    try:
        feeds = readers.feeds([grown, fifo], [700, 0])
        assert _read_all(next(feeds)) == bytes([0]) * 800
        with pytest.raises(OSError, match="changed type"):
            _read_all(next(feeds))
    finally:
        readers.close()


def test_without_rwf_nowait_every_file_goes_to_the_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where reads cannot be told not to wait, small files are read by the threads."""
    monkeypatch.setattr(readahead, "_RWF_NOWAIT", 0)
    path = _files(tmp_path, [10])[0]
    assert readahead.read_cached(path, 10) is None


def test_large_files_are_read_by_the_archiver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given sizes, a file of DIRECT_FROM bytes or more gets a DirectFeed, no thread:
    readinto fills the caller's buffer, the file is closed at its end, `after` set."""
    monkeypatch.setattr(readahead, "DIRECT_FROM", 5000)
    monkeypatch.setattr(readahead, "DIRECT_MAX", -1)  # no file read whole up front
    sizes = [100, 5000, 7777]
    paths = _files(tmp_path, sizes)
    readers = Readers(1)
    started: list[bytes] = []
    original = readers._start

    def counting(path: bytes, size: int) -> readahead.Feed:
        started.append(path)
        return original(path, size)

    monkeypatch.setattr(readers, "_start", counting)
    got = []
    try:
        for i, feed in enumerate(readers.feeds(paths, sizes)):
            if sizes[i] < 5000:
                got.append(_read_all(feed))
                continue
            assert isinstance(feed, readahead.DirectFeed)
            buffer = bytearray(3000)
            parts = []
            while n := feed.readinto(memoryview(buffer)):
                parts.append(bytes(buffer[:n]))
            assert feed.after is not None and feed.after.st_size == sizes[i]
            assert feed._fd == -1
            assert feed.readinto(memoryview(buffer)) == 0 and feed.read(10) == b""
            got.append(b"".join(parts))
    finally:
        readers.close()
    assert got == [bytes([i % 251]) * size for i, size in enumerate(sizes)]
    assert paths[1] not in started and paths[2] not in started


def test_a_direct_feed_cancelled_midway_closes_its_file(tmp_path: Path) -> None:
    """Cancelling a DirectFeed that has read part of its file closes the descriptor;
    its errors (a missing file) are raised to the archiver as OSError."""
    (path,) = _files(tmp_path, [10_000])
    feed = readahead.DirectFeed(path)
    assert feed.read(100) == bytes(100)
    fd = feed._fd
    feed.cancel()
    with pytest.raises(OSError):
        os.fstat(fd)
    with pytest.raises(OSError):
        readahead.DirectFeed(path + b".gone").read(1)


def test_a_direct_feed_reads_exactly_through_short_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """read_exactly gathers reads that come short (as some file systems give them) into
    the bytes asked for, reads on from where it stopped, and gives fewer only at the
    file's end, which a read after it then reports."""
    data = os.urandom(10_000)
    path = tmp_path / "f"
    path.write_bytes(data)
    real_pread = os.pread
    monkeypatch.setattr(readahead.os, "pread", lambda fd, n, at: real_pread(fd, min(n, 777), at))
    feed = readahead.DirectFeed(os.fsencode(path))
    assert feed.read_exactly(3000) == data[:3000]
    assert feed.read_exactly(6000) == data[3000:9000]
    assert feed.read_exactly(5000) == data[9000:]
    assert feed.after is None
    assert feed.read(10) == b""
    assert feed.after is not None and feed.after.st_size == 10_000


def test_a_small_file_is_read_with_a_buffer_of_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader asks for the statted size and one byte more, then one byte to find the
    end, not for a block each time (os.read allocates what it is asked for); a file
    that grew since it was statted is still read to its end, in blocks."""
    asked: list[int] = []
    real_read = os.read

    def recording(fd: int, n: int) -> bytes:
        asked.append(n)
        return real_read(fd, n)

    monkeypatch.setattr(readahead.os, "read", recording)
    monkeypatch.setattr(readahead, "READ_BLOCK", 1000)
    monkeypatch.setattr(readahead, "BLOCKS_AHEAD", 8)  # fill() runs on this thread
    (path,) = _files(tmp_path, [300])
    feed = readahead.Feed(path, 300)
    feed.fill()
    assert _read_all(feed) == bytes([0]) * 300
    assert asked == [301, 1]
    asked.clear()
    grown = readahead.Feed(path, 100)  # statted at 100 bytes, 300 now
    grown.fill()
    assert _read_all(grown) == bytes([0]) * 300
    assert asked == [101, 1000, 1000]
    asked.clear()
    unknown = readahead.Feed(path)
    unknown.fill()
    assert _read_all(unknown) == bytes([0]) * 300
    assert asked == [1000, 1000]
