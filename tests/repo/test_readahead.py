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
    sizes = [500] * 10 + [5000] * 4 + [500] * 3
    paths = _files(tmp_path, sizes)
    readers = Readers(threads)
    started: list[int] = []
    original = readers._start

    def counting(path: bytes) -> readahead.Feed:
        started.append(paths.index(path))
        return original(path)

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
