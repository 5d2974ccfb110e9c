"""Tests for repo.restore, repo.restorefs, repo.packread and repo.dump: contents and
metadata restored exactly, sparse holes, overwrite modes, --delete, --dry-run, damage,
the worker pool's bookkeeping, and dump's read-ahead."""

from __future__ import annotations

import errno
import gc
import io
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import MakeRepo
from strategies import PASSWORD, seeded

from chunker import ChunkerParams
from repo import packread, restore, restorefs
from repo.backend.local import LocalBackend
from repo.backend.memory import MemoryBackend
from repo.backup import Archiver, BackupOptions, QuietReporter
from repo.dump import dump_file, file_chunks
from repo.errors import DamagedObject, RepoError
from repo.forked import WorkerDied
from repo.pattern import split_path
from repo.repository import Repository
from repo.restore import RestoreOptions, Restorer, RestoreResult
from repo.restorefs import Dirs
from repo.tree import Node
from repo.types import BlobLocation, BlobType, Handle, Kind
from repo.walk import file_content, find_node

TINY_CHUNKS = ChunkerParams(min_size=64, avg_size=256, max_size=1024)
OLD_NS = 1_600_000_000_123_456_789
ZEROS = 64 * 1024


class CountingBackend(MemoryBackend):
    """A memory backend that records every range read of a data pack."""

    def __init__(self) -> None:
        super().__init__()
        self.data_reads: list[tuple[str, int, int | None]] = []

    def read(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        if handle.kind is Kind.DATA:
            self.data_reads.append((handle.name, offset, length))
        return super().read(handle, offset, length)


class Collect:
    """A reporter that keeps what it is told."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []
        self.plan: list[tuple[str, str]] = []
        self.written = 0

    def bytes_written(self, n: int) -> None:
        self.written += n

    def error(self, path: str, message: str) -> None:
        self.errors.append((path, message))

    def planned(self, path: str, action: str) -> None:
        self.plan.append((path, action))


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _make_source(root: Path) -> dict[str, bytes]:
    """Files of every shape a restore treats differently; returns their contents."""
    rng = seeded(7)
    files = {
        "big.bin": rng.randbytes(40_000),  # many chunks, several packs and pack ranges
        "same1.txt": b"twice the same chunk\n",
        "sub/same2.txt": b"twice the same chunk\n",
        "empty": b"",
        # All-zero chunks in the middle and at the end: holes with --sparse.
        "sparse.img": rng.randbytes(3000) + bytes(ZEROS) + rng.randbytes(2000) + bytes(ZEROS),
        "sub/deeper/text.txt": b"some text that compresses well " * 300,
    }
    for i in range(12):
        files[f"many/d{i}/empty"] = b""
        files[f"many/d{i}/small"] = f"file {i}\n".encode()
    for rel, data in files.items():
        _write(root / rel, data)
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        os.utime(path, ns=(OLD_NS, OLD_NS))
    os.chmod(root / "sub/deeper/text.txt", 0o640)
    return files


def _backup(repo: Repository, src: Path) -> None:
    opts = BackupOptions(paths=[os.fsencode(src)], hostname="h", username="u", time_ns=OLD_NS)
    archiver = Archiver(repo, opts, QuietReporter())
    archiver.run()
    assert archiver.stats.errors == 0


@pytest.fixture
def source(make_repo: MakeRepo, tmp_path: Path) -> tuple[CountingBackend, Path, dict[str, bytes]]:
    """A source tree backed up into a small-pack repository."""
    backend = CountingBackend()
    repo = make_repo(backend, pack_size=4096, chunker=TINY_CHUNKS)
    src = tmp_path / "src"
    files = _make_source(src)
    _backup(repo, src)
    return backend, src, files


def _restore(
    backend: MemoryBackend, src: Path, target: Path, **options: object
) -> tuple[RestoreResult, Collect]:
    repo = Repository.open(backend, PASSWORD)
    try:
        (snap,) = repo.list_snapshots()
        path = os.fsencode(src)
        root = find_node(repo, snap.tree, path)
        reporter = Collect()
        opts = RestoreOptions(os.fsencode(target), **options)  # type: ignore[arg-type]
        result = Restorer(repo, root, split_path(path), opts, reporter).run()
    finally:
        repo.close()
    return result, reporter


def _assert_restored(target: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = target / rel
        assert path.read_bytes() == data, rel
        assert path.stat().st_mtime_ns == OLD_NS, rel


@pytest.fixture(params=[1, 3])
def threads(request: pytest.FixtureRequest) -> int:
    """Restores run with one worker and with several."""
    return int(request.param)


@pytest.fixture(params=["one thread", "threads", "processes"])
def workers(request: pytest.FixtureRequest) -> dict[str, object]:
    """Restore options for one worker thread, several, and worker processes."""
    options: dict[str, dict[str, object]] = {
        "one thread": {"threads": 1},
        "threads": {"threads": 3},
        "processes": {"threads": 3, "processes": True},
    }
    return options[request.param]


# -- contents and metadata -----------------------------------------------------------


def _restore_exactly(
    source: tuple[MemoryBackend, Path, dict[str, bytes]], target: Path, **options: object
) -> None:
    """Restore the source's snapshot with these options (workers): no error, every
    file, exact."""
    backend, src, files = source
    result, reporter = _restore(backend, src, target, **options)
    assert reporter.errors == []
    assert result.files == len(files)
    _assert_restored(target, files)


def test_restore_is_exact(
    source: tuple[CountingBackend, Path, dict[str, bytes]],
    tmp_path: Path,
    workers: dict[str, object],
) -> None:
    """Every file comes back byte for byte with its mtime and mode; folders too."""
    backend, src, files = source
    target = tmp_path / "out"
    result, reporter = _restore(backend, src, target, **workers)
    assert reporter.errors == []
    assert result.errors == 0
    assert result.files == len(files)
    assert result.bytes == reporter.written == sum(len(d) for d in files.values())
    _assert_restored(target, files)
    assert (target / "sub/deeper/text.txt").stat().st_mode & 0o777 == 0o640
    assert (target / "sub").stat().st_mtime_ns == OLD_NS


class Pwritev:
    """Records the flags of every os.pwritev and the errors it raised; the real call runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.flags: list[int] = []
        self.refused: list[int] = []
        real = os.pwritev

        def pwritev(fd: int, buffers: list[memoryview], offset: int, flags: int = 0) -> int:
            self.flags.append(flags)
            try:
                return real(fd, buffers, offset, flags)
            except OSError as exc:
                self.refused.append(exc.errno or 0)
                raise

        monkeypatch.setattr(os, "pwritev", pwritev)


def test_dear_cached_writes_go_uncached(
    source: tuple[CountingBackend, Path, dict[str, bytes]],
    tmp_path: Path,
    threads: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where a worker's cached writes cost more than the threshold, it writes uncached
    (but for every PROBE_EVERY-th write, which measures again), and the files are exact."""
    monkeypatch.setattr(restore, "MEASURE_FROM", 1)
    monkeypatch.setattr(restore, "DEAR_NS_PER_KIB", -1)
    calls = Pwritev(monkeypatch)
    _restore_exactly(source, tmp_path / "out", threads=threads)
    if calls.refused:
        pytest.skip(f"this system refuses RWF_DONTCACHE (errno {calls.refused[0]})")
    assert calls.flags
    assert set(calls.flags) == {restore.RWF_DONTCACHE}


def test_cheap_cached_writes_stay_cached(
    source: tuple[CountingBackend, Path, dict[str, bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cached writes that cost less than the threshold go on being cached."""
    monkeypatch.setattr(restore, "MEASURE_FROM", 1)
    monkeypatch.setattr(restore, "DEAR_NS_PER_KIB", 10**12)
    calls = Pwritev(monkeypatch)
    _restore_exactly(source, tmp_path / "out", threads=3)
    assert calls.flags == []


def test_refused_uncached_writes_fall_back_to_cached(
    source: tuple[CountingBackend, Path, dict[str, bytes]],
    tmp_path: Path,
    threads: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A kernel that refuses the flag (here one no kernel knows) costs nothing: that
    write and all after it are cached, and the restore is exact."""
    monkeypatch.setattr(restore, "MEASURE_FROM", 1)
    monkeypatch.setattr(restore, "DEAR_NS_PER_KIB", -1)
    monkeypatch.setattr(restore, "RWF_DONTCACHE", 1 << 30)
    calls = Pwritev(monkeypatch)
    _restore_exactly(source, tmp_path / "out", threads=threads)
    assert calls.refused
    assert set(calls.refused) <= {errno.EOPNOTSUPP, errno.EINVAL}
    # Each worker tries the flag once at most: none after the refusals.
    assert calls.flags.count(1 << 30) == len(calls.refused) <= threads


@pytest.mark.parametrize("processes", [False, True])
@pytest.mark.parametrize(("batch_files", "batch_chunks"), [(1, 1000), (3, 1000), (1000, 5)])
def test_restore_in_batches_is_exact(
    source: tuple[CountingBackend, Path, dict[str, bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    batch_files: int,
    batch_chunks: int,
    processes: bool,
) -> None:
    """However small the batches, by files or by chunks, the restore is the same: every
    file exact, folders with their metadata, and no batch ever holds more planned files
    than it may (plus the one that filled it)."""
    monkeypatch.setattr(restore, "BATCH_FILES", batch_files)
    monkeypatch.setattr(restore, "BATCH_CHUNKS", batch_chunks)
    held: list[int] = []
    real = Restorer._plan_writes

    def counting(self: Restorer) -> list[list[restore._Unit]]:
        held.append(len(self.files))
        return real(self)

    monkeypatch.setattr(Restorer, "_plan_writes", counting)
    backend, src, files = source
    target = tmp_path / "out"
    result, reporter = _restore(backend, src, target, threads=2, processes=processes)
    assert reporter.errors == []
    assert result.files == len(files)
    _assert_restored(target, files)
    assert (target / "sub").stat().st_mtime_ns == OLD_NS
    assert (target / "many/d11").stat().st_mtime_ns == OLD_NS
    assert sum(held) == len(files)
    assert len(held) > 1
    assert max(held) <= batch_files


@pytest.mark.parametrize("processes", [False, True])
def test_hard_links_and_delete_across_batches(
    make_repo: MakeRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processes: bool
) -> None:
    """A hard link whose first name was restored in an earlier batch is linked to it;
    --delete still sees every folder's names."""
    monkeypatch.setattr(restore, "BATCH_FILES", 2)
    src = tmp_path / "src"
    for i in range(5):
        _write(src / f"a/f{i}", b"file %d" % i)
    os.link(src / "a/f0", src / "z_link")
    backend = CountingBackend()
    repo = make_repo(backend)
    _backup(repo, src)
    target = tmp_path / "out"
    _write(target / "a/extra", b"not in the snapshot")
    result, reporter = _restore(backend, src, target, is_delete=True, processes=processes)
    assert reporter.errors == []
    assert result.deleted == 1
    assert not (target / "a/extra").exists()
    assert os.path.samefile(target / "a/f0", target / "z_link")
    assert [(target / f"a/f{i}").read_bytes() for i in range(5)] == [
        b"file %d" % i for i in range(5)
    ]


def test_a_file_spanning_many_pack_ranges(
    source: tuple[CountingBackend, Path, dict[str, bytes]],
    tmp_path: Path,
    workers: dict[str, object],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With tiny range reads, one file is written by many workers' ranges; it still
    comes back exact, with its metadata applied once all of it is there."""
    monkeypatch.setattr(packread, "MAX_READ", 2048)
    backend, src, files = source
    target = tmp_path / "out"
    _result, reporter = _restore(backend, src, target, **workers)
    assert reporter.errors == []
    _assert_restored(target, files)
    big_reads = {r for r in backend.data_reads if r[2] is not None and r[2] <= 2048}
    assert len(big_reads) > 10


def test_a_worker_done_with_its_lane_helps_with_another(
    source: tuple[CountingBackend, Path, dict[str, bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """However unevenly the work is cut, every unit runs once and the restore is exact."""

    def uneven(self: Restorer, units: list[restore._Unit]) -> list[list[restore._Unit]]:
        return [units[:1], units[1:]]

    monkeypatch.setattr(Restorer, "_lanes", uneven)
    monkeypatch.setattr(packread, "MAX_READ", 2048)
    _restore_exactly(source, tmp_path / "out", threads=2)


def test_each_pack_range_is_read_once(
    source: tuple[CountingBackend, Path, dict[str, bytes]], tmp_path: Path
) -> None:
    """A chunk that several files hold is written to all of them from one read, and no
    range of a pack is read twice."""
    backend, src, files = source
    repo = Repository.open(backend, PASSWORD)
    (snap,) = repo.list_snapshots()
    path = os.fsencode(src)
    (blob,) = file_content(repo, find_node(repo, snap.tree, path + b"/same1.txt"))
    assert file_content(repo, find_node(repo, snap.tree, path + b"/sub/same2.txt")) == [blob]
    loc = repo.index.lookup(BlobType.DATA, blob)
    assert loc is not None
    repo.close()
    backend.data_reads.clear()
    _restore(backend, src, tmp_path / "out")
    data_reads = [r for r in backend.data_reads if r[2] is not None]
    assert len(data_reads) == len(set(data_reads))
    covering = [
        r for r in data_reads if r[0] == loc.pack.hex() and r[1] <= loc.offset < r[1] + (r[2] or 0)
    ]
    assert len(covering) == 1
    assert (tmp_path / "out/same1.txt").read_bytes() == files["same1.txt"]
    assert (tmp_path / "out/sub/same2.txt").read_bytes() == files["sub/same2.txt"]


def test_sparse_restore_leaves_holes(
    source: tuple[CountingBackend, Path, dict[str, bytes]],
    tmp_path: Path,
    workers: dict[str, object],
) -> None:
    """--sparse writes no all-zero chunk, in the middle or at the end of a file, and
    the file still has its full size and bytes."""
    backend, src, files = source
    target = tmp_path / "out"
    result, reporter = _restore(backend, src, target, is_sparse=True, **workers)
    assert reporter.errors == []
    _assert_restored(target, files)
    st = (target / "sparse.img").stat()
    assert st.st_size == len(files["sparse.img"])
    assert st.st_blocks * 512 <= st.st_size - ZEROS  # at least a whole zero run is a hole
    assert result.bytes < sum(len(d) for d in files.values()) - ZEROS


def test_sparse_hole_at_the_end_of_a_small_file(make_repo: MakeRepo, tmp_path: Path) -> None:
    """A file read whole in one pack range, ending in zero chunks, still gets its size."""
    backend = MemoryBackend()
    repo = make_repo(backend, chunker=TINY_CHUNKS)  # one big pack: one range per file
    src = tmp_path / "src"
    data = seeded(3).randbytes(700) + bytes(3000)
    _write(src / "tail.bin", data)
    _backup(repo, src)
    target = tmp_path / "out"
    result, reporter = _restore(backend, src, target, is_sparse=True)
    assert reporter.errors == []
    assert (target / "tail.bin").read_bytes() == data
    assert result.bytes < len(data) - 2048


def test_restore_across_more_folders_than_open_descriptors(
    source: tuple[CountingBackend, Path, dict[str, bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Folders held open for running workers (making folders, writing files) are never
    closed under them, however few descriptors the restore may keep."""
    monkeypatch.setattr(restorefs, "OPEN_DIRS", 2)
    monkeypatch.setattr(restore, "LONE_BATCH", 3)
    monkeypatch.setattr(restore, "MKDIRS_PER_THREAD", 1)
    _restore_exactly(source, tmp_path / "out", threads=3)


def test_pinned_folders_stay_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening more folders than OPEN_DIRS closes only descriptors nobody pinned."""
    monkeypatch.setattr(restorefs, "OPEN_DIRS", 2)
    for i in range(6):
        (tmp_path / f"d{i}").mkdir()
    root = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    dirs = Dirs(root)
    try:
        pinned = {i: dirs.pin((f"d{i}".encode(),)) for i in range(3)}
        for i in range(3, 6):
            dirs.fd((f"d{i}".encode(),))
        for i, fd in pinned.items():
            assert os.fstat(fd).st_ino == (tmp_path / f"d{i}").stat().st_ino
        for i in range(3):
            dirs.unpin((f"d{i}".encode(),))
        dirs.fd((b"d5",))
        assert len(dirs._fds) <= 2
    finally:
        dirs.close()
        os.close(root)


def test_a_fresh_target_is_not_looked_at_entry_by_entry(
    source: tuple[CountingBackend, Path, dict[str, bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Into an empty target every entry is new: no lstat per entry before creating it."""
    looked: list[bytes] = []

    def lstat_at(parent: int | None, name: bytes) -> os.stat_result | None:
        looked.append(name)
        return restorefs.lstat_at(parent, name)

    monkeypatch.setattr(restore, "lstat_at", lstat_at)
    backend, src, files = source
    target = tmp_path / "out"
    target.mkdir()
    _result, reporter = _restore(backend, src, target)
    assert reporter.errors == []
    assert looked == []
    _assert_restored(target, files)


def test_a_failed_write_is_an_error_for_that_file_only(
    source: tuple[CountingBackend, Path, dict[str, bytes]],
    tmp_path: Path,
    workers: dict[str, object],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A write that fails (a full disk) is reported once for its file, which gets no
    metadata, though several workers failed to write it; the other files are restored."""
    real_pwrite = os.pwrite

    def pwrite(fd: int, data: bytes | memoryview, offset: int) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("big.bin"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    monkeypatch.setattr(packread, "MAX_READ", 2048)
    backend, src, files = source
    target = tmp_path / "out"
    result, reporter = _restore(backend, src, target, **workers)
    assert reporter.errors == [("big.bin", "No space left on device")]
    assert result.errors == 1
    assert (target / "big.bin").stat().st_mtime_ns != OLD_NS
    _assert_restored(target, {r: d for r, d in files.items() if r != "big.bin"})


# -- where the restored tree goes (ext4's top-of-hierarchy flag) ---------------------


def _is_marked(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = restorefs._flags(fd)
    finally:
        os.close(fd)
    return flags is not None and bool(flags & restorefs.TOPDIR_FL)


def _marked_dirs(target: Path) -> set[str]:
    return {str(p.relative_to(target)) for p in target.rglob("*") if p.is_dir() and _is_marked(p)}


@pytest.fixture
def markable(tmp_path: Path) -> None:
    """Skips where the test folder's file system has no top-of-hierarchy flag (ext4
    has it; tmpfs has not)."""
    probe = tmp_path / "probe"
    probe.mkdir()
    fd = os.open(probe, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if not restorefs.mark_top(fd):
            pytest.skip("the test folder's file system has no top-of-hierarchy flag")
    finally:
        os.close(fd)
    probe.rmdir()


@pytest.mark.usefixtures("markable")
def test_mark_top_sets_and_unmark_top_clears_that_flag_only(tmp_path: Path) -> None:
    """mark_top adds the flag to what the folder had, once; unmark_top takes it off and
    leaves the rest."""
    folder = tmp_path / "folder"
    folder.mkdir()
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        before = restorefs._flags(fd)
        assert before is not None and not before & restorefs.TOPDIR_FL
        assert restorefs.mark_top(fd)
        assert restorefs._flags(fd) == before | restorefs.TOPDIR_FL
        assert not restorefs.mark_top(fd)  # marked already: not ours to clear
        restorefs.unmark_top(fd)
        assert restorefs._flags(fd) == before
        restorefs.unmark_top(fd)  # nothing to take off
        assert restorefs._flags(fd) == before
    finally:
        os.close(fd)


def test_mark_top_at_a_name_that_is_no_folder_is_false(tmp_path: Path) -> None:
    """Marking is a hint: a name that is missing, a file or a symlink to a folder is
    not marked, and says so without raising."""
    (tmp_path / "file").write_bytes(b"x")
    (tmp_path / "folder").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "folder")
    parent = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in (b"missing", b"file", b"link"):
            assert restorefs.mark_top_at(parent, name) is False
    finally:
        os.close(parent)
    assert not _is_marked(tmp_path / "folder")


@pytest.mark.usefixtures("markable")
def test_a_restore_marks_the_folders_it_makes_first_and_clears_them(
    source: tuple[CountingBackend, Path, dict[str, bytes]],
    tmp_path: Path,
    workers: dict[str, object],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While it runs, a restore marks each folder it makes in a folder it did not make
    (here the target's two); none is left marked after it."""
    backend, src, files = source
    target = tmp_path / "out"
    result, reporter = _restore(backend, src, target, **workers)
    assert reporter.errors == []
    assert result.files == len(files)
    assert _marked_dirs(target) == set()
    _assert_restored(target, files)

    kept = tmp_path / "kept"
    monkeypatch.setattr(restore, "unmark_top", lambda fd: None)
    _restore(backend, src, kept, **workers)
    assert _marked_dirs(kept) == {"sub", "many"}


@pytest.mark.usefixtures("markable")
def test_a_folder_the_target_holds_is_not_marked(
    source: tuple[CountingBackend, Path, dict[str, bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A folder that was there before is never marked; the first folders made below it
    are."""
    backend, src, _files = source
    target = tmp_path / "out"
    (target / "sub").mkdir(parents=True)
    monkeypatch.setattr(restore, "unmark_top", lambda fd: None)
    _result, reporter = _restore(backend, src, target)
    assert reporter.errors == []
    assert _marked_dirs(target) == {"sub/deeper", "many"}


@pytest.mark.usefixtures("markable")
def test_a_mark_that_cannot_be_taken_off_is_an_error_for_its_folder(
    source: tuple[CountingBackend, Path, dict[str, bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A folder whose mark stays is reported by name; the restore itself completes."""

    def unmark_top(fd: int) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(restore, "unmark_top", unmark_top)
    backend, src, files = source
    target = tmp_path / "out"
    result, reporter = _restore(backend, src, target)
    message = "top-of-hierarchy flag left set: Operation not permitted"
    assert sorted(reporter.errors) == [("many", message), ("sub", message)]
    assert result.errors == 2
    _assert_restored(target, files)


@pytest.mark.usefixtures("markable")
def test_a_restore_that_fails_clears_its_marks(
    source: tuple[CountingBackend, Path, dict[str, bytes]], tmp_path: Path
) -> None:
    """A restore stopped by an error takes its marks off on the way out."""

    class Stopping(Collect):
        def bytes_written(self, n: int) -> None:
            raise KeyboardInterrupt

    backend, src, _files = source
    target = tmp_path / "out"
    repo = Repository.open(backend, PASSWORD)
    try:
        (snap,) = repo.list_snapshots()
        path = os.fsencode(src)
        root = find_node(repo, snap.tree, path)
        opts = RestoreOptions(os.fsencode(target), threads=1)
        with pytest.raises(KeyboardInterrupt):
            Restorer(repo, root, split_path(path), opts, Stopping()).run()
    finally:
        repo.close()
    assert (target / "sub").is_dir()
    assert _marked_dirs(target) == set()


# -- what the target already holds ---------------------------------------------------


def test_overwrite_always_replaces_and_never_writes_through_links(
    source: tuple[CountingBackend, Path, dict[str, bytes]], tmp_path: Path
) -> None:
    """An existing file is replaced by a new inode: a hard link to a file outside the
    target keeps that file's bytes."""
    backend, src, files = source
    target = tmp_path / "out"
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"precious")
    target.mkdir()
    os.link(outside, target / "same1.txt")
    result, reporter = _restore(backend, src, target)
    assert reporter.errors == []
    assert outside.read_bytes() == b"precious"
    _assert_restored(target, files)
    assert result.skipped == 0


def test_overwrite_if_changed_rewrites_only_what_differs(
    source: tuple[CountingBackend, Path, dict[str, bytes]],
    tmp_path: Path,
    workers: dict[str, object],
) -> None:
    """if-changed writes only the chunks that differ, cuts a grown file to size, and
    leaves the others' bytes alone."""
    backend, src, files = source
    target = tmp_path / "out"
    _restore(backend, src, target)
    with open(target / "big.bin", "r+b") as f:
        f.seek(20_000)
        f.write(b"\xff" * 10)
    with open(target / "sub/deeper/text.txt", "ab") as f:
        f.write(b"grown")
    result, reporter = _restore(backend, src, target, overwrite="if-changed", **workers)
    assert reporter.errors == []
    _assert_restored(target, files)
    assert 0 < result.bytes < 2048 + len(files["sub/deeper/text.txt"])


def test_overwrite_if_newer_and_never(
    source: tuple[CountingBackend, Path, dict[str, bytes]], tmp_path: Path
) -> None:
    """if-newer keeps a file newer than the snapshot's; never keeps every existing file
    but still creates missing ones."""
    backend, src, files = source
    target = tmp_path / "out"
    _write(target / "same1.txt", b"newer")
    _write(target / "big.bin", b"older")
    os.utime(target / "big.bin", ns=(1, 1))
    result, _reporter = _restore(backend, src, target, overwrite="if-newer")
    assert (target / "same1.txt").read_bytes() == b"newer"
    assert (target / "big.bin").read_bytes() == files["big.bin"]
    assert result.skipped == 1
    (target / "big.bin").write_bytes(b"kept")
    (target / "empty").unlink()
    result, _reporter = _restore(backend, src, target, overwrite="never")
    assert (target / "big.bin").read_bytes() == b"kept"
    assert (target / "empty").exists()


def test_delete_and_dry_run(
    source: tuple[CountingBackend, Path, dict[str, bytes]], tmp_path: Path
) -> None:
    """--dry-run lists what would happen and changes nothing; --delete then removes
    what the snapshot lacks."""
    backend, src, files = source
    target = tmp_path / "out"
    _write(target / "extra.txt", b"not in the snapshot")
    _write(target / "sub/extra/inner", b"neither")
    result, reporter = _restore(backend, src, target, is_dry_run=True, is_delete=True)
    assert sorted(p.name for p in target.iterdir()) == ["extra.txt", "sub"]
    assert ("extra.txt", "delete") in reporter.plan
    assert ("big.bin", "create") in reporter.plan
    result, reporter = _restore(backend, src, target, is_delete=True, is_verify=True)
    assert reporter.errors == []
    assert result.deleted == 2
    assert not (target / "extra.txt").exists()
    assert not (target / "sub/extra").exists()
    _assert_restored(target, files)


def test_a_file_in_the_way_of_a_folder_fails_only_that_folder(
    source: tuple[CountingBackend, Path, dict[str, bytes]], tmp_path: Path, threads: int
) -> None:
    """With --overwrite never, a file where a folder belongs is an error for it and
    for each file below it; everything else is restored."""
    backend, src, files = source
    target = tmp_path / "out"
    _write(target / "sub", b"a file, not a folder")
    result, reporter = _restore(backend, src, target, overwrite="never", threads=threads)
    failed = {path for path, _message in reporter.errors}
    assert failed == {"sub", "sub/same2.txt", "sub/deeper", "sub/deeper/text.txt"}
    assert result.errors == len(failed)
    _assert_restored(target, {r: d for r, d in files.items() if not r.startswith("sub")})


# -- damage --------------------------------------------------------------------------


def _damage_pack_of(backend: MemoryBackend, src: Path, rel: str, nth: int) -> tuple[int, int]:
    """Flip a byte in the nth chunk of a file; returns that chunk's byte range."""
    repo = Repository.open(backend, PASSWORD)
    (snap,) = repo.list_snapshots()
    content = file_content(repo, find_node(repo, snap.tree, os.fsencode(src / rel)))
    start = 0
    for blob_id in content[:nth]:
        loc = repo.index.lookup(BlobType.DATA, blob_id)
        assert loc is not None
        start += loc.raw_length
    loc = repo.index.lookup(BlobType.DATA, content[nth])
    assert loc is not None
    repo.close()
    handle = Handle(Kind.DATA, loc.pack.hex())
    data, mtime = backend.objects[handle]
    flipped = bytearray(data)
    flipped[loc.offset + loc.length // 2] ^= 1
    backend.objects[handle] = (bytes(flipped), mtime)
    return start, start + loc.raw_length


def test_damaged_chunk_is_reported_and_the_rest_restored(
    source: tuple[CountingBackend, Path, dict[str, bytes]],
    tmp_path: Path,
    workers: dict[str, object],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A chunk that fails authentication is named with its byte range; its file gets no
    metadata but its size, every other file is exact."""
    monkeypatch.setattr(packread, "MAX_READ", 2048)  # big.bin is written by many ranges
    backend, src, files = source
    start, end = _damage_pack_of(backend, src, "big.bin", 5)
    target = tmp_path / "out"
    result, reporter = _restore(backend, src, target, is_verify=True, **workers)
    ((path, message),) = reporter.errors
    assert path == "big.bin"
    assert message.startswith(f"damaged bytes {start}-{end}: ")
    assert result.errors == 1
    big = target / "big.bin"
    assert big.stat().st_size == len(files["big.bin"])
    assert big.stat().st_mtime_ns != OLD_NS
    data = big.read_bytes()
    assert data[:start] == files["big.bin"][:start]
    assert data[end:] == files["big.bin"][end:]
    _assert_restored(target, {r: d for r, d in files.items() if r != "big.bin"})


# -- dump ----------------------------------------------------------------------------


def _node(backend: MemoryBackend, src: Path, rel: str) -> tuple[Repository, Node]:
    repo = Repository.open(backend, PASSWORD)
    (snap,) = repo.list_snapshots()
    return repo, find_node(repo, snap.tree, os.fsencode(src / rel))


@pytest.mark.parametrize("ahead", [0, 1, 4])
def test_dump_reads_ahead_in_order(
    source: tuple[CountingBackend, Path, dict[str, bytes]], ahead: int
) -> None:
    """Chunks loaded ahead on a pool still come out in file order."""
    backend, src, files = source
    repo, node = _node(backend, src, "big.bin")
    try:
        assert b"".join(file_chunks(repo, node, b"big.bin", ahead)) == files["big.bin"]
        out = io.BytesIO()
        dump_file(repo, node, b"big.bin", out)
        assert out.getvalue() == files["big.bin"]
    finally:
        repo.close()


def test_dump_of_a_damaged_file_stops_at_the_damage(
    source: tuple[CountingBackend, Path, dict[str, bytes]],
) -> None:
    """What dump delivers before a damaged chunk is exactly the bytes before it, and the
    error names the file and where the damage starts."""
    backend, src, files = source
    start, _end = _damage_pack_of(backend, src, "big.bin", 7)
    repo, node = _node(backend, src, "big.bin")
    got = bytearray()
    chunks: Iterator[bytes | memoryview] = file_chunks(repo, node, b"/src/big.bin", 3)
    try:
        with pytest.raises(DamagedObject, match=rf"/src/big.bin: damaged from byte {start}:"):
            for data in chunks:
                got += data
    finally:
        repo.close()
    assert bytes(got) == files["big.bin"][:start]


def test_budget_holds_others_back_but_never_a_lone_taker() -> None:
    """A taker over the limit gets through alone; another waits until it gives back."""
    budget = packread.Budget(10)
    order: list[str] = []
    with budget.hold(25):  # more than the limit, but nobody else holds any
        order.append("big")
        waiter = threading.Thread(target=lambda: _take(budget, order))
        waiter.start()
        waiter.join(0.2)
        assert waiter.is_alive()  # waits for the big one
        order.append("big done")
    waiter.join(5)
    assert order == ["big", "big done", "small"]


def _take(budget: packread.Budget, order: list[str]) -> None:
    with budget.hold(5):
        order.append("small")


def test_a_local_restore_reads_no_bytes_between_the_blobs_it_needs(
    make_repo: MakeRepo, tmp_path: Path
) -> None:
    """Blobs of one pack that are not adjacent are read separately from a local
    repository: the data between them (used only by older snapshots) is never read,
    so restoring a snapshot costs the same however much history its packs hold."""
    locs = {
        bytes([i]) * 32: BlobLocation(b"p" * 32, offset, 100, 100)
        for i, offset in enumerate((0, 100, 300, 5000))
    }
    ranges = [(start, end) for start, end, _ in packread.runs(locs, packread.LOCAL_GAP)]
    assert ranges == [(0, 200), (300, 400), (5000, 5100)]
    remote = [(start, end) for start, end, _ in packread.runs(locs)]
    assert remote == [(0, 5100)]
    local = make_repo(LocalBackend(str(tmp_path / "repo"), create=True))
    assert packread.read_gap(local) == packread.LOCAL_GAP
    assert packread.read_gap(make_repo()) == packread.MAX_GAP


@pytest.mark.parametrize(("size", "lanes"), [(4096, 2), (restore.LARGE_FILES_FROM, 3)])
def test_small_files_get_fewer_workers(
    make_repo: MakeRepo,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    size: int,
    lanes: int,
) -> None:
    """Files averaging under LARGE_FILES_FROM bytes are written by at most
    SMALL_FILES_THREADS workers; larger ones by all that are asked for."""
    backend = MemoryBackend()
    repo = make_repo(backend, pack_size=4096)
    src = tmp_path / "src"
    files = {f"f{i:02d}": seeded(i).randbytes(size) for i in range(12)}
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    _backup(repo, src)
    run_units = Restorer._run_units
    used: list[int] = []

    def counting(self: Restorer, ways: list[list[restore._Unit]]) -> None:
        used.append(len(ways))
        run_units(self, ways)

    monkeypatch.setattr(Restorer, "_run_units", counting)
    result, reporter = _restore(backend, src, tmp_path / "out", threads=3)
    assert reporter.errors == []
    assert result.files == len(files)
    assert used == [lanes]
    assert all((tmp_path / "out" / rel).read_bytes() == data for rel, data in files.items())


def _links_source(make_repo: MakeRepo, tmp_path: Path) -> tuple[MemoryBackend, Path]:
    """Forty folders a<i>/b, each holding three symlinks and a FIFO, backed up."""
    backend = MemoryBackend()
    repo = make_repo(backend)
    src = tmp_path / "src"
    for i in range(40):
        folder = src / f"a{i:02d}" / "b"
        folder.mkdir(parents=True)
        for j in range(3):
            os.symlink(f"../target-{i}-{j}", folder / f"link{j}")
        os.mkfifo(folder / "fifo")
    for path in sorted(src.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        os.utime(path, ns=(OLD_NS, OLD_NS), follow_symlinks=False)
    _backup(repo, src)
    return backend, src


def test_folders_and_special_files_are_made_in_slices_on_the_workers(
    make_repo: MakeRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Folders of a level and special files are spread over the workers SPREAD_SLICE at
    a time, so that no more than a slice's parent folders are held open at once."""
    backend, src = _links_source(make_repo, tmp_path)
    monkeypatch.setattr(restore, "SPREAD_SLICE", 5)
    monkeypatch.setattr(restore, "MKDIRS_PER_THREAD", 1)
    pin, unpin = Dirs.pin, Dirs.unpin
    most_pinned = 0

    def counting_pin(self: Dirs, rel: tuple[bytes, ...]) -> int:
        nonlocal most_pinned
        fd = pin(self, rel)
        most_pinned = max(most_pinned, len(self._pins))
        return fd

    makers: set[str] = set()
    make_special = restorefs.make_special

    def recording(parent: int, name: bytes, node: Node, *, is_new: bool = False) -> None:
        makers.add(threading.current_thread().name)
        make_special(parent, name, node, is_new=is_new)

    monkeypatch.setattr(Dirs, "pin", counting_pin)
    monkeypatch.setattr(Dirs, "unpin", unpin)
    monkeypatch.setattr(restore, "make_special", recording)
    target = tmp_path / "out"
    result, reporter = _restore(backend, src, target, threads=3)
    assert reporter.errors == []
    assert result.files == 40 * 4
    assert 1 < most_pinned <= 5
    assert "MainThread" in makers and len(makers) > 1  # a thread per part of a slice
    for i in range(40):
        folder = target / f"a{i:02d}" / "b"
        for j in range(3):
            assert os.readlink(folder / f"link{j}") == f"../target-{i}-{j}"
            assert os.lstat(folder / f"link{j}").st_mtime_ns == OLD_NS
        assert stat.S_ISFIFO(os.lstat(folder / "fifo").st_mode)


def test_special_files_in_fresh_folders_are_not_removed_first(
    make_repo: MakeRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder this restore made is empty: its symlinks are made without an unlink
    each; one in the way in an existing target is still replaced."""
    backend, src = _links_source(make_repo, tmp_path)
    unlinked: list[bytes] = []
    unlink = os.unlink

    def recording(path: bytes, *, dir_fd: int | None = None) -> None:
        unlinked.append(path)
        unlink(path, dir_fd=dir_fd)

    monkeypatch.setattr(restorefs.os, "unlink", recording)
    target = tmp_path / "out"
    _result, reporter = _restore(backend, src, target)
    assert reporter.errors == [] and unlinked == []
    in_the_way = target / "a00" / "b" / "link0"
    in_the_way.unlink()
    in_the_way.write_bytes(b"not a link")
    _result, reporter = _restore(backend, src, target)
    assert reporter.errors == []
    assert os.readlink(in_the_way) == "../target-0-0"
    assert b"link0" in unlinked


def test_a_restore_holds_off_the_cycle_collector(
    source: tuple[CountingBackend, Path, dict[str, bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cycle collector is off while files are written, and on again after."""
    seen: list[bool] = []
    apply = restore.apply_fd_metadata

    def recording(fd: int, node: Node) -> None:
        seen.append(gc.isenabled())
        apply(fd, node)

    monkeypatch.setattr(restore, "apply_fd_metadata", recording)
    backend, src, _files = source
    assert gc.isenabled()
    _result, reporter = _restore(backend, src, tmp_path / "out")
    assert reporter.errors == []
    assert seen and not any(seen)
    assert gc.isenabled()


def test_special_files_below_a_folder_that_could_not_be_made_fail_alone(
    make_repo: MakeRepo, tmp_path: Path
) -> None:
    """A symlink or FIFO whose folder could not be made is an error for it alone."""
    backend, src = _links_source(make_repo, tmp_path)
    target = tmp_path / "out"
    _write(target / "a03" / "b", b"a file, not a folder")
    result, reporter = _restore(backend, src, target, overwrite="never", threads=3)
    failed = {path for path, _message in reporter.errors}
    below = {f"a03/b/{name}" for name in ("link0", "link1", "link2", "fifo")}
    assert failed == {"a03/b", *below}
    assert result.files == 39 * 4
    assert os.readlink(target / "a04" / "b" / "link2") == "../target-4-2"


# -- worker processes ----------------------------------------------------------------


def test_worker_processes_write_the_files(
    source: tuple[CountingBackend, Path, dict[str, bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With processes, files are written and finished in forked children, two of them
    at least; only a file that several units wrote is finished by the restoring process,
    once they are all done."""
    monkeypatch.setattr(packread, "MAX_READ", 2048)  # big.bin: many units
    log = tmp_path / "finished"
    real_apply = restore.apply_fd_metadata

    def apply(fd: int, node: Node) -> None:
        if node.type == "file":
            with log.open("a") as out:  # appends from every process
                out.write(f"{os.getpid()} {node.name.decode()}\n")
        real_apply(fd, node)

    shared: list[str] = []
    real_finish_shared = Restorer._finish_shared

    def finish_shared(self: Restorer) -> None:
        shared.extend(item.rel[-1].decode() for item in self.files if item.shared)
        real_finish_shared(self)

    monkeypatch.setattr(restore, "apply_fd_metadata", apply)
    monkeypatch.setattr(Restorer, "_finish_shared", finish_shared)
    backend, src, files = source
    target = tmp_path / "out"
    result, reporter = _restore(backend, src, target, threads=3, processes=True)
    assert reporter.errors == []
    assert result.files == len(files)
    _assert_restored(target, files)
    finished = [line.split() for line in log.read_text().splitlines()]
    assert len(finished) == len(files)
    ours = [name for pid, name in finished if int(pid) == os.getpid()]
    assert "big.bin" in shared
    assert sorted(ours) == sorted(shared)
    assert len({pid for pid, _name in finished} - {str(os.getpid())}) >= 2


def test_the_next_batch_is_planned_while_processes_write(
    source: tuple[CountingBackend, Path, dict[str, bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The restoring process plans a batch while the worker processes write the one
    before: when it waits for them, the next batch is taken, its files decided and its
    units cut already. Batches start small and double."""
    monkeypatch.setattr(restore, "BATCH_FILES", 8)
    monkeypatch.setattr(restore, "FIRST_BATCH_FILES", 2)
    real_end = Restorer._end_writing
    ready: list[tuple[bool, bool]] = []
    sizes: list[int] = []
    real_plan_writes = Restorer._plan_writes

    def plan_writes(self: Restorer) -> list[list[restore._Unit]]:
        sizes.append(len(self.files))
        return real_plan_writes(self)

    def end(self: Restorer, writing: restore._Writing) -> None:
        # The next batch, when there is one, is not the one being written, and its
        # units are cut: every file of it has its chunk count.
        ahead = self.files is not writing.files
        ready.append((ahead, all(item.remaining or not item.fetch for item in self.files)))
        real_end(self, writing)

    monkeypatch.setattr(Restorer, "_plan_writes", plan_writes)
    monkeypatch.setattr(Restorer, "_end_writing", end)
    _restore_exactly(source, tmp_path / "out", threads=2, processes=True)
    # The batches of one folder's files write on threads (one lane): not all are here.
    assert ready.count((True, True)) >= 2
    assert all(is_cut for _ahead, is_cut in ready)
    assert sizes[:3] == [2, 4, 8]


def test_threads_write_when_no_process_can_be_forked(
    source: tuple[CountingBackend, Path, dict[str, bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fork refused (too many processes) leaves the restore to threads, whole."""
    made: list[int] = []
    real_forked = restore.Forked

    def forked(run: object) -> object:
        if made:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        made.append(1)
        return real_forked(run)  # type: ignore[arg-type]

    monkeypatch.setattr(restore, "Forked", forked)
    threads_ran: list[str] = []
    real_run_units = Restorer._run_units

    def run_units(self: Restorer, lanes: list[list[restore._Unit]]) -> None:
        threads_ran.append(threading.current_thread().name)
        real_run_units(self, lanes)

    monkeypatch.setattr(Restorer, "_run_units", run_units)
    _restore_exactly(source, tmp_path / "out", threads=3, processes=True)
    assert made == [1]
    assert threads_ran


def test_a_worker_process_that_dies_stops_the_restore(
    source: tuple[CountingBackend, Path, dict[str, bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker process killed in the middle is an error of the restore, which ends
    (no wait for an answer that cannot come) and leaves no child behind."""
    monkeypatch.setattr(packread, "MAX_READ", 2048)

    def die(self: Restorer, unit: restore._Unit) -> restore._Outcome:
        os.kill(os.getpid(), 9)
        raise AssertionError("not reached")

    children: list[int] = []
    real_forked = restore.Forked

    def forked(run: Callable[[int], object]) -> restore.Forked:
        child = real_forked(run)
        children.append(child.pid)
        return child

    monkeypatch.setattr(Restorer, "_run_unit", die)
    monkeypatch.setattr(restore, "Forked", forked)
    backend, src, _files = source
    with pytest.raises(RepoError, match="killed by signal 9"):
        _restore(backend, src, tmp_path / "out", threads=3, processes=True)
    assert len(children) >= 2
    for pid in children:  # every one reaped already
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_a_worker_process_that_takes_no_orders_stops_the_restore(
    source: tuple[CountingBackend, Path, dict[str, bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An order that cannot be sent (the child is gone) is an error of the restore, and
    every child is waited for."""
    children: list[int] = []
    real_init = restore.Forked.__init__

    def init(self: restore.Forked, run: Callable[[int], object]) -> None:
        real_init(self, run)
        children.append(self.pid)

    def refuse(self: restore.Forked, number: int) -> None:
        raise WorkerDied(f"worker process {self.pid}: Broken pipe")

    monkeypatch.setattr(restore.Forked, "__init__", init)
    monkeypatch.setattr(restore.Forked, "send", refuse)
    monkeypatch.setattr(packread, "MAX_READ", 2048)
    backend, src, _files = source
    with pytest.raises(WorkerDied, match="Broken pipe"):
        _restore(backend, src, tmp_path / "out", threads=3, processes=True)
    assert len(children) >= 2
    for pid in children:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
