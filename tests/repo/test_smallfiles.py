"""Tests of the small-file worker (repo/smallfiles.py) and of backups through it."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Any

import pytest
from archiving import run_backup

from crypto import id_hash
from repo import backup, smallfiles
from repo.backup import Archiver
from repo.repository import Repository
from repo.snapshot import Snapshot
from repo.types import BlobType
from repo.walk import find_node, walk


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every backup starts the worker at once and waits until it is ready; returns the
    paths whose results the archiver takes from it."""
    monkeypatch.setattr(backup, "WORKER_FROM", 0)
    init = smallfiles.SmallFileWorker.__init__
    take = smallfiles.SmallFileWorker.take
    paths: list[bytes] = []

    def started(self: smallfiles.SmallFileWorker, *args: Any) -> None:
        init(self, *args)
        deadline = time.monotonic() + 30
        while not self.is_ready() and not self.is_broken and time.monotonic() < deadline:
            time.sleep(0.01)

    def taking(self: smallfiles.SmallFileWorker, path: bytes) -> list[Any]:
        paths.append(path)
        return take(self, path)

    monkeypatch.setattr(smallfiles.SmallFileWorker, "__init__", started)
    monkeypatch.setattr(smallfiles.SmallFileWorker, "take", taking)
    return paths


def _contents(repo: Repository, snap: Snapshot) -> dict[bytes, bytes]:
    """Each file's path and content as the snapshot stores it."""
    out = {}
    for path, node in walk(repo, snap.tree, b"/"):
        if node.type == "file":
            blobs = [repo.load_blob(BlobType.DATA, b) for b in node.content or []]
            out[path] = b"".join(blobs)
    return out


def _subtree(repo: Repository, snap: Snapshot, path: Path) -> bytes | None:
    return find_node(repo, snap.tree, os.fsencode(path)).subtree


def _corpus(root: Path) -> dict[bytes, bytes]:
    """Files of many sizes around the worker's limit, some of them alike, in folders."""
    files: dict[bytes, bytes] = {}
    sizes = [0, 1, 100, 4095, 4096, 60_000, smallfiles.MAX_SIZE, smallfiles.MAX_SIZE + 1, 300_000]
    for i in range(150):
        kind = i % 30  # files 30 apart are alike
        size = sizes[kind % len(sizes)]
        data = (b"%05d " % kind * (size // 6 + 1))[:size]
        path = root / f"d{i % 3}" / ("sub" if i % 2 else "") / f"f{i:03d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files[os.fsencode(path)] = data
    return files


@pytest.mark.parametrize("later", [0, backup.TAKE_LATER_BYTES])
def test_a_backup_through_the_worker_stores_what_the_archiver_stores(
    repo: Repository,
    tmp_path: Path,
    taken: list[bytes],
    monkeypatch: pytest.MonkeyPatch,
    later: int,
) -> None:
    """Every small file goes through the worker, its result taken before or after the
    folders beside it; the tree is the one the archiver alone stores, and each blob
    opens to the file's bytes."""
    monkeypatch.setattr(backup, "TAKE_LATER_BYTES", later)
    files = _corpus(tmp_path / "src")
    snap, reporter = run_backup(repo, tmp_path / "src")
    assert reporter.errors == reporter.warnings == []
    small = {p for p, data in files.items() if len(data) <= smallfiles.MAX_SIZE}
    assert set(taken) == small
    assert _contents(repo, snap) == files
    # Alike files are stored once, whichever way they were read.
    blobs = {b for _p, node in walk(repo, snap.tree, b"/") for b in node.content or []}
    assert snap.summary is not None
    assert snap.summary["data_blobs"] == len(blobs) < 150

    taken.clear()
    monkeypatch.setattr(backup, "WORKER_FROM", 10**9)
    alone, reporter = run_backup(repo, tmp_path / "src", is_force=True)
    assert reporter.errors == reporter.warnings == []
    assert taken == []
    # The folders on the way to src may change meanwhile (other tests write to /tmp).
    assert _subtree(repo, alone, tmp_path / "src") == _subtree(repo, snap, tmp_path / "src")
    assert alone.summary is not None and alone.summary["data_blobs"] == 0


def test_the_worker_reports_what_the_archiver_reports(
    repo: Repository, tmp_path: Path, taken: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file gone after its stat fails with the error reading it raised; one that grew
    or turned into a FIFO is left to the archiver, which says so."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(10):
        (src / f"f{i}").write_bytes(b"x%d" % i)
    stat_entry = Archiver._stat_entry

    def changing(self: Archiver, path: bytes, *args: Any) -> Any:
        entry = stat_entry(self, path, *args)
        name = os.path.basename(path)
        if name == b"f2":
            os.unlink(path)
        elif name == b"f4":
            with open(path, "ab") as f:
                f.write(b" and more")
        elif name == b"f6":
            os.unlink(path)
            os.mkfifo(path)
        return entry

    monkeypatch.setattr(Archiver, "_stat_entry", changing)
    snap, reporter = run_backup(repo, src)
    f2, f4, f6 = (os.fsencode(src / n) for n in ("f2", "f4", "f6"))
    assert reporter.errors == [
        (f2, os.strerror(errno.ENOENT)),
        (f6, "changed type while being read"),
    ]
    assert reporter.warnings == [(f4, "file changed while it was read; stored what was read")]
    contents = _contents(repo, snap)
    assert contents[f4] == b"x4 and more"
    assert set(contents) == {os.fsencode(src / f"f{i}") for i in range(10)} - {f2, f6}
    assert all(contents[os.fsencode(src / f"f{i}")] == b"x%d" % i for i in (0, 1, 3, 5, 7, 8, 9))
    assert f2 in taken and f4 in taken


@pytest.mark.parametrize("when", ["ready", "first reply"])
def test_a_worker_that_dies_leaves_its_files_to_the_archiver(
    repo: Repository,
    tmp_path: Path,
    taken: list[bytes],
    monkeypatch: pytest.MonkeyPatch,
    when: str,
) -> None:
    """Killed once ready, or after its first reply (whatever it wrote before dying is
    still read), the worker is not used again, and every file is stored all the same."""
    files = _corpus(tmp_path / "src")
    kinds: list[int] = []
    take = smallfiles.SmallFileWorker.take
    receive = smallfiles.SmallFileWorker._receive
    is_ready = smallfiles.SmallFileWorker.is_ready

    def taking(self: smallfiles.SmallFileWorker, path: bytes) -> list[Any]:
        result = take(self, path)
        kinds.append(result[0])
        return result

    def killed_when_ready(self: smallfiles.SmallFileWorker, *, is_waiting: bool = False) -> bool:
        if is_ready(self, is_waiting=is_waiting):
            self._proc.kill()
            self._proc.wait()
        return is_ready(self)

    def killed_after_reply(self: smallfiles.SmallFileWorker) -> None:
        receive(self)
        self._proc.kill()

    monkeypatch.setattr(smallfiles.SmallFileWorker, "take", taking)
    if when == "ready":
        monkeypatch.setattr(smallfiles.SmallFileWorker, "is_ready", killed_when_ready)
    else:
        monkeypatch.setattr(smallfiles.SmallFileWorker, "_receive", killed_after_reply)
    snap, reporter = run_backup(repo, tmp_path / "src")
    assert reporter.errors == reporter.warnings == []
    assert _contents(repo, snap) == files
    if when == "ready":
        assert kinds and set(kinds) == {smallfiles.ELSEWHERE}
    else:
        assert smallfiles.STORED in kinds


def test_extended_attributes_come_with_the_content(
    repo: Repository, tmp_path: Path, taken: list[bytes]
) -> None:
    """The worker reads a file's extended attributes; an unchanged file takes them from
    the parent, and a file whose attributes changed (so did its ctime) is read again."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}").write_bytes(b"%d" % i)
    try:
        os.setxattr(src / "f1", "user.note", b"one")
    except OSError as exc:
        pytest.skip(f"this file system takes no user xattrs: {exc}")
    time.sleep(2 * backup.RACY_NS / 1e9)  # not racy against the next backup's start
    first, reporter = run_backup(repo, src)
    assert reporter.errors == []
    f1, f2 = os.fsencode(src / "f1"), os.fsencode(src / "f2")
    assert f1 in taken
    nodes = {path: node for path, node in walk(repo, first.tree, b"/")}
    assert nodes[f1].xattrs == [(b"user.note", b"one")]
    assert nodes[f2].xattrs == []

    os.setxattr(src / "f2", "user.note", b"two")
    taken.clear()
    second, reporter = run_backup(repo, src, parent=first)
    assert reporter.errors == []
    assert taken == [f2]
    nodes = {path: node for path, node in walk(repo, second.tree, b"/")}
    assert nodes[f1].xattrs == [(b"user.note", b"one")]
    assert nodes[f2].xattrs == [(b"user.note", b"two")]


def test_files_the_page_cache_lacks_are_read_after_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read that would wait for the disk is put off: the file is asked for and read
    after the rest of its batch, and its result stays in its place."""
    paths = []
    for i in range(5):
        path = tmp_path / f"f{i}"
        path.write_bytes(b"data %d" % i)
        paths.append(os.fsencode(path))
    preadv = os.preadv
    asked: list[int] = []

    def uncached(fd: int, buffers: Any, offset: int, flags: int = 0) -> int:
        name = os.readlink(f"/proc/self/fd/{fd}")
        if flags and name.endswith(("f1", "f3")):
            raise BlockingIOError(errno.EAGAIN, "would block")
        asked.append(int(name[-1]))
        return preadv(fd, buffers, offset, flags)

    monkeypatch.setattr(smallfiles.os, "preadv", uncached)

    def store(data: memoryview) -> tuple[bytes | None, bytearray | None]:
        return bytes(data), bytearray(b"sealed")

    batch: list[list[Any]] = [[p, 6] for p in paths]
    results = smallfiles._read_batch(batch, store)
    assert asked == [0, 2, 4, 1, 3]
    assert [r[3] for r in results] == [b"data %d" % i for i in range(5)]
    assert [r[-1] for r in results] == paths
    assert all(r[0] == smallfiles.STORED for r in results)


def test_results_are_taken_by_name_in_any_order(tmp_path: Path) -> None:
    """Each result is its own file's, whatever order they are taken in; a file not
    owed a result, or submitted twice, is refused."""
    paths = []
    for i in range(3):
        path = tmp_path / f"f{i}"
        path.write_bytes(b"content %d" % i)
        paths.append(os.fsencode(path))
    id_key = os.urandom(32)
    worker = smallfiles.SmallFileWorker(os.urandom(32), id_key, 2)
    try:
        worker.submit(paths, [9, 9, 9])
        with pytest.raises(RuntimeError, match="twice"):
            worker.submit(paths[:1], [9])
        for i in (2, 0, 1):
            result = worker.take(paths[i])
            assert result[:3] == [smallfiles.STORED, 9, os.stat(paths[i]).st_mtime_ns]
            assert result[3] == id_hash(id_key, b"content %d" % i)
        with pytest.raises(KeyError):
            worker.take(paths[0])
    finally:
        worker.close()


def test_a_folder_listed_ahead_of_its_turn_fails_in_its_turn(
    repo: Repository, tmp_path: Path, taken: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder after a folder of files only is listed before that one's files are
    stored: a folder that cannot be listed is reported as before, once, and the others
    are stored whole; no folder is left open."""
    src = tmp_path / "src"
    for folder in ("a", "b", "c", "d/inner"):
        for i in range(3):
            path = src / folder / f"f{i}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"{folder} {i}".encode())
    scandir = backup._scandir
    listed: list[bytes] = []

    taken_before: dict[bytes, int] = {}

    def refusing(path: bytes) -> Any:
        listed.append(os.path.basename(path))
        taken_before[os.path.basename(path)] = len(taken)
        if path.endswith(b"/b"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return scandir(path)

    monkeypatch.setattr(backup, "_scandir", refusing)
    before = len(os.listdir("/proc/self/fd"))
    snap, reporter = run_backup(repo, src)
    assert len(os.listdir("/proc/self/fd")) == before
    assert reporter.errors == [(os.fsencode(src / "b"), os.strerror(errno.EACCES))]
    assert listed == [b"src", b"a", b"b", b"c", b"d", b"inner"]
    # b is listed before the files of a are taken, d before those of c.
    assert taken_before == {b"src": 0, b"a": 0, b"b": 0, b"c": 3, b"d": 3, b"inner": 6}
    stored = {os.path.relpath(os.fsdecode(p), src) for p in _contents(repo, snap)}
    assert stored == {f"{d}/f{i}" for d in ("a", "c", "d/inner") for i in range(3)}


def test_a_garbled_frame_or_a_broken_pipe_stops_the_worker() -> None:
    """Bytes that are no msgpack value, a pipe that cannot be read, and a pipe that ends
    are the worker's failure (WorkerFailed), never a file's error (OSError)."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, smallfiles._LENGTH.pack(3) + b"\xc1\xc1\xc1")  # 0xc1: never used
        with pytest.raises(smallfiles.WorkerFailed):
            smallfiles._read_frame(read_end)
        with pytest.raises(smallfiles.WorkerFailed, match="pipe"):
            smallfiles._read_frame(write_end)  # EBADF: not open for reading
        os.close(write_end)
        write_end = -1
        with pytest.raises(smallfiles.WorkerFailed, match="stopped"):
            smallfiles._read_frame(read_end)
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def test_a_reply_of_the_wrong_length_stops_the_worker(tmp_path: Path) -> None:
    """A reply that does not answer the batch it should is not used: the worker is
    broken, and its files are ELSEWHERE."""
    paths = []
    for i in range(2):
        path = tmp_path / f"f{i}"
        path.write_bytes(b"%d" % i)
        paths.append(os.fsencode(path))
    worker = smallfiles.SmallFileWorker(os.urandom(32), os.urandom(32), 2)
    try:
        worker.submit(paths, [1, 1])
        worker._sent[0] += 1  # the batch of two now expects three results
        assert worker.take(paths[0]) == [smallfiles.ELSEWHERE]
        assert worker.is_broken
        assert worker.take(paths[1]) == [smallfiles.ELSEWHERE]
    finally:
        worker.close()


@pytest.mark.parametrize("executable", ["/nonexistent/python", "/bin/false"])
def test_a_worker_that_cannot_start_leaves_the_files_to_the_archiver(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, executable: str
) -> None:
    """An interpreter that cannot be run is a warning; one that exits at once is never
    ready. Either way every file is stored by the archiver."""
    monkeypatch.setattr(backup, "WORKER_FROM", 0)
    monkeypatch.setattr(smallfiles.sys, "executable", executable)
    files = _corpus(tmp_path / "src")
    taken: list[bytes] = []
    monkeypatch.setattr(smallfiles.SmallFileWorker, "take", lambda _self, p: taken.append(p))
    snap, reporter = run_backup(repo, tmp_path / "src")
    assert reporter.errors == []
    if executable == "/bin/false":
        assert reporter.warnings == []
    else:
        assert [m for _p, m in reporter.warnings] == [
            f"cannot start the small-file worker: [Errno 2] No such file or directory: "
            f"'{executable}'"
        ]
    assert taken == []
    assert _contents(repo, snap) == files
