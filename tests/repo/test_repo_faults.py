"""A backup meeting a storage fault at every write: it fails loudly or the damage is found.

A backend wrapper fails (raises BackendError), truncates or corrupts the Nth write of one
kind of object (packs, index files or snapshots; counted per kind, so the Nth write is the
same object on every run although packs are uploaded from a thread). After a failed write
the repository must stay valid: check finds no error (unreferenced packs are only infos)
and every snapshot reads back exactly. After a silently damaged write, check must report
the damage (and not stop with an exception). Reads that fail make check and restore
report an error, never success.
"""

from __future__ import annotations

import copy
import errno
import os
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import MakeRepo
from strategies import PASSWORD

from chunker import ChunkerParams
from crypto import ObjectType
from repo.backend.local import LocalBackend
from repo.backend.memory import MemoryBackend
from repo.backup import Archiver, BackupOptions, QuietReporter
from repo.cache import Cache
from repo.check import Checker
from repo.errors import BackendError, RepoError
from repo.pattern import split_path
from repo.repository import Repository
from repo.restore import RestoreOptions, Restorer
from repo.snapshot import decode_snapshot
from repo.types import BlobType, Handle, Kind
from repo.walk import file_content, find_node, walk

SMALL_CHUNKS = ChunkerParams(min_size=256, avg_size=1024, max_size=4096)
PACK_SIZE = 8192
FAULT_KINDS = (Kind.DATA, Kind.INDEX, Kind.SNAPSHOT)


class FaultyBackend(MemoryBackend):
    """A memory backend that fails, truncates or corrupts the `at`-th write of one kind."""

    def __init__(self, kind: Kind, at: int, mode: str) -> None:
        super().__init__()
        self.kind = kind
        self.at = at
        self.mode = mode
        self.writes = 0
        self.hit: Handle | None = None
        self._mutex = threading.Lock()

    def write(self, handle: Handle, data: bytes | bytearray | memoryview) -> None:
        if handle.kind is self.kind:
            with self._mutex:
                self.writes += 1
                is_hit = self.writes == self.at
            if is_hit:
                self.hit = handle
                data = bytes(data)
                if self.mode == "fail":
                    raise BackendError(f"{handle}: injected failure")
                if self.mode == "truncate":
                    data = data[: len(data) // 2]
                elif self.mode == "corrupt":
                    flipped = bytearray(data)
                    flipped[len(flipped) // 2] ^= 0x04
                    data = bytes(flipped)
        super().write(handle, data)


@dataclass
class History:
    """A repository with one clean snapshot, and a changed source for the next backup."""

    objects: dict[Handle, tuple[bytes, float]]
    src: Path
    first: str
    expected: dict[str, dict[bytes, bytes]]  # snapshot id -> file contents
    second_content: dict[bytes, bytes]


def _files(src: Path) -> dict[bytes, bytes]:
    return {os.fsencode(p): p.read_bytes() for p in sorted(src.rglob("*")) if p.is_file()}


def _run_backup(repo: Repository, src: Path) -> str:
    opts = BackupOptions(paths=[os.fsencode(src)], hostname="h", username="u")
    snap, _saved = Archiver(repo, opts, QuietReporter()).run()
    return snap.id


def _snapshot_contents(repo: Repository, name: str) -> dict[bytes, bytes]:
    """Every file of one snapshot, each blob loaded (and so verified) through the index."""
    snap = decode_snapshot(repo.read_object(Kind.SNAPSHOT, ObjectType.SNAPSHOT, name), name)
    out = {}
    for path, node in walk(repo, snap.tree, b"/"):
        if node.type == "file":
            ids = file_content(repo, node)
            out[path] = b"".join(repo.load_blob(BlobType.DATA, i) for i in ids)
    return out


def _check(backend: MemoryBackend) -> tuple[list[str], list[str]]:
    """(errors, infos) of check --read-data on a freshly opened repository."""
    repo = Repository.open(backend, PASSWORD)
    try:
        checker = Checker(repo, lambda _msg: None)
        checker.check_structure()
        checker.read_packs(lambda _i, _name: True)
        return checker.result.errors, checker.result.infos
    finally:
        repo.close()


def _contents_of_all(backend: MemoryBackend) -> dict[str, dict[bytes, bytes]]:
    """The files of every snapshot present, by snapshot id."""
    repo = Repository.open(backend, PASSWORD)
    try:
        return {i.name: _snapshot_contents(repo, i.name) for i in backend.list(Kind.SNAPSHOT)}
    finally:
        repo.close()


def _contents_of(backend: MemoryBackend, name: str) -> dict[bytes, bytes]:
    repo = Repository.open(backend, PASSWORD)
    try:
        return _snapshot_contents(repo, name)
    finally:
        repo.close()


@pytest.fixture
def history(make_repo: MakeRepo, tmp_path: Path) -> History:
    rng = random.Random(11)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i in range(20):
        (src / f"f{i:02}").write_bytes(rng.randbytes(5000 + i))
    (src / "sub" / "same").write_bytes(b"unchanged " * 300)
    backend = MemoryBackend()
    repo = make_repo(backend, pack_size=PACK_SIZE, chunker=SMALL_CHUNKS)
    first = _run_backup(repo, src)
    expected = {first: _files(src)}
    # The next backup: some files gone, some changed, many new (over 16 packs, so the
    # backup writes an index file along the way as well as at its end).
    for i in range(0, 20, 3):
        (src / f"f{i:02}").unlink()
    (src / "f01").write_bytes(rng.randbytes(7000))
    for i in range(40):
        (src / "sub" / f"n{i:02}").write_bytes(rng.randbytes(4000 + i))
    return History(dict(backend.objects), src, first, expected, _files(src))


def _faulty_copy(history: History, kind: Kind, at: int, mode: str) -> FaultyBackend:
    backend = FaultyBackend(kind, at, mode)
    backend.objects = copy.copy(history.objects)
    return backend


def _backup_with_fault(history: History, backend: FaultyBackend) -> str | None:
    """Run the second backup; its snapshot id, or None when the injected failure stopped it."""
    repo = Repository.open(backend, PASSWORD)
    try:
        return _run_backup(repo, history.src)
    except BackendError as exc:
        assert backend.mode == "fail" and backend.hit is not None, exc
        assert "injected failure" in str(exc)
        return None
    finally:
        repo.close()


@pytest.mark.parametrize("kind", FAULT_KINDS, ids=lambda k: k.value)
def test_failed_write_at_every_step_leaves_a_valid_repository(history: History, kind: Kind) -> None:
    """The Nth write of a pack, index file or snapshot fails, for every N until the backup
    completes: check finds no error, every snapshot present reads back exactly, and a
    retried backup completes and is valid too."""
    at = 1
    while True:
        backend = _faulty_copy(history, kind, at, "fail")
        snap = _backup_with_fault(history, backend)
        step = f"{kind.value} write {at}"
        errors, _infos = _check(backend)
        assert errors == [], step
        contents = _contents_of_all(backend)
        if snap is not None:
            assert backend.hit is None, step
            assert contents == {**history.expected, snap: history.second_content}, step
            break
        assert contents == history.expected, step
        # Nothing but a retry is needed to finish the job.
        backend.kind = Kind.CONFIG  # disarmed
        retried = _backup_with_fault(history, backend)
        assert retried is not None
        assert _check(backend)[0] == [], step
        expected = {**history.expected, retried: history.second_content}
        assert _contents_of_all(backend) == expected, step
        at += 1
    assert at > {Kind.DATA: 16, Kind.INDEX: 1, Kind.SNAPSHOT: 0}[kind]


def _silent_damage(history: History, kind: Kind, mode: str) -> Iterator[FaultyBackend]:
    """A backend per write of `kind` the second backup makes, with that write damaged."""
    at = 1
    while True:
        backend = _faulty_copy(history, kind, at, mode)
        snap = _backup_with_fault(history, backend)
        assert snap is not None  # silent: the backup never notices
        if backend.hit is None:
            return
        yield backend
        at += 1


@pytest.mark.parametrize("mode", ["truncate", "corrupt"])
@pytest.mark.parametrize("kind", FAULT_KINDS, ids=lambda k: k.value)
def test_silently_damaged_write_is_reported_by_check(
    history: History, kind: Kind, mode: str
) -> None:
    """A pack, index file or snapshot stored truncated or with a flipped bit: check (with
    read-data) returns (no exception of any type) and reports an error naming the damaged
    object; the first snapshot still reads back unless the damaged object is an index."""
    damaged = 0
    for backend in _silent_damage(history, kind, mode):
        damaged += 1
        assert backend.hit is not None
        step = f"{mode} {backend.hit}"
        errors, _infos = _check(backend)
        assert errors, step
        assert any(backend.hit.name[:8] in e for e in errors), (step, errors)
        if kind is not Kind.INDEX:
            first = _contents_of(backend, history.first)
            assert first == history.expected[history.first], step
    assert damaged >= {Kind.DATA: 16, Kind.INDEX: 2, Kind.SNAPSHOT: 1}[kind]


# -- reads that fail: check and restore never report success -------------------------


class FlakyReads(MemoryBackend):
    """A memory backend whose `at`-th read raises BackendError (a dropped connection)."""

    def __init__(self, objects: dict[Handle, tuple[bytes, float]]) -> None:
        super().__init__()
        self.objects = copy.copy(objects)
        self.at = 0
        self.reads = 0
        self.hit: Handle | None = None
        self._mutex = threading.Lock()

    def arm(self, nth: int) -> None:
        """Fail the nth read from now on."""
        self.at = self.reads + nth

    def read(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        with self._mutex:
            self.reads += 1
            is_hit = self.reads == self.at
        if is_hit:
            self.hit = handle
            raise BackendError(f"{handle}: injected read failure")
        return super().read(handle, offset, length)


def test_check_never_passes_when_a_read_fails(history: History) -> None:
    """Whichever read of check --read-data fails, check reports an error or stops with a
    RepoError naming the object: it never reports a clean repository."""
    nth = 1
    while True:
        backend = FlakyReads(history.objects)
        repo = Repository.open(backend, PASSWORD)
        backend.arm(nth)
        checker = Checker(repo, lambda _msg: None)
        outcome: list[str] | RepoError
        try:
            checker.check_structure()
            checker.read_packs(lambda _i, _name: True)
            outcome = checker.result.errors
        except RepoError as exc:
            outcome = exc
        finally:
            repo.close()
        if backend.hit is None:
            assert outcome == []
            break
        step = f"read {nth} ({backend.hit})"
        if isinstance(outcome, RepoError):
            assert backend.hit.name[:8] in str(outcome), step
        else:
            assert outcome, f"{step} failed and check reported nothing"
        nth += 1
    assert nth > 10


class _Collect:
    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []

    def bytes_written(self, n: int) -> None:
        return None

    def error(self, path: str, message: str) -> None:
        self.errors.append((path, message))

    def planned(self, path: str, action: str) -> None:
        return None


def test_restore_never_passes_when_a_read_fails(history: History, tmp_path: Path) -> None:
    """Whichever read of a restore fails, the restore reports an error (or stops with a
    RepoError); every file it does not name is restored byte for byte with its mtime,
    and a file it names does not get its metadata."""
    clean = Repository.open(FlakyReads(history.objects), PASSWORD)
    src = os.fsencode(history.src)
    snap = next(s for s in clean.list_snapshots() if s.id == history.first)
    root = find_node(clean, snap.tree, src)
    assert root.subtree is not None
    nodes = {
        os.path.relpath(path, src): node
        for path, node in walk(clean, root.subtree, src)
        if node.type == "file"
    }
    clean.close()
    want = {os.path.relpath(p, src): data for p, data in history.expected[history.first].items()}
    assert set(nodes) == set(want)
    nth = 1
    while True:
        backend = FlakyReads(history.objects)
        repo = Repository.open(backend, PASSWORD)
        target = tmp_path / f"out{nth}"
        reporter = _Collect()
        backend.arm(nth)
        stopped: RepoError | None = None
        try:
            start = find_node(repo, snap.tree, src)
            opts = RestoreOptions(os.fsencode(target))
            Restorer(repo, start, split_path(src), opts, reporter).run()
        except RepoError as exc:
            stopped = exc
        finally:
            repo.close()
        step = f"read {nth} ({backend.hit}): {reporter.errors}"
        if backend.hit is not None:
            assert stopped is not None or reporter.errors, f"{step} failed, nothing reported"
        if stopped is None:
            named = {path for path, _msg in reporter.errors}
            for rel, data in want.items():
                restored = os.path.join(os.fsencode(target), rel)
                shown = rel.decode()
                if shown in named:
                    assert os.stat(restored).st_mtime_ns != nodes[rel].mtime_ns, step
                elif not any(n == "." or shown.startswith(n + "/") for n in named):
                    # Neither the file nor a folder above it was reported: it is intact.
                    with open(restored, "rb") as f:
                        assert f.read() == data, step
                    assert os.stat(restored).st_mtime_ns == nodes[rel].mtime_ns, step
        if backend.hit is None:
            assert stopped is None and reporter.errors == []
            break
        nth += 1
    assert nth > 5


def _flip(backend: MemoryBackend, handle: Handle) -> None:
    data, mtime = backend.objects[handle]
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0x01
    backend.objects[handle] = (bytes(flipped), mtime)


def test_check_sees_damage_behind_a_warm_cache(history: History, tmp_path: Path) -> None:
    """A remote repository's index file and snapshot are damaged after a client cached
    them: check (which must verify the repository, as restic's check does with its own
    fresh cache) names both."""
    backend = MemoryBackend()
    backend.objects = copy.copy(history.objects)
    cache_root = str(tmp_path / "cache")
    warm = Repository.open(backend, PASSWORD)
    warm.cache = Cache(cache_root, warm.config.repo_id)
    assert _snapshot_contents(warm, history.first) == history.expected[history.first]
    warm.close()
    (index,) = [Handle(Kind.INDEX, i.name) for i in backend.list(Kind.INDEX)]
    snapshot = Handle(Kind.SNAPSHOT, history.first)
    _flip(backend, index)
    _flip(backend, snapshot)
    repo = Repository.open(backend, PASSWORD)
    repo.cache = Cache(cache_root, repo.config.repo_id)
    try:
        checker = Checker(repo, lambda _msg: None)
        checker.check_structure()
        checker.read_packs(lambda _i, _name: True)
    finally:
        repo.close()
    report = "\n".join(checker.result.errors)
    assert index.name[:8] in report, report
    assert snapshot.name[:8] in report, report


def _spool_files(root: Path) -> list[str]:
    return [p.name for p in (root / "data").iterdir() if p.is_file()]


def test_local_packs_are_renamed_into_place_and_no_spool_file_remains(
    make_repo: MakeRepo, tmp_path: Path
) -> None:
    """A local repository's packs are written in its data folder and renamed into
    place: after a backup no spool file is left, and check passes."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(random.Random(1).randbytes(3 << 20))
    root = tmp_path / "repo"
    repo = make_repo(LocalBackend(str(root), create=True), pack_size=1 << 20)
    _run_backup(repo, src)
    assert _spool_files(root) == []
    assert len(list(repo.backend.list(Kind.DATA))) >= 3
    errors, _infos = _check(LocalBackend(str(root)))  # type: ignore[arg-type]
    assert errors == []


def test_a_failed_pack_store_leaves_no_spool_file(
    make_repo: MakeRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When storing a pack fails, the backup fails with that error and the spool files
    of that pack and of packs still being filled are removed."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(random.Random(2).randbytes(3 << 20))
    (src / "b").write_bytes(b"tree and data both have packs open" * 100)
    root = tmp_path / "repo"
    repo = make_repo(LocalBackend(str(root), create=True), pack_size=1 << 20)

    def refuse(self: LocalBackend, handle: Handle, fd: int, path: str) -> None:
        raise BackendError(f"{handle}: no space left on device")

    monkeypatch.setattr(LocalBackend, "adopt", refuse)
    with pytest.raises(BackendError, match="no space left"):
        _run_backup(repo, src)
    repo.close()
    assert _spool_files(root) == []
    assert list(repo.backend.list(Kind.DATA)) == []


def test_a_pack_that_cannot_be_read_back_fails_and_leaves_no_spool_file(
    make_repo: MakeRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finished pack is read back to be named: when that read fails, the backup fails
    with an error naming the spool file (no bare OSError), and no spool file remains."""
    from repo import saver  # noqa: PLC0415 - this test only

    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(random.Random(3).randbytes(3 << 20))
    root = tmp_path / "repo"
    repo = make_repo(LocalBackend(str(root), create=True), pack_size=1 << 20)

    def unreadable(fd: int) -> bytes:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(saver, "file_digest", unreadable)
    with pytest.raises(BackendError, match=r"\.tmp-pack-[0-9a-f]+: Input/output error"):
        _run_backup(repo, src)
    repo.close()
    assert _spool_files(root) == []
    assert list(repo.backend.list(Kind.DATA)) == []


def test_a_pack_that_cannot_be_renamed_into_place_fails_and_leaves_no_spool_file(
    make_repo: MakeRepo, tmp_path: Path
) -> None:
    """adopt: when the rename into place fails (a folder stands at the pack's name),
    the backup fails with a BackendError naming the pack, and the spool file is gone."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(random.Random(3).randbytes(1 << 20))
    root = tmp_path / "repo"
    repo = make_repo(LocalBackend(str(root), create=True), pack_size=1 << 20)
    original = LocalBackend.adopt

    def blocked(self: LocalBackend, handle: Handle, fd: int, path: str) -> None:
        os.makedirs(self._path(handle), exist_ok=True)
        original(self, handle, fd, path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LocalBackend, "adopt", blocked)
        with pytest.raises(BackendError, match=r"data/"):
            _run_backup(repo, src)
    repo.close()
    assert _spool_files(root) == []


def test_a_spool_file_that_cannot_be_created_is_a_backend_error(
    make_repo: MakeRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pack's spool file that cannot be made fails the backup with one BackendError
    naming the file, not an OSError from deep inside the saver."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"x" * 1000)
    repo = make_repo(LocalBackend(str(tmp_path / "repo"), create=True))
    missing = str(tmp_path / "no such folder")
    monkeypatch.setattr(LocalBackend, "spool_dir", lambda self: missing)
    with pytest.raises(BackendError, match="no such folder"):
        _run_backup(repo, src)
