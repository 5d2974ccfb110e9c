"""Tests of repo/diff.py, find.py, stats.py, rewrite.py and repack.py: inspecting and
rewriting snapshots, and salvaging damaged packs."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from conftest import MakeRepo
from strategies import PASSWORD

from chunker import ChunkerParams
from repo.backend.memory import MemoryBackend
from repo.backup import Archiver, BackupOptions, QuietReporter
from repo.check import Checker
from repo.diff import Differ, snapshot_tree
from repo.errors import BlobNotFound, PathNotFound
from repo.find import Finder
from repo.pattern import PatternSet
from repo.prune import UnusedLimit, execute_prune, plan_prune
from repo.repack import PackNotFound, find_pack, salvage_packs
from repo.repair import SnapshotRepairer
from repo.repository import Repository
from repo.rewrite import TreeRewriter, change_tags, rewritten
from repo.snapshot import Snapshot, SnapshotFilter, select_snapshots
from repo.stats import StatsMode, compute_stats
from repo.tree import Node
from repo.types import BlobType, Handle, Kind
from repo.walk import file_content, find_node, walk

SMALL_CHUNKS = ChunkerParams(min_size=256, avg_size=1024, max_size=4096)


def _backup(repo: Repository, src: Path, tags: tuple[str, ...] = ()) -> Snapshot:
    opts = BackupOptions(paths=[os.fsencode(src)], hostname="h", username="u", tags=list(tags))
    snap, _saved = Archiver(repo, opts, QuietReporter()).run()
    return snap


def _under(src: Path, paths: list[bytes]) -> list[str]:
    """The paths below src, relative to it (ancestor folders change between backups)."""
    root = os.fsencode(src)
    return [p[len(root) :].decode() for p in paths if p.startswith(root + b"/")]


@pytest.fixture
def src(tmp_path: Path) -> Path:
    rng = random.Random(3)
    root = tmp_path / "src"
    (root / "docs").mkdir(parents=True)
    (root / "big").mkdir()
    (root / "docs" / "a.txt").write_bytes(b"alpha\n")
    (root / "docs" / "b.txt").write_bytes(b"bravo\n")
    for i in range(4):
        (root / "big" / f"r{i}.bin").write_bytes(rng.randbytes(5000))
    return root


# -- diff ------------------------------------------------------------------------------


def test_diff_rename_mode_and_content(repo: Repository, src: Path) -> None:
    """A rename is - and +, chmod is U, new bytes are M; the summary counts them."""
    first = _backup(repo, src)
    (src / "docs" / "a.txt").rename(src / "docs" / "c.txt")
    (src / "docs" / "b.txt").chmod(0o600)
    (src / "big" / "r0.bin").write_bytes(b"changed")
    second = _backup(repo, src)
    differ = Differ(repo)
    changes = {c.path: c.modifier for c in differ.diff(first.tree, second.tree)}
    root = os.fsencode(src)
    assert changes[root + b"/docs/a.txt"] == "-"
    assert changes[root + b"/docs/c.txt"] == "+"
    assert changes[root + b"/docs/b.txt"] == "U"
    assert changes[root + b"/big/r0.bin"] == "M"
    assert root + b"/big/r1.bin" not in changes
    assert differ.changed_files == 1
    assert (differ.added.files, differ.removed.files) == (1, 1)
    assert differ.added.data_blobs >= 1
    assert differ.added.bytes >= len(b"changed")


def test_diff_skips_identical_subtrees(
    repo: Repository, src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder whose tree id did not change is never loaded."""
    first = _backup(repo, src)
    (src / "docs" / "a.txt").write_bytes(b"new")
    second = _backup(repo, src)
    big = find_node(repo, first.tree, os.fsencode(src / "big")).subtree
    assert big == find_node(repo, second.tree, os.fsencode(src / "big")).subtree
    loaded: list[bytes] = []
    load_tree = repo.load_tree

    def counting(tree_id: bytes) -> list[Node]:
        loaded.append(tree_id)
        return load_tree(tree_id)

    monkeypatch.setattr(repo, "load_tree", counting)
    assert [c.modifier for c in Differ(repo).diff(first.tree, second.tree)][-1] == "M"
    assert big not in loaded


def test_diff_added_folder_lists_its_entries_and_type_change(repo: Repository, src: Path) -> None:
    """A new folder is printed with a trailing slash and every entry below it; a file that
    became a folder is T."""
    first = _backup(repo, src)
    (src / "new" / "deep").mkdir(parents=True)
    (src / "new" / "deep" / "x").write_bytes(b"x")
    (src / "docs" / "a.txt").unlink()
    (src / "docs" / "a.txt").mkdir()
    second = _backup(repo, src)
    differ = Differ(repo)
    changes = [(p, c.modifier) for c in differ.diff(first.tree, second.tree) for p in [c.path]]
    shown = [(p[len(os.fsencode(src)) :], m) for p, m in changes if p.startswith(os.fsencode(src))]
    assert (b"/new/", "+") in shown
    assert (b"/new/deep/", "+") in shown
    assert (b"/new/deep/x", "+") in shown
    assert (b"/docs/a.txt/", "T") in shown
    assert differ.added.dirs == 2


def test_snapshot_tree_resolves_subfolders(repo: Repository, src: Path) -> None:
    """SNAPSHOT:PATH names a folder's tree; a file or a missing path is an error."""
    snap = _backup(repo, src)
    snaps = repo.list_snapshots()
    found, tree = snapshot_tree(repo, snaps, f"{snap.id[:8]}:{src}/docs", SnapshotFilter())
    assert found.id == snap.id
    assert sorted(n.name for n in repo.load_tree(tree)) == [b"a.txt", b"b.txt"]
    assert snapshot_tree(repo, snaps, "latest", SnapshotFilter())[1] == snap.tree
    with pytest.raises(PathNotFound):
        snapshot_tree(repo, snaps, f"latest:{src}/docs/a.txt", SnapshotFilter())
    with pytest.raises(PathNotFound):
        snapshot_tree(repo, snaps, f"latest:{src}/nope", SnapshotFilter())


# -- find ------------------------------------------------------------------------------


def test_find_by_name_and_by_path(repo: Repository, src: Path) -> None:
    """A pattern without / matches names at any depth; one with / matches the path itself,
    not everything below a matching folder."""
    first = _backup(repo, src)
    (src / "docs" / "a.txt").unlink()
    second = _backup(repo, src)
    finder = Finder(repo, ["a.txt"])
    assert _under(src, [p for p, _n in finder.find(first.tree)]) == ["/docs/a.txt"]
    assert finder.find(second.tree) == []
    by_path = Finder(repo, [f"{src}/docs/*"])
    assert _under(src, [p for p, _n in by_path.find(second.tree)]) == ["/docs/b.txt"]
    folder = Finder(repo, ["docs"])
    assert _under(src, [p for p, _n in folder.find(first.tree)]) == ["/docs"]
    tail = Finder(repo, ["big/r?.bin", "*.TXT"], is_ignore_case=True)
    found = _under(src, [p for p, _n in tail.find(first.tree)])
    assert found == [f"/big/r{i}.bin" for i in range(4)] + ["/docs/a.txt", "/docs/b.txt"]


def test_select_snapshots(repo: Repository, src: Path) -> None:
    """Refs name snapshots (each once); without refs the filter chooses."""
    one = _backup(repo, src, tags=("x",))
    (src / "docs" / "a.txt").write_bytes(b"changed")
    two = _backup(repo, src)
    snaps = repo.list_snapshots()
    assert [s.id for s in select_snapshots(snaps, [], SnapshotFilter())] == [one.id, two.id]
    assert [s.id for s in select_snapshots(snaps, [], SnapshotFilter(tags=["x"]))] == [one.id]
    chosen = select_snapshots(snaps, [two.id[:10], "latest", one.id], SnapshotFilter())
    assert [s.id for s in chosen] == [one.id, two.id]


# -- stats -----------------------------------------------------------------------------


def test_stats_modes_with_duplicate_files(repo: Repository, src: Path) -> None:
    """restore-size counts every copy, files-by-contents one per content, raw-data each
    stored blob once, with a deduplication ratio near the number of copies."""
    data = random.Random(5).randbytes(20000)
    for name in ("d1", "d2", "d3"):
        (src / name).write_bytes(data)
    snap = _backup(repo, src)
    restore = compute_stats(repo, [snap], StatsMode.RESTORE_SIZE)
    files = sum(1 for _p, n in walk(repo, snap.tree, b"/"))
    sizes = sum(n.size for _p, n in walk(repo, snap.tree, b"/"))
    assert (restore.total_file_count, restore.total_size) == (files, sizes)
    unique = compute_stats(repo, [snap, snap], StatsMode.FILES_BY_CONTENTS)
    assert unique.total_file_count == 7  # 2 docs, 4 random files, 1 of the 3 duplicates
    assert unique.total_size == sizes - 2 * len(data)
    raw = compute_stats(repo, [snap], StatsMode.RAW_DATA)
    assert raw.snapshots_count == 1
    assert raw.total_blob_count == repo.index.count(BlobType.DATA) + repo.index.count(BlobType.TREE)
    assert raw.total_size < raw.total_uncompressed_size  # the docs' trees compress
    assert raw.compression_ratio > 1
    assert 0 < raw.compression_progress <= 100
    assert raw.compression_space_saving == pytest.approx(
        (1 - raw.total_size / raw.total_uncompressed_size) * 100
    )
    assert raw.deduplication_ratio == pytest.approx(sizes / (sizes - 2 * len(data)), rel=1e-3)


# -- rewrite and tags ------------------------------------------------------------------


def test_rewrite_excludes_and_keeps_unchanged_subtrees(repo: Repository, src: Path) -> None:
    """Excluded entries vanish, untouched folders keep their tree ids, `original` is set."""
    snap = _backup(repo, src)
    rewriter = TreeRewriter(repo, PatternSet(["*.txt"]), is_dry_run=False)
    new, excluded = rewriter.snapshot(snap)
    assert new is not None
    assert _under(src, excluded) == ["/docs/a.txt", "/docs/b.txt"]
    assert new.original == snap.id
    assert new.tree != snap.tree
    repo.flush()
    repo.save_snapshot(new)
    big = os.fsencode(src / "big")
    assert find_node(repo, new.tree, big).subtree == find_node(repo, snap.tree, big).subtree
    assert repo.load_tree(find_node(repo, new.tree, os.fsencode(src / "docs")).subtree or b"") == []
    assert rewriter.snapshot(snap)[0] is not None  # done again from the memo, same result
    assert TreeRewriter(repo, PatternSet(["*.nomatch"]), is_dry_run=False).snapshot(snap) == (
        None,
        [],
    )


def test_rewrite_dry_run_stores_nothing(make_repo: MakeRepo, src: Path) -> None:
    """A dry run computes the new tree ids without writing a blob."""
    backend = MemoryBackend()
    repo = make_repo(backend)
    snap = _backup(repo, src)
    before = dict(backend.objects)
    new, _excluded = TreeRewriter(repo, PatternSet(["big"]), is_dry_run=True).snapshot(snap)
    repo.flush()
    assert new is not None
    assert backend.objects == before
    assert not repo.index.has(BlobType.TREE, new.tree)


def test_rewrite_then_prune_reclaims(make_repo: MakeRepo, src: Path) -> None:
    """After rewriting away a folder and forgetting the original, prune removes its data."""
    repo = make_repo(pack_size=8192, chunker=SMALL_CHUNKS)
    snap = _backup(repo, src)
    node = find_node(repo, snap.tree, os.fsencode(src / "big" / "r0.bin"))
    purged = file_content(repo, node)[0]
    new, _excluded = TreeRewriter(repo, PatternSet(["/**/big"]), is_dry_run=False).snapshot(snap)
    assert new is not None
    repo.flush()
    repo.save_snapshot(new)
    repo.delete_snapshot(snap.id)
    before = compute_stats(repo, [new], StatsMode.RAW_DATA)
    execute_prune(repo, plan_prune(repo, UnusedLimit.parse("0"), None), lambda _m: None)
    fresh = Repository.open(repo.backend, PASSWORD)
    after = compute_stats(fresh, fresh.list_snapshots(), StatsMode.RAW_DATA)
    assert after.total_size == before.total_size
    assert sum(i.size for i in fresh.backend.list(Kind.DATA)) < 4 * 5000
    with pytest.raises(BlobNotFound):
        fresh.load_blob(BlobType.DATA, purged)


def test_change_tags() -> None:
    """--set replaces, --add appends once, --remove drops; order is kept."""
    assert change_tags(["a", "b"], add=["c", "a"], remove=[], set_to=None) == ["a", "b", "c"]
    assert change_tags(["a", "b"], add=[], remove=["a", "z"], set_to=None) == ["b"]
    assert change_tags(["a"], add=[], remove=[], set_to=["y", "x", "y"]) == ["y", "x"]
    assert change_tags(["a"], add=[], remove=[], set_to=[]) == []


def test_rewritten_keeps_the_first_original(repo: Repository, src: Path) -> None:
    """A copy of a copy names the first snapshot of its line."""
    snap = _backup(repo, src)
    once = rewritten(snap, tags=["t"])
    once.id = "f" * 64
    twice = rewritten(once, tags=[])
    assert (once.original, twice.original, twice.id) == (snap.id, snap.id, "")
    assert snap.tags == []


# -- repair packs ----------------------------------------------------------------------


def _checked(repo: Repository) -> list[str]:
    checker = Checker(repo, lambda _msg: None)
    checker.check_structure()
    checker.read_packs(lambda _i, _name: True)
    return checker.result.errors


def _damage_one_blob(backend: MemoryBackend, repo: Repository) -> tuple[str, bytes]:
    """Flip a byte inside the second blob of the data pack with the most blobs."""
    packs = [p for ps in repo.read_index_files().values() for p in ps]
    pack = max((p for p in packs if p.btype is BlobType.DATA), key=lambda p: len(p.blobs))
    blob_id, offset, length, _raw = pack.blobs[1]
    handle = Handle(Kind.DATA, pack.pack_id.hex())
    data = bytearray(backend.objects[handle][0])
    data[offset + length // 2] ^= 0x01
    backend.objects[handle] = (bytes(data), 0.0)
    return pack.pack_id.hex(), blob_id


def test_salvage_keeps_the_readable_blobs(make_repo: MakeRepo, src: Path) -> None:
    """Every other blob of the damaged pack is copied; after repair snapshots, check passes."""
    backend = MemoryBackend()
    repo = make_repo(backend)
    _backup(repo, src)
    name, bad = _damage_one_blob(backend, repo)
    assert _checked(Repository.open(backend, PASSWORD))
    indexed = {p.pack_id: p for ps in repo.read_index_files().values() for p in ps}
    copies: list[str] = []
    result = salvage_packs(repo, [name], lambda _m: None, lambda n, _d: copies.append(n))
    assert copies == [name]
    assert result.lost == [(BlobType.DATA, bad)]
    assert result.saved == len(indexed[bytes.fromhex(name)].blobs) - 1
    assert result.packs_written == 1
    assert Handle(Kind.DATA, name) not in backend.objects
    fresh = Repository.open(backend, PASSWORD)
    assert not fresh.index.has(BlobType.DATA, bad)
    assert any("not in the index" in e for e in _checked(fresh))
    repairer = SnapshotRepairer(fresh, lambda _m: None, is_dry_run=False)
    for snap in fresh.list_snapshots():
        new = repairer.snapshot(snap)
        assert new is not None
        fresh.flush()
        fresh.save_snapshot(new)
        fresh.delete_snapshot(snap.id)
    assert _checked(Repository.open(backend, PASSWORD)) == []


def test_salvage_of_a_missing_pack_drops_it_from_the_index(make_repo: MakeRepo, src: Path) -> None:
    """A pack that is gone loses all its blobs; the index stops naming it."""
    backend = MemoryBackend()
    repo = make_repo(backend)
    _backup(repo, src)
    packs = [p for ps in repo.read_index_files().values() for p in ps]
    gone = next(p for p in packs if p.btype is BlobType.DATA)
    backend.delete(Handle(Kind.DATA, gone.pack_id.hex()))
    assert find_pack(repo, gone.pack_id.hex()[:12], [gone.pack_id]) == gone.pack_id.hex()
    result = salvage_packs(repo, [gone.pack_id.hex()], lambda _m: None)
    assert {b for _t, b in result.lost} == {b[0] for b in gone.blobs}
    fresh = Repository.open(backend, PASSWORD)
    assert gone.pack_id not in fresh.index.pack_ids


def test_find_pack_errors(repo: Repository, src: Path) -> None:
    """Pack prefixes must be hex, name a stored or indexed pack, and be unique."""
    _backup(repo, src)
    for bad in ("", "xyz", "0" * 64):
        with pytest.raises(PackNotFound):
            find_pack(repo, bad)
    twins = [bytes.fromhex("ab" + c * 62) for c in "01"]
    with pytest.raises(PackNotFound, match="ambiguous"):
        find_pack(repo, "AB", twins)
    assert find_pack(repo, "ab1", twins) == twins[1].hex()
