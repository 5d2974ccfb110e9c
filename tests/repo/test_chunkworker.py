"""Tests of the chunk worker (repo/chunkworker.py) and of backups that use it."""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from archiving import run_backup
from conftest import MakeRepo

from chunker import ChunkerParams, chunk_bytes
from repo import backup, chunkworker, readahead
from repo.chunkworker import ChunkWorker, CutsFailed, WorkerFailed
from repo.repository import Repository
from repo.snapshot import Snapshot
from repo.types import BlobType
from repo.walk import walk

TINY = ChunkerParams(min_size=64, avg_size=256, max_size=1024)
WINDOW = 4096  # a few chunks a window: a file of some kilobytes spans many


def _data(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _file(path: Path, data: bytes) -> int:
    path.write_bytes(data)
    return os.open(path, os.O_RDONLY)


@pytest.fixture
def worker() -> Iterator[ChunkWorker]:
    started = ChunkWorker(TINY, WINDOW)
    assert started.is_ready(is_waiting=True)
    yield started
    started.close()


def _lengths(lists: Iterator[list[int]]) -> list[int]:
    return [n for lengths in lists for n in lengths]


def test_the_worker_gives_the_lengths_of_the_chunks_of_file_after_file(
    worker: ChunkWorker, tmp_path: Path
) -> None:
    """Files of many windows, one empty and one of a single short chunk, one after the
    other: each gets chunk_bytes's lengths, a list per window. The largest file spans
    far more windows than the worker may chunk ahead of the answers taken."""
    for i, size in enumerate([50_000, 0, 10, 3 * WINDOW, 200_000]):
        data = _data(i, size)
        fd = _file(tmp_path / f"f{i}", data)
        try:
            lists = list(worker.cut_lengths(fd))
        finally:
            os.close(fd)
        assert _lengths(iter(lists)) == [len(c) for c in chunk_bytes(data, TINY)]
        if size > 10 * WINDOW:
            assert len(lists) > 2 * chunkworker.AHEAD


def test_a_file_dropped_midway_leaves_the_worker_ready_for_the_next(
    worker: ChunkWorker, tmp_path: Path
) -> None:
    """Closed after its first window, a file's answers are skipped to its end, and the
    next file's lengths are its own. A file is not given while another is open."""
    first = _file(tmp_path / "first", _data(1, 300_000))
    data = _data(2, 40_000)
    second = _file(tmp_path / "second", data)
    try:
        lists = worker.cut_lengths(first)
        assert next(lists)
        with pytest.raises(RuntimeError, match="before the last one ended"):
            next(worker.cut_lengths(second))
        lists.close()
        assert _lengths(worker.cut_lengths(second)) == [len(c) for c in chunk_bytes(data, TINY)]
    finally:
        os.close(first)
        os.close(second)


def test_a_file_the_worker_cannot_read_fails_alone(worker: ChunkWorker, tmp_path: Path) -> None:
    """A descriptor that cannot be read (a folder's) is CutsFailed, naming the error;
    the worker serves the next file."""
    folder = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(CutsFailed, match="directory"):
            list(worker.cut_lengths(folder))
    finally:
        os.close(folder)
    data = _data(3, 9000)
    fd = _file(tmp_path / "f", data)
    try:
        assert _lengths(worker.cut_lengths(fd)) == [len(c) for c in chunk_bytes(data, TINY)]
    finally:
        os.close(fd)
    assert not worker.is_broken


def test_a_file_the_worker_cannot_chunk_fails_alone(tmp_path: Path) -> None:
    """A chunker error in the worker (here its window, under two maximal chunks) is
    CutsFailed, naming it."""
    narrow = ChunkWorker(TINY, 2 * TINY.max_size - 1)
    fd = _file(tmp_path / "f", _data(5, 9000))
    try:
        with pytest.raises(CutsFailed, match="window"):
            list(narrow.cut_lengths(fd))
        assert not narrow.is_broken
    finally:
        os.close(fd)
        narrow.close()


def test_an_answer_out_of_turn_breaks_the_worker(
    worker: ChunkWorker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A status that has no place in a file's answers (a second READY) is WorkerFailed,
    and the worker is not used again."""
    monkeypatch.setattr(ChunkWorker, "_answer", lambda self: (chunkworker.READY, b""))
    fd = _file(tmp_path / "f", _data(6, 9000))
    try:
        with pytest.raises(WorkerFailed, match="out of turn"):
            list(worker.cut_lengths(fd))
    finally:
        os.close(fd)
    assert worker.is_broken


def test_a_killed_worker_is_broken(worker: ChunkWorker, tmp_path: Path) -> None:
    """A worker killed between two files is WorkerFailed at the next, and stays broken."""
    os.kill(worker._proc.pid, signal.SIGKILL)
    worker._proc.wait()
    fd = _file(tmp_path / "f", _data(4, 9000))
    try:
        with pytest.raises(WorkerFailed):
            list(worker.cut_lengths(fd))
    finally:
        os.close(fd)
    assert worker.is_broken
    assert not worker.is_ready(is_waiting=True)


# -- backups through the worker ------------------------------------------------------


@pytest.fixture
def cut_apart(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every file of 20,000 bytes or more is read by the archiver and chunked through
    the worker, once it is ready (waited for); returns the number of lists of lengths
    each file got from it."""
    monkeypatch.setattr(readahead, "DIRECT_MAX", -1)
    monkeypatch.setattr(readahead, "DIRECT_FROM", 20_000)
    monkeypatch.setattr(backup, "CUT_APART_FROM", 20_000)
    monkeypatch.setattr(backup, "WAIT_FOR_CUTTER_FROM", 0)
    monkeypatch.setattr(backup, "READ_WINDOW", WINDOW)
    real = ChunkWorker.cut_lengths
    counts: list[int] = []

    def counting(self: ChunkWorker, fd: int) -> Generator[list[int], None, None]:
        counts.append(0)
        for lengths in real(self, fd):
            counts[-1] += 1
            yield lengths

    monkeypatch.setattr(ChunkWorker, "cut_lengths", counting)
    return counts


def _sources(root: Path) -> dict[str, bytes]:
    files = {
        "small": _data(10, 5000),
        "large": _data(11, 120_000),
        "copy": b"",  # the large file's middle, at another offset
        "zeros": bytes(60_000),
        "text": b"".join(b"line %d of the text\n" % i for i in range(4000)),
    }
    files["copy"] = b"head" + files["large"][30_000:90_000]
    root.mkdir()
    for name, data in files.items():
        (root / name).write_bytes(data)
    return files


def _content_ids(repo: Repository, snap: Snapshot) -> dict[bytes, list[bytes]]:
    return {
        os.path.basename(path): list(node.content or [])
        for path, node in walk(repo, snap.tree, b"/")
        if node.type == "file"
    }


def _content(repo: Repository, ids: list[bytes]) -> bytes:
    return b"".join(repo.load_blob(BlobType.DATA, blob_id) for blob_id in ids)


def test_files_chunked_through_the_worker_store_the_same_blobs(
    make_repo: MakeRepo, tmp_path: Path, cut_apart: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backup that chunks its large files through the worker stores every file as
    blobs of the same ids as a backup that chunks them itself."""
    files = _sources(tmp_path / "src")
    repo = make_repo(chunker=TINY)
    snap, reporter = run_backup(repo, tmp_path / "src")
    assert reporter.errors == reporter.warnings == []
    assert len(cut_apart) == 4 and min(cut_apart) > 1  # all but "small", many windows each
    through_worker = _content_ids(repo, snap)
    for name, ids in through_worker.items():
        assert _content(repo, ids) == files[os.fsdecode(name)]
    monkeypatch.setattr(backup, "CUT_APART_FROM", 1 << 62)
    snap, _reporter = run_backup(repo, tmp_path / "src")  # no parent: every file is read
    assert len(cut_apart) == 4
    assert _content_ids(repo, snap) == through_worker


def test_the_archiver_chunks_on_where_the_worker_fails(
    make_repo: MakeRepo, tmp_path: Path, cut_apart: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker killed after a file's first window: the archiver chunks the rest of
    the file itself, and every later file too; all are stored whole, without a warning."""
    repo = make_repo(chunker=TINY)
    files = _sources(tmp_path / "src")
    real = chunkworker.ChunkWorker._answer
    answers = []

    def dying(self: ChunkWorker) -> tuple[int, bytes]:
        answers.append(real(self))
        if len(answers) == 3:  # ready, then two windows of the first file
            os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        return answers[-1]

    monkeypatch.setattr(chunkworker.ChunkWorker, "_answer", dying)
    snap, reporter = run_backup(repo, tmp_path / "src")
    assert reporter.errors == reporter.warnings == []
    assert cut_apart == [1]  # its first window: the credit for the second fails
    for name, ids in _content_ids(repo, snap).items():
        assert _content(repo, ids) == files[os.fsdecode(name)]


class _Overlong:
    """A chunk worker whose lengths run past the end of the file (as when the file
    shrinks between the worker's read and the archiver's)."""

    is_broken = False

    def is_ready(self, *, is_waiting: bool = False) -> bool:
        return True

    def cut_lengths(self, fd: int) -> Iterator[list[int]]:
        yield [1000, os.fstat(fd).st_size, 10]

    def close(self) -> None:
        return None


def test_a_file_shorter_than_its_lengths_is_stored_as_read(
    make_repo: MakeRepo, tmp_path: Path, cut_apart: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lengths that run past the file's end end its chunks where the file ends."""
    repo = make_repo(chunker=TINY)
    files = _sources(tmp_path / "src")
    monkeypatch.setattr(chunkworker, "ChunkWorker", lambda *args: _Overlong())
    snap, reporter = run_backup(repo, tmp_path / "src")
    assert reporter.errors == reporter.warnings == []
    for name, ids in _content_ids(repo, snap).items():
        data = files[os.fsdecode(name)]
        assert _content(repo, ids) == data
        if len(data) >= 20_000:
            assert [len(repo.load_blob(BlobType.DATA, i)) for i in ids] == [1000, len(data) - 1000]


@pytest.mark.parametrize("executable", ["/nonexistent/python", "/bin/false"])
def test_a_worker_that_cannot_start_leaves_the_files_to_the_archiver(
    make_repo: MakeRepo,
    tmp_path: Path,
    cut_apart: list[int],
    monkeypatch: pytest.MonkeyPatch,
    executable: str,
) -> None:
    """An interpreter that cannot be run (a warning says so) or that exits at once:
    every file is chunked by the archiver."""
    repo = make_repo(chunker=TINY)
    files = _sources(tmp_path / "src")
    monkeypatch.setattr(chunkworker.sys, "executable", executable)
    snap, reporter = run_backup(repo, tmp_path / "src")
    assert reporter.errors == []
    if executable == "/bin/false":
        assert reporter.warnings == []
    else:
        assert [(p, m.split(":")[0]) for p, m in reporter.warnings] == [
            (b"", "cannot start the chunk worker")
        ]
    assert cut_apart == []
    for name, ids in _content_ids(repo, snap).items():
        assert _content(repo, ids) == files[os.fsdecode(name)]


def test_a_system_without_what_the_worker_needs_chunks_in_the_archiver_quietly(
    make_repo: MakeRepo, tmp_path: Path, cut_apart: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the worker cannot run, no worker is started and nothing is said of it."""
    files = _sources(tmp_path / "src")
    repo = make_repo(chunker=TINY)
    monkeypatch.setattr(chunkworker, "is_supported", lambda: False)
    snap, reporter = run_backup(repo, tmp_path / "src")
    assert reporter.errors == reporter.warnings == []
    assert cut_apart == []
    for name, ids in _content_ids(repo, snap).items():
        assert _content(repo, ids) == files[os.fsdecode(name)]
