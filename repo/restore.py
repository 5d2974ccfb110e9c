"""Restore: plan from the tree, decide per entry against the target, then write file
contents on a few workers, each taking its own stretch of pack ranges in turn: it
reads a range once, opens the blobs one at a time and pwrites each into every file
that holds it, creating the files it owns and giving them their metadata as they
complete. File creation is mostly kernel time, so it runs on every core: on worker
processes for a local repository (repo/forked.py), which write a batch while this
process plans the next, else on threads. Folders are made level by level on threads
the same way, and special files after the last batch. Hard links are made on this
thread, which owns the folder descriptors and the reporter."""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import gc
import itertools
import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from repo.errors import RepoError
from repo.forked import Forked, can_fork
from repo.packread import (
    PLAIN_BUDGET,
    Budget,
    Data,
    Run,
    decode_run,
    read_gap,
    runs,
    verify_file,
)
from repo.pattern import PatternSet
from repo.repository import Repository
from repo.restorefs import (
    Dirs,
    apply_fd_metadata,
    lstat_at,
    make_special,
    mark_top_at,
    remove_entry,
    special_matches,
    unmark_top,
)
from repo.tree import Node
from repo.types import BlobId, BlobLocation, BlobType
from repo.walk import file_content, is_safe_name

# Files one worker holds open at once (its descriptors are its own).
OPEN_FILES = 64
# Files without data to fetch handed to a worker at once.
LONE_BATCH = 64
# What creating a file costs, in bytes written, when spreading work over the workers.
FILE_COST = 256 * 1024
# A batch whose files average less than this many bytes gets at most SMALL_FILES_THREADS
# workers: its cost is creating files and setting their metadata, system calls that each
# hand the GIL over, and a third worker only added to that (on two cores, a restore of
# the harness's `src` after a deletion nearby: 1.39-1.72 s with two, 1.74-2.18 with three;
# 100,000 files of 1 KB: 16.7-17.2 s against 18.9-20.2). Larger files keep opts.threads:
# there a third worker fills the waits for pack ranges from the disk.
LARGE_FILES_FROM = 1024 * 1024
SMALL_FILES_THREADS = 2
# Chunk writes in one unit at most (a pack range of small files is cut to this).
UNIT_FILES = 32
# Folders of one level, or special files, made on one thread at least (fewer: not
# worth a thread).
MKDIRS_PER_THREAD = 8
# Units a worker process is given ahead, so that it never waits for the next: the
# thread serving it may wait for the interpreter's lock while the main thread plans
# the next batch (up to sys.getswitchinterval(), 5 ms, longer than a unit of small
# files takes).
ORDERS_AHEAD = 4
# Folders or special files made at a time, their parent folders' descriptors held open.
SPREAD_SLICE = 1024
# Folders marked the top of a hierarchy while the restore runs, at most (_mark_top).
MARKED_TOPS = 16
# A restore plans and writes the tree this many files, or chunks, at a time: a planned
# file costs about a kilobyte (its entry, its chunk list, where each chunk goes), and a
# tree of any size must restore in the same memory.
BATCH_FILES = 8192
BATCH_CHUNKS = 65536
# The first batch holds this many files, each next one twice as many up to BATCH_FILES:
# the workers start on a small batch while the walk plans the next.
FIRST_BATCH_FILES = 1024
OVERWRITE_MODES = ("always", "if-changed", "if-newer", "never")
# Where filling the page cache is dear, chunks are written uncached (RWF_DONTCACHE,
# Linux 6.14): the write starts its writeback at once and its pages go back to the free
# list when that is done, to be filled again by the next writes. On a virtual machine
# whose host takes back free memory, a fresh page costs a fault on the host: 1 GiB of
# cached writes then takes 1.8-3.7 s of system time, uncached 0.3 s. But an uncached
# restore waits for the disk (1 GiB and the packs' reads: some 1.6 s here), a cached one
# does not; so each worker measures what its cached writes cost (CPU time per KiB,
# which the host's faults are part of) and writes uncached while that is more than
# DEAR_NS_PER_KIB, measuring again every PROBE_EVERY writes. 1.5 us per KiB is where,
# by the times measured here, a restore of the benchmark's `big` takes as long either
# way: cached, 1.5 s of CPU besides the writes, on two cores; uncached, 1.7 s for the
# disk. Cheap pages cost some 0.35 us per KiB. A disk much slower than 1 GiB/s where
# pages are dear would want a higher threshold.
RWF_DONTCACHE = 0x80  # linux/fs.h; Python 3.11's os has no name for it
MEASURE_FROM = 64 * 1024  # smaller writes are neither measured nor uncached
DEAR_NS_PER_KIB = 1500
PROBE_EVERY = 8

# What happens to an entry: created anew, replaced, patched in place (if-changed:
# only ranges that differ are written), or left as it is.
CREATE, REPLACE, PATCH, SKIP = "create", "replace", "patch", "skip"

# The folders a worker needs: each one's descriptor, or why it could not be opened.
Parents = dict[tuple[bytes, ...], int | OSError]
_T = TypeVar("_T")
_R = TypeVar("_R")


class RestoreReporter(Protocol):
    """What a restore tells. A reporter with a false `lists_plan` attribute is not told
    the action decided for each file (planned() is still called for deletions)."""

    def bytes_written(self, n: int) -> None: ...
    def error(self, path: str, message: str) -> None: ...
    def planned(self, path: str, action: str) -> None: ...


@dataclass(slots=True)
class RestoreOptions:
    target: bytes
    includes: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)
    is_sparse: bool = False
    is_verify: bool = False
    overwrite: str = "always"
    is_delete: bool = False
    is_dry_run: bool = False
    # Workers for a local repository. Measured on two cores: with two, a core idled
    # while its worker waited for a pack range from the disk (packs leave the page
    # cache once written: docs/design.md, "Page cache"); a third fills those waits.
    # Batches of small files get fewer (SMALL_FILES_THREADS).
    threads: int = 3
    # Write files on forked worker processes rather than threads (repo/forked.py): for
    # a repository whose reads need no connection a child could not share.
    processes: bool = False


@dataclass(slots=True)
class _File:
    rel: tuple[bytes, ...]
    node: Node
    blobs: list[tuple[BlobId, int]] = field(default_factory=list)  # every chunk, by offset
    fetch: list[tuple[BlobId, int]] = field(default_factory=list)  # the chunks to write
    action: str = CREATE
    remaining: int = 0  # chunks still to write; -1 once finished, failed or skipped
    damaged: list[tuple[int, int, str]] = field(default_factory=list)
    # Its chunks lie in several pack ranges, so several workers write it: it is created
    # before any of them runs, and its bookkeeping is shared under Restorer._lock.
    shared: bool = False
    created: bool = False  # exists in the target; reopened, not created, from now on
    failed: bool = False  # could not be created or written (reported)
    end: int = 0  # the file's size so far: truncated up to node.size when it is short


@dataclass(slots=True)
class _Unit:
    """One worker's job: a pack range to write out, or files with nothing to fetch."""

    run: Run | None
    lone: list[int]
    parents: Parents = field(default_factory=dict)
    number: int = 0  # its place in the batch, by which a worker process is given it


@dataclass(slots=True)
class _Outcome:
    """What a unit did, reported by the owning thread (the reporter is not thread-safe)."""

    files: int = 0
    written: int = 0
    errors: list[tuple[tuple[bytes, ...], str]] = field(default_factory=list)
    # From a worker process, what the parent's copy of the plan must learn: files that
    # failed (and why, reported by the parent once), and damage met in files.
    failed: list[tuple[int, str]] = field(default_factory=list)
    damage: list[tuple[int, tuple[int, int, str]]] = field(default_factory=list)


@dataclass(slots=True)
class _Writing:
    """A batch that worker processes are writing (Restorer._start_processes): its files,
    the outcomes of its units, then a None as each serving thread ends."""

    files: list[_File]
    done: queue.SimpleQueue[tuple[_Unit, _Outcome | BaseException] | None] = field(
        default_factory=queue.SimpleQueue
    )
    stop: threading.Event = field(default_factory=threading.Event)  # take no more units
    threads: list[threading.Thread] = field(default_factory=list)


@dataclass(slots=True)
class RestoreResult:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    errors: int = 0
    skipped: int = 0
    deleted: int = 0


def _show(rel: tuple[bytes, ...]) -> str:
    return "/".join(p.decode("utf-8", "surrogateescape") for p in rel) or "."


class Restorer:
    """Restores one tree into a target folder."""

    _dirs: Dirs  # open while run() runs

    def __init__(
        self,
        repo: Repository,
        root: Node,
        base: tuple[str, ...],
        opts: RestoreOptions,
        reporter: RestoreReporter,
    ) -> None:
        self.repo = repo
        self.root = root
        self.base = base
        self.opts = opts
        self.reporter = reporter
        self.includes = PatternSet(opts.includes)
        self.excludes = PatternSet(opts.excludes)
        self.result = RestoreResult()
        self.dirs: list[tuple[tuple[bytes, ...], Node]] = []
        self.files: list[_File] = []  # the batch being restored
        self._planned: list[_File] = []  # the next batch, while it is planned
        # Where the planned batch's chunks are (looked up once: the plan needs their
        # sizes, the writing their packs), then the taken batch's, until its units are cut.
        self._planned_locs: dict[BlobId, BlobLocation] = {}
        self._locs: dict[BlobId, BlobLocation] = {}
        self._batch_files = min(FIRST_BATCH_FILES, BATCH_FILES)
        self.links: list[tuple[tuple[bytes, ...], tuple[bytes, ...]]] = []
        self.others: list[tuple[tuple[bytes, ...], Node]] = []
        self._inodes: dict[tuple[int, int], tuple[bytes, ...]] = {}
        # Every name each restored folder has in the snapshot, for --delete.
        self._names: dict[tuple[bytes, ...], set[bytes]] = {}
        self._made_dirs = 0  # the folders of self.dirs made (or tried) so far
        self._planned_chunks = 0  # chunks of the files in self.files
        # Folders this run made (or found empty): nothing in them needs a look first.
        self._fresh: set[tuple[bytes, ...]] = set()
        self._bad_dirs: set[tuple[bytes, ...]] = set()  # could not be made
        self._tops: list[tuple[bytes, ...]] = []  # folders marked by _mark_top
        # Where each blob goes: (file index, offset) for every file holding it.
        self._targets: dict[BlobId, list[tuple[int, int]]] = {}
        self._lock = threading.Lock()  # the bookkeeping of shared files
        self._uncached = RWF_DONTCACHE  # 0 once the system refuses it
        self._costs = threading.local()  # each worker's cached-write cost, ns per KiB
        self._budget = Budget(PLAIN_BUDGET)
        self._forked = False  # True in a worker process (_run_forked)

    def _error(self, rel: tuple[bytes, ...], message: str) -> None:
        self.result.errors += 1
        self.reporter.error(_show(rel), message)

    # -- planning --------------------------------------------------------------------

    def _wanted(self, parts: tuple[str, ...], is_dir: bool) -> tuple[bool, bool]:
        """(restore this entry, descend into it)."""
        if self.excludes and self.excludes.matches(parts):
            return False, False
        if not self.includes or self.includes.matches(parts):
            return True, is_dir
        return False, is_dir and self.includes.may_match_below(parts)

    def _plan_all(self) -> Iterator[None]:
        """Plan the whole tree, pausing (yielding) each time a batch is full."""
        if self.root.type == "dir" and self.root.subtree is not None:
            yield from self._plan(self.root.subtree, (), self.base)
        else:
            self._plan_leaf((self.root.name,), self.root)

    def _plan(
        self, tree_id: BlobId, rel: tuple[bytes, ...], parts: tuple[str, ...]
    ) -> Generator[None, None, bool]:
        """Collect what to restore below a tree, yielding whenever the batch is full;
        returns True when anything was taken. A folder on the way to a yield has
        something taken below it, so it stays in self.dirs: only the folders after the
        made ones are ever dropped again."""
        taken = False
        try:
            nodes = self.repo.load_tree(tree_id)
        except RepoError as exc:
            self._error(rel, f"cannot read its tree: {exc}")
            return False
        if self.opts.is_delete:
            self._names[rel] = {n.name for n in nodes}
        is_patterned = bool(self.includes or self.excludes)
        for node in nodes:
            if not is_safe_name(node.name):
                self._error((*rel, node.name), "refusing an entry with an unsafe name")
                continue
            child = (*rel, node.name)
            # The path as patterns see it; without patterns nothing looks at it.
            cparts = (*parts, node.name.decode("utf-8", "surrogateescape")) if is_patterned else ()
            is_dir = node.type == "dir"
            want, descend = self._wanted(cparts, is_dir)
            if is_dir:
                index = len(self.dirs)
                self.dirs.append((child, node))
                below = False
                if descend and node.subtree is not None:
                    below = yield from self._plan(node.subtree, child, cparts)
                if not (want or below):
                    self.dirs.pop(index)
                    continue
            elif not want:
                continue
            else:
                self._plan_leaf(child, node)
                if len(self._planned) >= self._batch_files or self._planned_chunks >= BATCH_CHUNKS:
                    taken = True
                    yield
            taken = True
        return taken

    def _plan_leaf(self, rel: tuple[bytes, ...], node: Node) -> None:
        if node.nlink and node.device is not None:
            key = (node.device, node.inode)
            first = self._inodes.get(key)
            if first is not None:
                self.links.append((first, rel))
                return
            self._inodes[key] = rel
        if node.type == "file":
            item = self._plan_file(rel, node)
            self._planned.append(item)
            self._planned_chunks += len(item.blobs)
        elif node.type != "socket":  # a socket belongs to a process; restic skips them too
            self.others.append((rel, node))

    def _plan_file(self, rel: tuple[bytes, ...], node: Node) -> _File:
        """Place each chunk at its offset; after a missing chunk the offsets are unknown."""
        item = _File(rel, node)
        try:
            content = file_content(self.repo, node)
        except RepoError as exc:
            item.damaged.append((0, node.size, str(exc)))
            return item
        offset = 0
        locs = self._planned_locs
        for blob_id in content:
            loc = locs.get(blob_id)
            if loc is None:
                loc = self.repo.index.lookup(BlobType.DATA, blob_id)
                if loc is not None:
                    locs[blob_id] = loc
            if loc is None:
                why = f"data blob {blob_id.hex()[:16]} is not in the index"
                item.damaged.append((offset, node.size, why))
                break
            item.blobs.append((blob_id, offset))
            offset += loc.raw_length
        item.fetch = item.blobs
        return item

    # -- deciding against what the target holds --------------------------------------

    def _decide(self, rel: tuple[bytes, ...], node: Node) -> str:
        """What --overwrite makes of an entry, given what the target has there."""
        fresh = rel[:-1] in self._fresh
        st = None if fresh else lstat_at(self._dirs.existing(rel[:-1]), rel[-1])
        if st is None:
            return CREATE
        mode = self.opts.overwrite
        if mode == "never":
            return SKIP
        if mode == "if-newer":
            return REPLACE if node.mtime_ns > st.st_mtime_ns else SKIP
        if mode == "if-changed":
            if node.type != "file":
                parent = self._dirs.fd(rel[:-1])
                return SKIP if special_matches(st, parent, rel[-1], node) else REPLACE
            # Writing into an inode with other links would change files elsewhere.
            return PATCH if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 else REPLACE
        return REPLACE

    def _changed_blobs(self, item: _File) -> list[tuple[BlobId, int]]:
        """The chunks of an existing file that differ from the snapshot (if-changed)."""
        parent = self._dirs.fd(item.rel[:-1])
        fd = os.open(item.rel[-1], os.O_RDONLY | os.O_NOFOLLOW, dir_fd=parent)
        try:
            changed = []
            for blob_id, offset in item.blobs:
                length = self._locs[blob_id].raw_length  # every planned chunk is there
                data = os.pread(fd, length, offset)
                if len(data) != length or self.repo.blob_id(data) != blob_id:
                    changed.append((blob_id, offset))
            return changed
        finally:
            os.close(fd)

    def _same_size(self, item: _File) -> bool:
        st = lstat_at(self._dirs.existing(item.rel[:-1]), item.rel[-1])
        return st is not None and st.st_size == item.node.size

    def _decide_files(self) -> None:
        lists_plan = getattr(self.reporter, "lists_plan", True)
        for item in self.files:
            item.action = self._decide(item.rel, item.node)
            if item.action == PATCH:
                item.fetch = self._changed_blobs(item)
                if not item.fetch and self._same_size(item):
                    # Content already right: only its metadata is (re)applied.
                    if lists_plan:
                        self.reporter.planned(_show(item.rel), SKIP)
                    continue
            elif item.action == SKIP:
                item.fetch = []
                self.result.skipped += 1
            if lists_plan:  # a path string per file costs a restore of many of them
                self.reporter.planned(_show(item.rel), item.action)

    # -- running ---------------------------------------------------------------------

    def run(self) -> RestoreResult:
        self.repo.index  # noqa: B018 - a damaged index stops here, not as a tree error
        # Each full batch, then what is planned when the walk ends.
        batches = itertools.chain(self._plan_all(), (None,))
        if not self.opts.is_dry_run:
            os.makedirs(self.opts.target, exist_ok=True)
        root_fd = _open_target(self.opts.target)
        if root_fd is None:  # a dry run into a folder that does not exist yet
            for _ in batches:
                self._take_batch()
                self._report_all_new()
            return self.result
        self._dirs = Dirs(root_fd)
        try:
            if not self.opts.is_dry_run:
                with os.scandir(root_fd) as entries:
                    if next(entries, None) is None:
                        self._fresh.add(())
            with _no_cycle_collection():
                try:
                    self._run_phases(batches)
                finally:
                    self._unmark_tops()
        finally:
            self._dirs.close()
            os.close(root_fd)
        return self.result

    def _run_phases(self, batches: Iterator[None]) -> None:
        if self.opts.is_dry_run:
            for _ in batches:
                self._take_batch()
                self._decide_files()
            self._delete_extras()
            return
        writing = None
        try:
            # Worker processes write a batch while this thread plans the next one, makes
            # its folders, decides its files and cuts its units; only then does it wait
            # for them, and start the next.
            for _ in batches:
                self._take_batch()
                self._make_dirs()
                self._decide_files()
                lanes = self._plan_writes()
                if writing is not None:
                    self._end_writing(writing)
                writing = self._start_writing(lanes)
            if writing is not None:
                self._end_writing(writing)
        except BaseException:
            if writing is not None:  # stopped by an error: let the workers end first
                writing.stop.set()
                for thread in writing.threads:
                    thread.join()
            raise
        self._make_links_and_others()
        if self.opts.is_delete:
            self._delete_extras()
        self._dir_metadata()

    def _take_batch(self) -> None:
        """Make the files just planned the batch to restore, forgetting the last one
        (its folders stay; worker processes still writing it have it in _Writing)."""
        self.files, self._planned = self._planned, []
        self._locs, self._planned_locs = self._planned_locs, {}
        self._targets = {}
        self._planned_chunks = 0
        self._batch_files = min(BATCH_FILES, 2 * self._batch_files)

    def _after_writing(self) -> None:
        if self.opts.is_verify:
            self._verify()

    def _report_all_new(self) -> None:
        for item in self.files:
            self.reporter.planned(_show(item.rel), CREATE)

    def _make_dirs(self) -> None:
        """Make the folders level by level, each level's spread over the workers: a
        mkdir allocates an inode as a file's creation does, often the slowest part."""
        levels: dict[int, list[tuple[bytes, ...]]] = {}
        for rel, _node in self.dirs[self._made_dirs :]:
            levels.setdefault(len(rel), []).append(rel)
        self._made_dirs = len(self.dirs)
        for depth in sorted(levels):
            rels = levels[depth]
            outcomes = self._spread(rels, lambda rel: rel, self._make_dir)
            for rel, problem in zip(rels, outcomes, strict=True):
                if problem is None:
                    self._fresh.add(rel)
                    self.result.dirs += 1
                elif problem:
                    self._bad_dirs.add(rel)
                    self._error(rel, problem)

    def _spread(
        self,
        items: list[_T],
        rel_of: Callable[[_T], tuple[bytes, ...]],
        make: Callable[[Parents, _T], str | None],
    ) -> list[str | None]:
        """make(parents, item) for every item, in order, spread over the workers in
        slices of SPREAD_SLICE: each slice's folders are pinned while it runs, so the
        descriptors open at once stay few however wide the tree."""
        outcomes: list[str | None] = []
        for start in range(0, len(items), SPREAD_SLICE):
            part = items[start : start + SPREAD_SLICE]
            parents: Parents = {}
            self._pin(parents, (rel_of(item)[:-1] for item in part))
            ways = max(1, min(self.opts.threads, len(part) // MKDIRS_PER_THREAD))
            size = -(-len(part) // ways)
            # Contiguous runs: entries come in tree order, so each worker makes its
            # entries in folders of its own (a creation holds its folder's lock).
            pieces = [part[i : i + size] for i in range(0, len(part), size)]
            try:
                outcomes += _in_parallel(pieces, functools.partial(make, parents))
            finally:
                self._unpin(parents)
        return outcomes

    def _make_dir(self, parents: Parents, rel: tuple[bytes, ...]) -> str | None:
        """None when made, "" when already a folder, else what went wrong (on a worker)."""
        try:
            parent = _parent_fd(parents, rel)
            try:
                os.mkdir(rel[-1], 0o700, dir_fd=parent)
            except FileExistsError:
                st = os.stat(rel[-1], dir_fd=parent, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    return ""
                if self.opts.overwrite == "never":
                    raise OSError(errno.EEXIST, "exists and is not a directory") from None
                remove_entry(parent, rel[-1])
                os.mkdir(rel[-1], 0o700, dir_fd=parent)
            if len(rel) == 1 or rel[:-1] not in self._fresh:
                self._mark_top(parent, rel)
        except OSError as exc:
            return exc.strerror or str(exc)
        return None

    def _mark_top(self, parent: int, rel: tuple[bytes, ...]) -> None:
        """Mark rel, a folder this restore made in one it did not make, the top of a
        directory hierarchy until the restore ends (restorefs.mark_top): ext4 then
        makes the folders below it in the block group with the fewest folders, not in
        the target's.

        On ext4 without a journal, making an inode first steps over each inode freed
        in its block group in the last minute (the last six, while the freed inode's
        table block is not written back). After another tree nearby was deleted, that
        was most of a restore's CPU time, and its system time was four to eight times
        that of a restore into a group without freed inodes (docs/benchmarks.md,
        seventeenth run). With a journal, or on another file system, the tree is only
        placed as ext4 places the folders made at its root."""
        with self._lock:
            if len(self._tops) >= MARKED_TOPS:
                return
            self._tops.append(rel)
        if not mark_top_at(parent, rel[-1]):
            with self._lock:
                self._tops.remove(rel)

    def _unmark_tops(self) -> None:
        for rel in self._tops:
            try:
                unmark_top(self._dirs.fd(rel))
            except OSError as exc:
                self._error(rel, f"top-of-hierarchy flag left set: {exc.strerror or exc}")
        self._tops = []

    # -- writing file contents -------------------------------------------------------

    def _start_writing(self, lanes: list[list[_Unit]]) -> _Writing | None:
        """Run the lanes on the workers. Worker processes are left running (what they
        write is returned, for _end_writing); threads are waited for."""
        writing = self._start_processes(lanes)
        if writing is None:
            self._run_units(lanes)
            self._after_writing()
        return writing

    def _plan_writes(self) -> list[list[_Unit]]:
        """The batch's pack ranges to read, cut into units and dealt out in lanes (see
        the module doc); files with nothing to fetch (empty ones) go by folder."""
        by_pack: dict[bytes, dict[BlobId, BlobLocation | None]] = {}
        lone: list[int] = []
        for index, item in enumerate(self.files):
            if item.action == SKIP:
                item.remaining = -1
                continue
            for blob_id, offset in item.fetch:
                targets = self._targets.get(blob_id)
                if targets is None:
                    loc = self._locs.get(blob_id)
                    if loc is None:
                        continue  # planned only when indexed
                    targets = self._targets[blob_id] = []
                    by_pack.setdefault(loc.pack, {})[blob_id] = loc
                targets.append((index, offset))
                item.remaining += 1
            if not item.remaining:
                lone.append(index)
        gap = read_gap(self.repo)
        work = [
            part
            for pack, locs in by_pack.items()
            for start, end, blobs in runs(locs, gap)
            for part in self._split((pack, start, end, blobs))
        ]
        del by_pack
        self._locs = {}  # what the units need, they hold
        self._prepare_shared(work)
        by_folder: dict[tuple[bytes, ...], list[int]] = {}
        for index in lone:
            by_folder.setdefault(self.files[index].rel[:-1], []).append(index)
        units = [
            _Unit(None, batch[i : i + LONE_BATCH])
            for batch in by_folder.values()
            for i in range(0, len(batch), LONE_BATCH)
        ]
        units += [_Unit(run, []) for run in work]
        return self._lanes(units)

    def _split(self, run: Run) -> Iterator[Run]:
        """A pack range cut into ranges of at most UNIT_FILES chunk writes: a range of
        small files can hold hundreds of them, and the workers share out ranges."""
        pack, _start, _end, blobs = run
        part: list[tuple[BlobId, BlobLocation]] = []
        writes = 0
        for blob_id, loc in blobs:
            targets = len(self._targets[blob_id])
            if part and writes + targets > UNIT_FILES:
                yield _range(pack, part)
                part, writes = [], 0
            part.append((blob_id, loc))
            writes += targets
        if part:
            yield _range(pack, part)

    def _prepare_shared(self, work: list[Run]) -> None:
        """Create up front each file that several ranges write to, at its full size."""
        seen: dict[int, int] = {}  # file index -> the first range writing it
        for number, (_pack, _start, _end, blobs) in enumerate(work):
            for blob_id, _loc in blobs:
                for index, _offset in self._targets[blob_id]:
                    if seen.setdefault(index, number) != number:
                        self.files[index].shared = True
        for item in self.files:
            if not item.shared:
                continue
            try:
                fd = self._create(item, self._dirs.fd(item.rel[:-1]))
                try:
                    os.ftruncate(fd, item.node.size)
                finally:
                    os.close(fd)
            except OSError as exc:
                self._error(item.rel, exc.strerror or str(exc))
                item.remaining = -1
                item.failed = True
            else:
                item.created = True
                item.end = item.node.size

    def _lanes(self, units: list[_Unit]) -> list[list[_Unit]]:
        """Cut the units, in pack order, into one stretch per worker of about equal
        weight (bytes to write, a created file counting as FILE_COST). Packs hold files
        in tree order, so the workers create and write files in different folders and
        files: creating an entry holds its folder's lock, writing holds the file's, and
        a worker waiting for such a lock spins on a core."""
        loads = [self._load(unit) for unit in units]
        weights = [data + FILE_COST * files for data, files in loads]
        files = sum(f for _data, f in loads)
        threads = self.opts.threads
        if files and sum(d for d, _files in loads) < LARGE_FILES_FROM * files:
            threads = min(threads, SMALL_FILES_THREADS)
        ways = max(1, min(threads, len(units)))
        share = sum(weights) / ways
        lanes: list[list[_Unit]] = [[] for _ in range(ways)]
        done = 0
        for unit, weight in zip(units, weights, strict=True):
            lanes[min(ways - 1, int(done // share) if share else 0)].append(unit)
            done += weight
        return [lane for lane in lanes if lane]

    def _load(self, unit: _Unit) -> tuple[int, int]:
        """The bytes a unit writes, and the files it creates."""
        if unit.run is None:
            return 0, len(unit.lone)
        data = 0
        created: set[int] = set()
        for blob_id, loc in unit.run[3]:
            targets = self._targets[blob_id]
            data += loc.raw_length * len(targets)
            created.update(index for index, _offset in targets if not self.files[index].shared)
        return data, len(created)

    def _run_units(self, lanes: list[list[_Unit]]) -> None:
        """Run each lane on a thread of its own, one unit at a time, handed over by this
        thread, which pins the folders of a unit's files before and collects its outcome
        after; a worker done with its lane helps with another. A running unit holds one
        pack range in memory."""
        todo: list[queue.SimpleQueue[_Unit | None]] = [queue.SimpleQueue() for _ in lanes]
        done: queue.SimpleQueue[tuple[int, _Unit, _Outcome | BaseException]]
        done = queue.SimpleQueue()

        def work(lane: int) -> None:
            while (unit := todo[lane].get()) is not None:
                try:
                    outcome: _Outcome | BaseException = self._run_unit(unit)
                except BaseException as exc:  # raised again on the owning thread
                    outcome = exc
                done.put((lane, unit, outcome))

        waiting = [collections.deque(lane) for lane in lanes]

        def hand_out(lane: int) -> int:
            unit = _next_unit(waiting, lane)
            if unit is None:
                return 0
            self._pin_parents(unit)
            todo[lane].put(unit)
            return 1

        workers = [
            threading.Thread(target=work, args=(lane,), name=f"restore-{lane}", daemon=True)
            for lane in range(len(lanes))
        ]
        for worker in workers:
            worker.start()
        try:
            running = sum(hand_out(lane) for lane in range(len(lanes)))
            while running:
                lane, unit, outcome = done.get()
                running -= 1
                if not isinstance(outcome, BaseException):
                    running += hand_out(lane)  # first: its worker waits for nothing else
                self._collect(unit, outcome)
        finally:
            for orders in todo:
                orders.put(None)
            for worker in workers:
                worker.join()

    def _start_processes(self, lanes: list[list[_Unit]]) -> _Writing | None:
        """With opts.processes and more than one lane: fork a worker process per lane
        (repo/forked.py) and return while they run, so that the next batch is planned
        meanwhile. Each is served by a thread of this process that gives it its lane's
        units one at a time, then helps with another lane, as _run_units does. None when
        threads are to do it (one lane, or no process to be had)."""
        if not (self.opts.processes and len(lanes) > 1 and can_fork()):
            return None
        units = [unit for lane in lanes for unit in lane]
        for number, unit in enumerate(units):
            unit.number = number
        run = functools.partial(self._run_forked, units)
        forks: list[Forked] = []
        try:
            for _ in lanes:
                forks.append(Forked(run))
        except OSError:  # a limit on processes, or on memory
            for child in forks:
                child.close()
            return None
        writing = _Writing(self.files)
        waiting = [collections.deque(lane) for lane in lanes]

        def serve(lane: int) -> None:
            child = forks[lane]
            sent: collections.deque[_Unit] = collections.deque()
            try:
                while True:
                    while len(sent) < ORDERS_AHEAD and not writing.stop.is_set():
                        unit = _next_unit(waiting, lane)
                        if unit is None:
                            break
                        child.send(unit.number)
                        sent.append(unit)
                    if not sent:
                        break
                    unit = sent.popleft()
                    try:
                        outcome: _Outcome | BaseException = _outcome(child)
                    except BaseException as exc:  # raised again by _end_writing
                        outcome = exc
                        writing.stop.set()
                    writing.done.put((unit, outcome))
            except BaseException as exc:  # a child that takes no orders: its end
                writing.stop.set()
                writing.done.put((sent[0] if sent else _Unit(None, []), exc))
            finally:
                child.close()
                writing.done.put(None)

        writing.threads = [
            threading.Thread(target=serve, args=(lane,), name=f"restore-{lane}", daemon=True)
            for lane in range(len(forks))
        ]
        for thread in writing.threads:
            thread.start()
        return writing

    def _end_writing(self, writing: _Writing) -> None:
        """Collect what the worker processes did as they finish, then finish the files
        that several of them wrote, on the plan of the batch they wrote (the next one
        may be taken already)."""
        taken, self.files = self.files, writing.files
        try:
            ended = 0
            try:
                while ended < len(writing.threads):
                    got = writing.done.get()
                    if got is None:
                        ended += 1
                    else:
                        self._collect(*got)
            finally:
                writing.stop.set()
                for thread in writing.threads:
                    thread.join()
            self._finish_shared()
            self._after_writing()
        finally:
            self.files = taken

    def _run_forked(self, units: list[_Unit], number: int) -> _Outcome:
        """Run a unit in a worker process, on its own copy of the plan."""
        self._forked = True
        unit = units[number]
        self._pin_parents(unit)
        try:
            return self._run_unit(unit)
        finally:
            self._unpin(unit.parents)

    def _finish_shared(self) -> None:
        """After worker processes: finish each file that several units wrote, none of
        which could know it had the last chunk (their counts are in their own copies)."""
        for index, item in enumerate(self.files):
            if item.shared and item.remaining > 0:
                item.remaining = -1
                unit = _Unit(None, [index])
                self._pin_parents(unit)
                out = _Outcome()
                self._finish(index, unit, {}, out)
                self._collect(unit, out)

    def _pin_parents(self, unit: _Unit) -> None:
        indexes = list(unit.lone)
        if unit.run is not None:
            for blob_id, _loc in unit.run[3]:
                indexes.extend(index for index, _offset in self._targets[blob_id])
        self._pin(unit.parents, (self.files[index].rel[:-1] for index in indexes))

    def _pin(self, parents: Parents, folders: Iterable[tuple[bytes, ...]]) -> None:
        """Pin each folder not in `parents` yet, or note there why it cannot be opened."""
        for folder in folders:
            if folder not in parents:
                try:
                    parents[folder] = self._dirs.pin(folder)
                except OSError as exc:
                    parents[folder] = exc

    def _unpin(self, parents: Parents) -> None:
        for folder, fd in parents.items():
            if isinstance(fd, int):
                self._dirs.unpin(folder)

    def _collect(self, unit: _Unit, outcome: _Outcome | BaseException) -> None:
        if isinstance(outcome, BaseException):
            raise outcome
        self._unpin(unit.parents)
        for index, message in outcome.failed:
            item = self.files[index]
            if not item.failed:  # a shared file may have failed in several workers
                item.failed = True
                item.remaining = -1
                self._error(item.rel, message)
        for index, damage in outcome.damage:
            self.files[index].damaged.append(damage)
        self.result.files += outcome.files
        self.result.bytes += outcome.written
        if outcome.written:
            self.reporter.bytes_written(outcome.written)
        for rel, message in outcome.errors:
            self._error(rel, message)

    # The rest of this section runs on the workers.

    def _run_unit(self, unit: _Unit) -> _Outcome:
        out = _Outcome()
        fds: dict[int, int] = {}  # this unit's open files, oldest first
        try:
            for index in unit.lone:
                self.files[index].remaining = -1
                self._finish(index, unit, fds, out)
            if unit.run is not None:
                for blob_id, loc, data, problem in decode_run(self.repo, unit.run, self._budget):
                    for index, offset in self._targets[blob_id]:
                        self._put(index, offset, loc.raw_length, data, problem, unit, fds, out)
                    del data  # before the next blob is opened: one plaintext at a time
        finally:
            for fd in fds.values():
                os.close(fd)
        return out

    def _put(
        self,
        index: int,
        offset: int,
        raw_length: int,
        data: Data,
        problem: str,
        unit: _Unit,
        fds: dict[int, int],
        out: _Outcome,
    ) -> None:
        """Write one chunk into one file; finish the file when it was its last."""
        item = self.files[index]
        if item.remaining < 0:
            return  # failed already
        damage = (offset, offset + raw_length, problem) if problem else None
        if damage is None and not (self.opts.is_sparse and _is_zero(data)):
            try:
                fd = self._open(index, unit, fds)
                self._pwrite(fd, data, offset)
            except OSError as exc:
                self._fail(index, exc, fds, out)
                return
            out.written += len(data)
            item.end = max(item.end, offset + len(data))
        if self._forked:
            if damage is not None:
                out.damage.append((index, damage))
            if item.shared:
                return  # finished by the parent once every unit has run
        if self._count_down(item, damage):
            self._finish(index, unit, fds, out)

    def _pwrite(self, fd: int, data: Data, offset: int) -> None:
        """Write a chunk, uncached where this worker finds cached writes dear."""
        size = len(data)
        if size < MEASURE_FROM:
            _pwrite_all(fd, data, offset)
            return
        costs = self._costs
        cost: float = getattr(costs, "ns_per_kib", 0.0)
        writes: int = getattr(costs, "writes", 0)
        costs.writes = writes + 1
        if self._uncached and cost > DEAR_NS_PER_KIB and writes % PROBE_EVERY:
            self._pwrite_uncached(fd, data, offset)
            return
        start = time.thread_time_ns()
        _pwrite_all(fd, data, offset)
        spent = (time.thread_time_ns() - start) * 1024 / size
        costs.ns_per_kib = spent if not cost else 0.5 * cost + 0.5 * spent

    def _pwrite_uncached(self, fd: int, data: Data, offset: int) -> None:
        view = memoryview(data)
        while view:
            flags = self._uncached
            try:
                n = os.pwritev(fd, [view], offset, flags)
            except OSError as exc:
                # A kernel before 6.14, or a file system without it: EOPNOTSUPP. A
                # real EINVAL comes back from the cached write. Cached from now on.
                if not flags or exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                self._uncached = 0
                continue
            view, offset = view[n:], offset + n

    def _count_down(self, item: _File, damage: tuple[int, int, str] | None) -> bool:
        """Account one chunk of a file; True for the chunk that completes it."""
        if item.shared:
            with self._lock:
                return _tick(item, damage)
        return _tick(item, damage)

    def _fail(self, index: int, exc: OSError, fds: dict[int, int], out: _Outcome) -> None:
        """A file could not be opened or written: say so once; its other chunks are dropped."""
        item = self.files[index]
        with self._lock:
            first = item.remaining >= 0
            item.remaining = -1
            item.failed = True
        if index in fds:
            os.close(fds.pop(index))
        if first:
            self._failed(index, exc.strerror or str(exc), out)

    def _failed(self, index: int, message: str, out: _Outcome) -> None:
        """Report a file that failed, once: a worker process leaves it to the parent."""
        if self._forked:
            out.failed.append((index, message))  # for the parent's copy of the plan
        else:
            out.errors.append((self.files[index].rel, message))

    def _finish(self, index: int, unit: _Unit, fds: dict[int, int], out: _Outcome) -> None:
        """All chunks are written: set the size, then the metadata unless it is damaged."""
        item = self.files[index]
        try:
            fd = self._open(index, unit, fds)
            if item.end < item.node.size:  # a sparse hole or damage at its end
                os.ftruncate(fd, item.node.size)
            if not item.damaged:
                apply_fd_metadata(fd, item.node)
                out.files += 1
        except OSError as exc:
            item.failed = True
            self._failed(index, exc.strerror or str(exc), out)
        finally:
            if index in fds:
                os.close(fds.pop(index))
        for start, end, why in item.damaged:
            out.errors.append((item.rel, f"damaged bytes {start}-{end}: {why}"))

    def _open(self, index: int, unit: _Unit, fds: dict[int, int]) -> int:
        fd = fds.get(index)
        if fd is not None:
            return fd
        item = self.files[index]
        parent = _parent_fd(unit.parents, item.rel)
        if item.created:
            flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(item.rel[-1], flags, dir_fd=parent)
        else:
            fd = self._create(item, parent)
            item.created = True
        fds[index] = fd
        if len(fds) > OPEN_FILES:
            os.close(fds.pop(next(iter(fds))))
        return fd

    @staticmethod
    def _create(item: _File, parent: int) -> int:
        """Open a file for its first write as its action says; a patched one is cut to
        its size at once, a new one grows with its writes."""
        name = item.rel[-1]
        if item.action == PATCH:
            fd = os.open(name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            try:
                os.ftruncate(fd, item.node.size)
            except OSError:
                os.close(fd)
                raise
            item.end = item.node.size
            return fd
        if item.action == REPLACE:
            # Replace whatever is there: writing into an existing inode could reach a
            # file outside the target through a hard link, or follow a symlink.
            with contextlib.suppress(FileNotFoundError):
                remove_entry(parent, name)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        return os.open(name, flags, 0o600, dir_fd=parent)

    # -- the rest ----------------------------------------------------------------------

    def _make_links_and_others(self) -> None:
        for first, rel in self.links:
            try:
                with contextlib.suppress(FileNotFoundError):
                    remove_entry(self._dirs.fd(rel[:-1]), rel[-1])
                os.link(
                    first[-1],
                    rel[-1],
                    src_dir_fd=self._dirs.fd(first[:-1]),
                    dst_dir_fd=self._dirs.fd(rel[:-1]),
                    follow_symlinks=False,
                )
            except OSError as exc:
                self._error(rel, f"cannot create hard link: {exc.strerror}")
        # Symlinks after the other special files, each kind spread over the workers:
        # making one allocates an inode, as creating a file does.
        kinds: list[list[tuple[tuple[bytes, ...], Node, str]]] = [[], []]
        for rel, node in self.others:
            action = self._decide(rel, node)
            if action == SKIP:
                self.result.skipped += 1
            else:
                kinds[node.type == "symlink"].append((rel, node, action))
        for todo in kinds:
            outcomes = self._spread(todo, lambda entry: entry[0], self._make_special)
            for (rel, _node, _action), problem in zip(todo, outcomes, strict=True):
                if problem:
                    self._error(rel, problem)
                else:
                    self.result.files += 1

    @staticmethod
    def _make_special(parents: Parents, entry: tuple[tuple[bytes, ...], Node, str]) -> str | None:
        """None when made, else what went wrong (on a worker)."""
        rel, node, action = entry
        try:
            make_special(_parent_fd(parents, rel), rel[-1], node, is_new=action == CREATE)
        except OSError as exc:
            return exc.strerror or str(exc)
        return None

    def _delete_extras(self) -> None:
        """--delete: remove what restored folders hold that the snapshot lacks."""
        if not self.opts.is_delete:
            return
        for rel in [(), *(r for r, _n in self.dirs)]:
            names = self._names.get(rel)
            parent = self._dirs.existing(rel)
            if names is None or parent is None:
                continue
            for entry in list(os.scandir(parent)):
                name = os.fsencode(entry.name)
                if name in names:
                    continue
                self.reporter.planned(_show((*rel, name)), "delete")
                if self.opts.is_dry_run:
                    continue
                try:
                    remove_entry(parent, name)
                    self.result.deleted += 1
                except OSError as exc:
                    self._error((*rel, name), exc.strerror or str(exc))

    def _dir_metadata(self) -> None:
        for rel, node in reversed(self.dirs):
            if rel in self._bad_dirs:
                continue  # reported already
            try:
                apply_fd_metadata(self._dirs.fd(rel), node)
            except OSError as exc:
                self._error(rel, exc.strerror or str(exc))

    def _verify(self) -> None:
        for item in self.files:
            if item.damaged or item.failed or not item.node.size or item.action == SKIP:
                continue
            problem = verify_file(self.repo, self._dirs.fd(item.rel[:-1]), item.rel[-1], item.blobs)
            if problem:
                self._error(item.rel, f"verification failed: {problem}")


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Hold off the cycle collector: a restore makes no cyclic garbage, and the
    collector's passes over a batch's plan, its files' entries and chunk lists, were
    about 3 % of the CPU time of a restore of 48,000 files."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _open_target(target: bytes) -> int | None:
    try:
        return os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return None


def _in_parallel(parts: list[list[_T]], work: Callable[[_T], _R]) -> list[_R]:
    """work() on every item, a part per thread (the first on this one), in order."""
    results: list[list[_R]] = [[] for _ in parts]
    failures: list[BaseException] = []

    def run(number: int) -> None:
        try:
            results[number] = [work(item) for item in parts[number]]
        except BaseException as exc:  # raised again on this thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(1, len(parts))]
    for thread in threads:
        thread.start()
    run(0)
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return [result for part in results for result in part]


def _parent_fd(parents: Parents, rel: tuple[bytes, ...]) -> int:
    """The pinned descriptor of the folder rel is in; OSError, as pinning it failed."""
    parent = parents[rel[:-1]]
    if isinstance(parent, OSError):
        raise OSError(parent.errno, parent.strerror)
    return parent


def _next_unit(waiting: list[collections.deque[_Unit]], lane: int) -> _Unit | None:
    """A lane's next unit, or once it is done the far end of the longest lane left (its
    own thread takes from the near end): None when all are done. The serving threads
    take from the lanes without a lock, so a lane may empty under a thread's hand."""
    while True:
        with contextlib.suppress(IndexError):
            return waiting[lane].popleft()
        longest = max(waiting, key=len)
        if not longest:
            return None
        with contextlib.suppress(IndexError):
            return longest.pop()


def _outcome(child: Forked) -> _Outcome:
    """The outcome of the oldest unit a worker process was given."""
    got = child.receive()
    if not isinstance(got, _Outcome):
        raise TypeError(f"a worker process answered {type(got).__name__}")
    return got


def _tick(item: _File, damage: tuple[int, int, str] | None) -> bool:
    if item.remaining < 0:
        return False
    if damage is not None:
        item.damaged.append(damage)
    item.remaining -= 1
    if item.remaining:
        return False
    item.remaining = -1
    return True


def _range(pack: bytes, blobs: list[tuple[BlobId, BlobLocation]]) -> Run:
    """The pack range holding these blobs (in pack order)."""
    return pack, blobs[0][1].offset, max(loc.offset + loc.length for _b, loc in blobs), blobs


def _is_zero(data: Data) -> bool:
    """Whether a chunk is all zero bytes (a hole with --sparse)."""
    size = len(data)
    if size and (data[0] or data[size // 2] or data[-1]):
        return False  # nearly every chunk with data says so at once
    # An incompressible (raw, so viewed) chunk is never all zeros: the copy is moot.
    whole = data if isinstance(data, bytes) else bytes(data)
    return whole.count(0) == size


def _pwrite_all(fd: int, data: Data, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
