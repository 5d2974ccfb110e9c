"""Tests of repo/prune.py: the plan, reclaimed space, and validity after a failure at any step."""

from __future__ import annotations

import copy
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MakeRepo
from strategies import PASSWORD

from chunker import ChunkerParams
from repo.backend.memory import MemoryBackend
from repo.backup import Archiver, BackupOptions, QuietReporter
from repo.check import Checker
from repo.errors import BackendError, BlobNotFound
from repo.prune import UnusedLimit, execute_prune, parse_size, plan_prune
from repo.repository import Repository
from repo.types import BlobType, Handle, Kind
from repo.walk import file_content, walk

SMALL_CHUNKS = ChunkerParams(min_size=256, avg_size=1024, max_size=4096)


class FailingBackend(MemoryBackend):
    """A memory backend whose Nth write or delete raises, as a killed process would stop."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.ops = 0

    def _tick(self) -> None:
        self.ops += 1
        if self.ops == self.fail_at:
            raise BackendError("injected failure")

    def write(self, handle: Handle, data: bytes | bytearray | memoryview) -> None:
        self._tick()
        super().write(handle, data)

    def delete(self, handle: Handle) -> None:
        self._tick()
        super().delete(handle)


def _backup(repo: Repository, src: Path) -> str:
    opts = BackupOptions(paths=[os.fsencode(src)], hostname="h", username="u")
    snap, _saved = Archiver(repo, opts, QuietReporter()).run()
    return snap.id


def _contents(repo: Repository, snap_id: str) -> dict[bytes, bytes]:
    """Every file of a snapshot with its bytes, read through the index."""
    snap = next(s for s in repo.list_snapshots() if s.id == snap_id)
    out = {}
    for path, node in walk(repo, snap.tree, b"/"):
        if node.type == "file":
            ids = file_content(repo, node)
            out[path] = b"".join(repo.load_blob(BlobType.DATA, i) for i in ids)
    return out


@pytest.fixture
def history(make_repo: MakeRepo, tmp_path: Path) -> Iterator[tuple[Repository, str, str]]:
    """A repository with two snapshots; the first one is then forgotten."""
    rng = random.Random(7)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):
        (src / f"f{i}").write_bytes(rng.randbytes(6000))
    repo = make_repo(pack_size=8192, chunker=SMALL_CHUNKS)
    first = _backup(repo, src)
    for i in range(6):
        (src / f"f{i}").unlink()
    (src / "new").write_bytes(rng.randbytes(5000))
    second = _backup(repo, src)
    repo.backend.delete(Handle(Kind.SNAPSHOT, first))
    yield repo, first, second


def _reopen(backend: MemoryBackend) -> Repository:
    return Repository.open(backend, PASSWORD)


def _checked(repo: Repository) -> list[str]:
    checker = Checker(repo, lambda _msg: None)
    checker.check_structure()
    checker.read_packs(lambda _i, _name: True)
    return checker.result.errors


def test_parse_limits() -> None:
    """--max-unused takes restic's forms; sizes take binary suffixes."""
    assert UnusedLimit.parse("5%").allowed(95) == pytest.approx(5)
    assert UnusedLimit.parse("0").allowed(100) == 0
    assert UnusedLimit.parse("unlimited").allowed(100) == float("inf")
    assert UnusedLimit.parse("100M").allowed(1) == 100 << 20
    assert parse_size("2k") == 2048
    for bad in ("abc", "100%", "-1%"):
        with pytest.raises(ValueError):
            UnusedLimit.parse(bad)


def test_prune_reclaims_space_and_keeps_data(history: tuple[Repository, str, str]) -> None:
    """Prune with --max-unused 0 removes every unused byte; the kept snapshot is unchanged."""
    repo, _first, second = history
    before = _contents(repo, second)
    size_before = sum(i.size for i in repo.backend.list(Kind.DATA))
    plan = plan_prune(repo, UnusedLimit.parse("0"), None)
    assert plan.unused_bytes > 0
    assert plan.repack or plan.delete
    execute_prune(repo, plan, lambda _m: None)
    fresh = _reopen(repo.backend)  # type: ignore[arg-type]
    assert sum(i.size for i in fresh.backend.list(Kind.DATA)) < size_before
    assert _contents(fresh, second) == before
    assert _checked(fresh) == []
    again = plan_prune(fresh, UnusedLimit.parse("0"), None)
    assert again.unused_bytes == 0
    assert again.is_noop()


def test_unlimited_only_deletes_whole_packs(history: tuple[Repository, str, str]) -> None:
    """With --max-unused unlimited nothing is repacked."""
    repo, _first, _second = history
    plan = plan_prune(repo, UnusedLimit.parse("unlimited"), None)
    assert plan.repack == []


def test_max_repack_size_bounds_repacking(history: tuple[Repository, str, str]) -> None:
    """--max-repack-size stops before repacking more than it allows."""
    repo, _first, _second = history
    plan = plan_prune(repo, UnusedLimit.parse("0"), 0)
    assert plan.repack == []


def test_prune_refuses_missing_blob(history: tuple[Repository, str, str]) -> None:
    """A snapshot that references a blob missing from the index stops prune before any change."""
    repo, _first, second = history
    snap = next(s for s in repo.list_snapshots() if s.id == second)
    repo.index  # noqa: B018 - load it before the pack disappears from the index files
    for name in [i.name for i in repo.backend.list(Kind.INDEX)]:
        repo.backend.delete(Handle(Kind.INDEX, name))
    with pytest.raises(BlobNotFound):
        plan_prune(repo, UnusedLimit.parse("0"), None)
    assert snap.id == second


def test_duplicate_blobs_are_dropped_from_the_index(make_repo: MakeRepo, tmp_path: Path) -> None:
    """A blob stored by two backups that did not see each other is indexed once after prune."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(random.Random(3).randbytes(20000))
    backend = MemoryBackend()
    repo = make_repo(backend, pack_size=8192, chunker=SMALL_CHUNKS)
    _backup(repo, src)
    other = _reopen(backend)
    other.use_index(type(other.index)())  # an empty index: it stores everything again
    _backup(other, src)
    fresh = _reopen(backend)
    plan = plan_prune(fresh, UnusedLimit.parse("unlimited"), None)
    assert plan.duplicate_blobs > 0
    execute_prune(fresh, plan, lambda _m: None)
    final = _reopen(backend)
    indexed = [b[0] for packs in final.read_index_files().values() for p in packs for b in p.blobs]
    assert len(indexed) == len(set(indexed))
    assert _checked(final) == []


def test_prune_stopped_at_every_step_leaves_a_valid_repository(
    history: tuple[Repository, str, str],
) -> None:
    """Whichever write or delete of prune fails, check passes and the kept snapshot restores."""
    repo, _first, second = history
    expected = _contents(repo, second)
    base: MemoryBackend = repo.backend  # type: ignore[assignment]
    step = 1
    while True:
        backend = FailingBackend(fail_at=step)
        backend.objects = copy.copy(base.objects)
        victim = _reopen(backend)
        plan = plan_prune(victim, UnusedLimit.parse("0"), None)
        try:
            execute_prune(victim, plan, lambda _m: None)
        except BackendError:
            pass
        else:
            break  # prune ran to the end: every step has been interrupted once
        after = _reopen(backend)
        assert _checked(after) == [], f"failure at step {step}"
        assert _contents(after, second) == expected
        # The next prune finishes the job from wherever this one stopped.
        backend.fail_at = 0
        execute_prune(after, plan_prune(after, UnusedLimit.parse("0"), None), lambda _m: None)
        assert _checked(_reopen(backend)) == []
        step += 1
    assert step > 3
