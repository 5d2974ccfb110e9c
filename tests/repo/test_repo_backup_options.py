"""Tests of the backup options in repo/backup.py: tag files, size limit, case-insensitive
excludes, --files-from lists and reading files ahead in threads."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from archiving import Reporter as _Reporter
from archiving import run_backup as _run
from conftest import MakeRepo

from chunker import ChunkerParams
from repo import backup, readahead
from repo.backup import (
    CACHEDIR_SIGNATURE,
    Archiver,
    BackupOptions,
    ExcludeTag,
    parse_files_from,
    parse_files_from_raw,
)
from repo.errors import DamagedObject, RepoError
from repo.pattern import PatternSet
from repo.repository import Repository
from repo.walk import find_node, walk

TINY_CHUNKS = ChunkerParams(min_size=64, avg_size=256, max_size=1024)


def _stored(repo: Repository, src: Path, **options: Any) -> set[str]:
    """The paths below src that a backup with these options stores."""
    snap, reporter = _run(repo, src, **options)
    assert reporter.errors == []
    prefix = os.fsencode(src) + b"/"
    return {
        os.fsdecode(path[len(prefix) :])
        for path, _node in walk(repo, snap.tree, b"/")
        if path.startswith(prefix)
    }


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


# -- --exclude-caches and --exclude-if-present ---------------------------------------


def test_exclude_caches_keeps_only_the_tag(repo: Repository, tmp_path: Path) -> None:
    """A directory with a valid CACHEDIR.TAG keeps the tag file and loses everything else."""
    src = _tree(
        tmp_path / "src",
        {
            "cache/CACHEDIR.TAG": CACHEDIR_SIGNATURE + b"\n# made by a test\n",
            "cache/blob": b"cached",
            "cache/sub/deep": b"cached too",
            "work/file": b"kept",
        },
    )
    assert _stored(repo, src, is_excluding_caches=True) == {
        "cache",
        "cache/CACHEDIR.TAG",
        "work",
        "work/file",
    }


def test_cachedir_tag_with_wrong_signature_excludes_nothing(
    repo: Repository, tmp_path: Path
) -> None:
    """A CACHEDIR.TAG not starting with the 43-byte signature excludes nothing, with a warning."""
    wrong = CACHEDIR_SIGNATURE[:-1] + b"6"
    src = _tree(tmp_path / "src", {"cache/CACHEDIR.TAG": wrong, "cache/blob": b"x"})
    snap, reporter = _run(repo, src, is_excluding_caches=True)
    names = {path.rsplit(b"/", 1)[-1] for path, _ in walk(repo, snap.tree, b"/")}
    assert {b"CACHEDIR.TAG", b"blob"} <= names
    assert [p for p, _ in reporter.warnings] == [os.fsencode(src / "cache/CACHEDIR.TAG")]


def test_short_cachedir_tag_excludes_nothing(repo: Repository, tmp_path: Path) -> None:
    """A tag file shorter than the signature is not a valid tag."""
    src = _tree(tmp_path / "src", {"c/CACHEDIR.TAG": b"Signature: 8a47", "c/blob": b"x"})
    assert "c/blob" in _stored(repo, src, is_excluding_caches=True)


def test_exclude_if_present_without_header(repo: Repository, tmp_path: Path) -> None:
    """--exclude-if-present NAME: the file's presence alone empties its directory but for it."""
    src = _tree(tmp_path / "src", {"a/.nobackup": b"", "a/b/c": b"x", "d/e": b"y"})
    tags = [ExcludeTag.parse(".nobackup")]
    assert _stored(repo, src, exclude_tags=tags) == {"a", "a/.nobackup", "d", "d/e"}


def test_exclude_if_present_with_header(repo: Repository, tmp_path: Path) -> None:
    """--exclude-if-present NAME:HEADER excludes only where the file starts with HEADER."""
    src = _tree(
        tmp_path / "src",
        {
            "yes/.tag": b"skip me please",
            "yes/data": b"x",
            "no/.tag": b"keep me",
            "no/data": b"y",
        },
    )
    tags = [ExcludeTag.parse(".tag:skip me")]
    assert _stored(repo, src, exclude_tags=tags) == {
        "yes",
        "yes/.tag",
        "no",
        "no/.tag",
        "no/data",
    }


def test_two_tags_in_one_directory_exclude_each_other(repo: Repository, tmp_path: Path) -> None:
    """As in restic, each tag excludes every other entry: two tags keep neither."""
    src = _tree(tmp_path / "src", {"a/.one": b"", "a/.two": b"", "a/data": b"x"})
    tags = [ExcludeTag.parse(".one"), ExcludeTag.parse(".two")]
    assert _stored(repo, src, exclude_tags=tags) == {"a"}


@pytest.mark.parametrize("spec", ["", ":header", "dir/name"])
def test_exclude_tag_needs_a_file_name(spec: str) -> None:
    """filename[:header] needs a plain file name."""
    with pytest.raises(ValueError, match="filename"):
        ExcludeTag.parse(spec)


def test_exclude_tag_header_may_hold_colons() -> None:
    """Only the first colon separates the name from the header."""
    assert ExcludeTag.parse("T:a:b") == ExcludeTag(b"T", b"a:b")


# -- --exclude-larger-than and --iexclude --------------------------------------------


def test_exclude_larger_than_keeps_a_file_of_exactly_that_size(
    repo: Repository, tmp_path: Path
) -> None:
    """Files larger than the limit are left out; one of exactly the limit is kept."""
    src = _tree(
        tmp_path / "src",
        {"equal": b"x" * 1024, "over": b"x" * 1025, "under": b"x", "dir/over": b"y" * 2000},
    )
    assert _stored(repo, src, exclude_larger_than=1024) == {"dir", "equal", "under"}


def test_iexclude_ignores_case(repo: Repository, tmp_path: Path) -> None:
    """--iexclude matches names in any case; --exclude with the same pattern does not."""
    src = _tree(tmp_path / "src", {"a.TXT": b"", "b.Txt": b"", "c.txt": b"", "Keep.md": b""})
    assert _stored(repo, src, excludes=["*.txt"]) == {"a.TXT", "b.Txt", "Keep.md"}
    assert _stored(repo, src, iexcludes=["*.txt"]) == {"Keep.md"}
    assert _stored(repo, src, iexcludes=["/**/KEEP.[M]D"]) == {"a.TXT", "b.Txt", "c.txt"}


def test_pattern_set_ignores_case_only_when_asked() -> None:
    """A case-insensitive PatternSet matches letters of either case, in classes too."""
    assert PatternSet(["/Home/*/[A-C]ache"], ignores_case=True).matches(("home", "u", "cache"))
    assert not PatternSet(["/Home/*/[A-C]ache"]).matches(("home", "u", "cache"))


# -- --files-from and --files-from-raw -----------------------------------------------


def test_files_from_skips_comments_and_blank_lines() -> None:
    """One entry a line, trimmed; empty lines and # comments are skipped."""
    data = b"# a comment\n/etc\n\n   \n  /home/u  \r\n\t# indented comment\nrel/path\n/no/newline"
    assert parse_files_from(data) == [b"/etc", b"/home/u", b"rel/path", b"/no/newline"]


def test_files_from_keeps_undecodable_names() -> None:
    """A line is a name in bytes, whatever its encoding."""
    assert parse_files_from(b"/caf\xe9\n") == [b"/caf\xe9"]


def test_files_from_raw_takes_names_as_they_are() -> None:
    """NUL-terminated names keep newlines, spaces, # and non-UTF-8 bytes."""
    data = b"/a b\0# not a comment\0/new\nline\0 /caf\xe9\xff \0"
    assert parse_files_from_raw(data) == [
        b"/a b",
        b"# not a comment",
        b"/new\nline",
        b" /caf\xe9\xff ",
    ]
    assert parse_files_from_raw(b"") == []


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"/a\0/b", "trailing zero byte"), (b"/a\0\0", "empty file name"), (b"\0", "empty")],
)
def test_files_from_raw_rejects_bad_listings(data: bytes, message: str) -> None:
    """A listing without its final NUL or with an empty name is refused, as restic does."""
    with pytest.raises(ValueError, match=message):
        parse_files_from_raw(data)


# -- --read-concurrency --------------------------------------------------------------


def _many_files(root: Path) -> Path:
    rng = random.Random(7)
    files = {
        f"d{d}/f{i}": rng.randbytes(rng.randrange(0, 9000)) for d in range(3) for i in range(7)
    }
    files["d0/empty"] = b""
    files["top"] = rng.randbytes(30_000)
    return _tree(root, files)


def _refuse_to_open(monkeypatch: pytest.MonkeyPatch, bad: bytes) -> None:
    """Opening `bad` for reading fails with EACCES from now on; other files open."""
    real_open = readahead.open_for_reading

    def refuse_one(path: bytes) -> int:
        if path == bad:
            raise PermissionError(13, "Permission denied")
        return real_open(path)

    monkeypatch.setattr(readahead, "open_for_reading", refuse_one)


def test_read_concurrency_gives_the_same_tree(
    make_repo: MakeRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading files ahead in several threads stores the same tree as one at a time."""
    # Small blocks, so that files span many blocks and chunks span block edges.
    monkeypatch.setattr(readahead, "READ_BLOCK", 777)
    src = _many_files(tmp_path / "src")
    repo = make_repo(chunker=TINY_CHUNKS)
    trees = []
    for n in (1, 4):
        snap, reporter = _run(repo, src, read_concurrency=n)
        assert reporter.errors == reporter.warnings == []
        # The source's subtree: the folders above it may change between the runs.
        trees.append(find_node(repo, snap.tree, os.fsencode(src)).subtree)
    assert trees[0] == trees[1]


def test_files_read_by_the_archiver_give_the_same_tree(
    make_repo: MakeRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files read straight into the chunking window (DirectFeed) store the same tree as
    files handed over by the reader threads; one that cannot be opened is reported."""
    src = _many_files(tmp_path / "src")
    repo = make_repo(chunker=TINY_CHUNKS)
    filled: list[int] = []
    real_readinto = readahead.DirectFeed.readinto

    def counting(feed: readahead.DirectFeed, view: memoryview) -> int:
        filled.append(n := real_readinto(feed, view))
        return n

    monkeypatch.setattr(readahead.DirectFeed, "readinto", counting)
    monkeypatch.setattr(readahead, "DIRECT_MAX", -1)  # no file read whole up front
    trees = []
    for direct_from in (1 << 40, 1000):
        monkeypatch.setattr(readahead, "DIRECT_FROM", direct_from)
        snap, reporter = _run(repo, src, read_concurrency=2)
        assert reporter.errors == reporter.warnings == []
        trees.append(find_node(repo, snap.tree, os.fsencode(src)).subtree)
        assert (sum(filled) > 30_000) == (direct_from == 1000)
    assert trees[0] == trees[1]
    bad = os.fsencode(src / "top")  # 30,000 bytes: read directly
    _refuse_to_open(monkeypatch, bad)
    snap, reporter = _run(repo, src, read_concurrency=2)
    assert reporter.errors == [(bad, "Permission denied")]


def test_read_concurrency_reads_files_at_the_same_time(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --read-concurrency 3, three files are open at once (a barrier of three passes)."""
    # Files this small are read by the archiver itself when cached: make them all go
    # through the reader threads.
    monkeypatch.setattr(readahead, "DIRECT_MAX", -1)
    src = _tree(tmp_path / "src", {f"f{i}": b"%d" % i for i in range(5)})
    barrier = threading.Barrier(3, timeout=10)
    opened: list[bytes] = []
    real_open = readahead.open_regular

    def open_together(path: bytes) -> int:
        opened.append(path)
        if len(opened) <= 3:
            barrier.wait()  # a BrokenBarrierError (not an OSError) fails the backup
        return real_open(path)

    monkeypatch.setattr(readahead, "open_regular", open_together)
    assert _stored(repo, src, read_concurrency=3) == {f"f{i}" for i in range(5)}


def test_unreadable_file_among_read_ahead_files(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file a reader thread cannot open is reported and left out; its neighbours are stored."""
    src = _many_files(tmp_path / "src")
    bad = os.fsencode(src / "d1" / "f3")
    _refuse_to_open(monkeypatch, bad)
    snap, reporter = _run(repo, src, read_concurrency=3)
    assert reporter.errors == [(bad, "Permission denied")]
    names = {path for path, _ in walk(repo, snap.tree, b"/")}
    assert bad not in names
    assert os.fsencode(src / "d1" / "f2") in names
    assert os.fsencode(src / "d1" / "f4") in names


def test_a_failing_repository_stops_the_readers(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error while storing ends the backup without leaving reader threads behind."""
    src = _many_files(tmp_path / "src")
    calls = []
    real_save = repo.save_blob

    def failing_save(*args: Any) -> Any:
        calls.append(args)
        if len(calls) == 3:
            raise RepoError("injected failure")
        return real_save(*args)

    monkeypatch.setattr(repo, "save_blob", failing_save)
    with pytest.raises(RepoError, match="injected"):
        _run(repo, src, read_concurrency=4)
    assert not [t for t in threading.enumerate() if t.name.startswith("hutch-reader")]


def test_read_concurrency_must_be_positive(repo: Repository) -> None:
    """Zero reader threads is refused."""
    opts = BackupOptions(paths=[b"/nonexistent"], hostname="h", username="u", read_concurrency=0)
    with pytest.raises(ValueError, match="at least 1"):
        Archiver(repo, opts, _Reporter())


# -- directories stored in batches ----------------------------------------------------


def _record_reads(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The names of the files the archiver reads from now on, in order."""
    read: list[bytes] = []
    store_file = Archiver._store_file

    def recording(self: Archiver, entry: Any, feed: Any) -> None:
        read.append(os.path.basename(entry.path))
        store_file(self, entry, feed)

    monkeypatch.setattr(Archiver, "_store_file", recording)
    return read


def test_a_directory_in_batches_stores_the_same_tree(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries statted and packed a few at a time give the tree one batch gives, and the
    parent's entries are found across batches: only new and changed files are read."""
    files = {f"f{i:02d}": b"%d" % i for i in range(20)}
    files.update({f"f{i:02d}/inner": b"sub %d" % i for i in (25, 31)})
    src = _tree(tmp_path / "src", files)
    time.sleep(2 * backup.RACY_NS / 1e9)  # not racy against the next backup's start
    whole, _ = _run(repo, src)
    read = _record_reads(monkeypatch)
    monkeypatch.setattr(backup, "DIR_BATCH", 3)
    batched, reporter = _run(repo, src, parent=whole)
    assert reporter.errors == reporter.warnings == []
    assert batched.tree == whole.tree
    assert read == []
    # Entries added and removed on either side of batch boundaries.
    (src / "f03").unlink()
    (src / "f10a").write_bytes(b"new")
    (src / "f19").write_bytes(b"changed")
    again, reporter = _run(repo, src, parent=batched)
    assert reporter.errors == reporter.warnings == []
    assert read == [b"f10a", b"f19"]
    assert again.summary["files_unmodified"] == 20
    monkeypatch.setattr(backup, "DIR_BATCH", 1024)
    assert _run(repo, src)[0].tree == again.tree


def test_a_parent_tree_damaged_midway_costs_only_rereading(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A parent tree that turns out malformed after some entries is a warning: the
    entries before it are reused, the rest read again, and the tree stored is whole."""
    src = _tree(tmp_path / "src", {f"f{i}": b"%d" % i for i in range(4)})
    time.sleep(2 * backup.RACY_NS / 1e9)  # not racy against the next backup's start
    parent, _ = _run(repo, src)
    iter_tree = backup.iter_tree

    def damaged(data: bytes, *, name: str) -> Iterator[Any]:
        nodes = iter_tree(data, name=name)
        if name.startswith("tree") and b"f0" in data:  # the sources' folder
            yield next(nodes)
            raise DamagedObject(f"{name}: malformed tree")
        yield from nodes

    read = _record_reads(monkeypatch)
    monkeypatch.setattr(backup, "iter_tree", damaged)
    snap, reporter = _run(repo, src, parent=parent)
    assert reporter.errors == []
    assert [(path, message.split(":")[0]) for path, message in reporter.warnings] == [
        (b"src", "cannot use the parent's tree")
    ]
    assert read == [b"f1", b"f2", b"f3"]
    assert snap.tree == parent.tree
