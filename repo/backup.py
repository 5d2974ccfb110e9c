"""Backup: walk the sources, reuse unchanged files from the parent, store new chunks."""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import closing
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from chunker import chunk_bytes, iter_chunks
from repo import smallfiles
from repo.errors import RepoError, SourceError
from repo.fsmeta import group_name, node_from_stat, read_xattrs, user_name
from repo.pattern import PatternSet, split_path
from repo.readahead import DirectFeed, Feed, Readers, ReadFeed, read_head
from repo.repository import Repository
from repo.snapshot import Snapshot
from repo.tree import (
    MAX_INLINE_CONTENT,
    Node,
    encode_content_list,
    encode_packed,
    encode_tree,
    iter_tree,
    pack_node,
)
from repo.types import BlobId, BlobType

if TYPE_CHECKING:  # imported on first use: only a backup of large files starts the worker
    from repo.chunkworker import ChunkWorker

# docs/design.md, "Backup": an entry whose mtime or ctime is this close to the parent
# snapshot's start may have changed again within the same timestamp tick, so it is
# reread. Linux file systems stamp with the kernel's coarse clock (a few ms); whole
# seconds on both stamps suggest a file system with 1 s or 2 s granularity.
RACY_NS = 20_000_000
RACY_COARSE_NS = 2_000_000_000
# The chunking window: twice the largest chunk. The pages a large file touched in a
# window of 16 MiB stayed resident beside the small-file worker's, for no speed.
READ_WINDOW = 8 * 1024 * 1024
# Files of at least this size are chunked at the boundaries a second process finds
# (repo/chunkworker.py), once it has started (some 70 ms, on the other core); it is
# waited for at a file of WAIT_FOR_CUTTER_FROM bytes or more.
CUT_APART_FROM = 16 * 1024 * 1024
WAIT_FOR_CUTTER_FROM = 128 * 1024 * 1024
# A directory's entries are statted, stored and packed into tree rows this many at a
# time: an entry waiting as Python objects holds about a kilobyte, its packed row some
# 150 bytes, so a folder of 100,000 files costs some 15 MiB, not 100.
DIR_BATCH = 1024
# Small files to read, met by a backup, that start the small-file worker: its start-up
# costs some 100 ms of the other core, about the time of 1,000 small files.
WORKER_FROM = 256
# While a folder's entries are statted, the small files among them that must be read
# go to the worker this many at a time.
SEND_EVERY = 32
# A folder's files read by the worker are taken after its subfolders are backed up if
# they hold at most this many bytes: their results wait in memory meanwhile, for each
# folder on the way down.
TAKE_LATER_BYTES = 256 * 1024
# The Cache Directory Tagging Specification (https://bford.info/cachedir/): a valid
# CACHEDIR.TAG begins with exactly these 43 bytes.
CACHEDIR_TAG = b"CACHEDIR.TAG"
CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"

# The sources nested by path component; None marks a source itself.
Layout = dict[bytes, "Layout | None"]


class Reporter(Protocol):
    """What a backup tells its user while it runs."""

    def file_done(self, path: bytes, size: int) -> None: ...
    def bytes_read(self, n: int) -> None: ...
    def error(self, path: bytes, message: str) -> None: ...
    def warning(self, path: bytes, message: str) -> None: ...


class QuietReporter:
    def file_done(self, path: bytes, size: int) -> None:
        return None

    def bytes_read(self, n: int) -> None:
        return None

    def error(self, path: bytes, message: str) -> None:
        return None

    def warning(self, path: bytes, message: str) -> None:
        return None


@dataclass(slots=True)
class BackupStats:
    """restic's summary counters (docs/usage.md, backup --json)."""

    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    dirs_new: int = 0
    dirs_changed: int = 0
    dirs_unmodified: int = 0
    data_blobs: int = 0
    tree_blobs: int = 0
    data_added: int = 0
    data_added_packed: int = 0
    total_files_processed: int = 0
    total_bytes_processed: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ExcludeTag:
    """--exclude-if-present NAME[:HEADER]: a directory holding NAME (starting with
    HEADER, when given) keeps only that file."""

    name: bytes
    header: bytes = b""

    @classmethod
    def parse(cls, spec: str) -> ExcludeTag:
        """Parse restic's filename[:header]; ValueError without a file name."""
        name, _, header = spec.partition(":")
        if not name or "/" in name:
            raise ValueError(f"--exclude-if-present {spec!r}: expected filename[:header]")
        return cls(os.fsencode(name), os.fsencode(header))


CACHEDIR = ExcludeTag(CACHEDIR_TAG, CACHEDIR_SIGNATURE)


@dataclass(slots=True)
class BackupOptions:
    paths: list[bytes]
    hostname: str
    username: str
    tags: list[str] = field(default_factory=list)
    time_ns: int | None = None
    parent: Snapshot | None = None
    is_force: bool = False
    excludes: list[str] = field(default_factory=list)
    iexcludes: list[str] = field(default_factory=list)
    exclude_tags: list[ExcludeTag] = field(default_factory=list)
    is_excluding_caches: bool = False
    # Regular files larger than this many bytes are left out; None keeps all.
    exclude_larger_than: int | None = None
    is_one_file_system: bool = False
    read_concurrency: int = 2
    is_dry_run: bool = False
    with_atime: bool = False
    program_version: str = ""


class _EndedEarly(Exception):
    """A file ended before the chunk lengths the worker gave for it."""


@dataclass(slots=True)
class _Entry:
    """A directory entry that passed the excludes, waiting for its content or subtree."""

    path: bytes
    node: Node  # of a file: its size and mtime as statted, until it is read
    old: Node | None
    # The device its directory's children must be on (--one-file-system).
    dev: int
    # A directory on another file system: stored, but not entered.
    is_other_fs: bool = False
    # A regular file's extended attributes are read with its content, or taken from
    # the parent with it: a file whose ctime is unchanged has the same attributes.
    is_xattrs_due: bool = False
    # Handed to the small-file worker, whose result is taken by the path.
    is_sent: bool = False


class _OldChildren:
    """A directory's entries in the parent snapshot, looked up by names in sorted
    order as they come from an iterator in that order: one at a time in memory."""

    def __init__(self, nodes: Iterator[Node]) -> None:
        self._nodes = nodes
        self._next = next(nodes, None)

    def get(self, name: bytes) -> Node | None:
        while self._next is not None and self._next.name < name:
            self._next = next(self._nodes, None)
        if self._next is None or self._next.name != name:
            return None
        found, self._next = self._next, next(self._nodes, None)
        return found


@dataclass(slots=True)
class _Listing:
    """A directory's sorted names, the parent's entries for them, and its first batch
    of entries statted: the start of backing it up, which may run ahead of its turn."""

    names: list[bytes]
    old_children: _OldChildren
    prefix: bytes  # the directory's path and a slash
    dir_fd: int | None  # the directory, open for lookups relative to it
    first: list[_Entry]
    error: OSError | None = None  # listing it failed: raised in its turn

    @property
    def is_leaf(self) -> bool:
        """Whether it holds no directories (in its only batch)."""
        return len(self.names) <= DIR_BATCH and all(e.node.type != "dir" for e in self.first)

    def close(self) -> None:
        if self.dir_fd is not None:
            os.close(self.dir_fd)
            self.dir_fd = None


def _racy(node: Node, start_ns: int) -> bool:
    is_coarse = node.mtime_ns % 1_000_000_000 == 0 and node.ctime_ns % 1_000_000_000 == 0
    window = RACY_COARSE_NS if is_coarse else RACY_NS
    return max(node.mtime_ns, node.ctime_ns) >= start_ns - window


class Archiver:
    """Runs one backup into an open repository."""

    def __init__(self, repo: Repository, opts: BackupOptions, reporter: Reporter) -> None:
        if opts.read_concurrency < 1:
            raise ValueError("read concurrency must be at least 1")
        self.repo = repo
        self.opts = opts
        self.reporter = reporter
        self.stats = BackupStats()
        # Two maximal chunks at least (chunker), else the smallest window that keeps memory low.
        self._window_size = max(READ_WINDOW, 2 * repo.config.chunker.max_size)
        self._window_buffer: bytearray | None = None
        self.excludes = PatternSet(opts.excludes)
        self.iexcludes = PatternSet(opts.iexcludes, ignores_case=True)
        self.exclude_tags = list(opts.exclude_tags)
        if opts.is_excluding_caches:
            self.exclude_tags.append(CACHEDIR)
        # Each source keeps the file system it is on (--one-file-system).
        self.sources = {os.path.normpath(p) for p in opts.paths}
        self.start_ns = time.time_ns()
        self._parent_start = opts.parent.start_ns if opts.parent else 0
        self._readers: Readers | None = None
        self._worker: smallfiles.SmallFileWorker | None = None
        self._worker_failed = False
        self._small_seen = 0
        self._small_limit = min(smallfiles.MAX_SIZE, repo.config.chunker.min_size)
        self._cutter: ChunkWorker | None = None
        self._cutter_tried = False

    # -- saving ----------------------------------------------------------------------

    def _save(self, btype: BlobType, data: bytes) -> BlobId:
        blob_id, is_new = self.repo.save_blob(btype, data)
        if is_new:
            if btype is BlobType.DATA:
                self.stats.data_blobs += 1
            else:
                self.stats.tree_blobs += 1
            self.stats.data_added += len(data)
        return blob_id

    def _window(self) -> bytearray:
        """The one buffer every file is chunked in, made on first use: a window per
        file would be allocated, filled and freed a thousand times a gigabyte."""
        if self._window_buffer is None:
            self._window_buffer = bytearray(self._window_size)
        return self._window_buffer

    def _save_tree(self, nodes: list[Node]) -> BlobId:
        return self._save(BlobType.TREE, encode_tree(nodes))

    # -- files -----------------------------------------------------------------------

    def _store_file(self, entry: _Entry, feed: Feed | ReadFeed | DirectFeed) -> None:
        if entry.is_xattrs_due:
            entry.node.xattrs = read_xattrs(entry.path)
        st_size = entry.node.size
        size = 0

        def read(n: int) -> bytes:
            data = feed.read(n)
            self.reporter.bytes_read(len(data))
            return data

        params = self.repo.config.chunker
        chunks: Iterable[bytes]
        if isinstance(feed, ReadFeed):  # read whole already: no window to copy it into
            chunks = chunk_bytes(read(st_size + 1), params)
        elif isinstance(feed, DirectFeed) and (cutter := self._chunk_worker(st_size)) is not None:
            chunks = self._cut_apart(feed, cutter)
        else:
            readinto = self._counted_readinto(feed) if isinstance(feed, DirectFeed) else None
            chunks = iter_chunks(read, params, self._window(), readinto)
        content = []
        try:
            for chunk in chunks:
                content.append(self._save(BlobType.DATA, chunk))
                size += len(chunk)
        finally:
            if isinstance(chunks, Generator):
                # Now, not when the error's traceback lets go of it: the chunk worker
                # must drop this file before it is given the next.
                chunks.close()
        after = feed.after
        ended = None if after is None else (after.st_size, after.st_mtime_ns)
        self._file_stored(entry, content, size, ended)

    def _store_worked(self, entry: _Entry, result: list[Any]) -> None:
        """Store a file the small-file worker read and sealed (smallfiles.STORED), or
        raise the error reading it raised there (FAILED)."""
        if result[0] == smallfiles.FAILED:
            raise OSError(result[1], result[2])
        _kind, size, mtime_ns, blob_id, sealed, xattrs = result
        entry.node.xattrs = [(bytes(k), bytes(v)) for k, v in xattrs]
        self.reporter.bytes_read(size)
        content = []
        if blob_id is not None:
            if self.repo.save_sealed_blob(BlobType.DATA, blob_id, sealed, size):
                self.stats.data_blobs += 1
                self.stats.data_added += size
            content.append(blob_id)
        self._file_stored(entry, content, size, (size, mtime_ns))

    def _file_stored(
        self, entry: _Entry, content: list[BlobId], size: int, after: tuple[int, int] | None
    ) -> None:
        """Put the content read into the file's node, and count it.

        after is the file's size and mtime when its reading ended, None if unknown.
        """
        node = entry.node
        if after is None or (*after, size) != (node.size, node.mtime_ns, node.size):
            self.reporter.warning(
                entry.path, "file changed while it was read; stored what was read"
            )
        node.size = size
        self._set_content(node, content)
        old = entry.old
        if old is None:
            self.stats.files_new += 1
        elif (old.content, old.content_lists) == (node.content, node.content_lists):
            self.stats.files_unmodified += 1
        else:
            self.stats.files_changed += 1
        self.reporter.file_done(entry.path, node.size)

    def _cut_apart(self, feed: DirectFeed, cutter: ChunkWorker) -> Generator[bytes, None, None]:
        """The chunks of a large file, at the boundaries the chunk worker finds; from
        where it fails, or where the file ends before its lengths do, chunked here."""
        from repo.chunkworker import CutsFailed, WorkerFailed  # noqa: PLC0415 - see TYPE_CHECKING

        try:
            with closing(cutter.cut_lengths(feed.fileno())) as windows:
                for lengths in windows:
                    for length in lengths:
                        chunk = feed.read_exactly(length)
                        self.reporter.bytes_read(len(chunk))
                        if chunk:
                            yield chunk
                        if len(chunk) < length:
                            raise _EndedEarly
        except (_EndedEarly, CutsFailed, WorkerFailed):
            # A read error the worker met recurs below, and is reported as ever.
            pass
        # At the end of the file already, unless the worker stopped short of it.
        params = self.repo.config.chunker
        yield from iter_chunks(feed.read, params, self._window(), self._counted_readinto(feed))

    def _chunk_worker(self, size: int) -> ChunkWorker | None:
        """The chunk worker for a file of `size` bytes, if the file is large enough and
        the worker is ready; waited for only for a file large enough to pay for it."""
        if size < CUT_APART_FROM:
            return None
        cutter = self._start_chunk_worker()
        if cutter is None or not cutter.is_ready(is_waiting=size >= WAIT_FOR_CUTTER_FROM):
            return None  # not ready, or broken
        return cutter

    def _start_chunk_worker(self) -> ChunkWorker | None:
        """The chunk worker, started now unless it was; None if it cannot be."""
        if not self._cutter_tried:
            self._cutter_tried = True  # one that did not start is not tried again
            from repo.chunkworker import ChunkWorker, is_supported  # noqa: PLC0415

            if is_supported():
                try:
                    self._cutter = ChunkWorker(self.repo.config.chunker, self._window_size)
                except OSError as exc:
                    self.reporter.warning(b"", f"cannot start the chunk worker: {exc}")
        return self._cutter

    def _counted_readinto(self, feed: DirectFeed) -> Callable[[memoryview], int]:
        def readinto(view: memoryview) -> int:
            n = feed.readinto(view)
            self.reporter.bytes_read(n)
            return n

        return readinto

    def _set_content(self, node: Node, content: list[BlobId]) -> None:
        if len(content) <= MAX_INLINE_CONTENT:
            node.content = content
            return
        node.content = None
        node.content_lists = [
            self._save(BlobType.TREE, encode_content_list(content[i : i + MAX_INLINE_CONTENT]))
            for i in range(0, len(content), MAX_INLINE_CONTENT)
        ]

    def _reuse_unchanged(self, entry: _Entry) -> bool:
        """Count the file, and take its content from the parent if it is unchanged there."""
        node, old = entry.node, entry.old
        self.stats.total_files_processed += 1
        self.stats.total_bytes_processed += node.size
        if old is None or self._is_due(node, old):
            return False
        node.content, node.content_lists = old.content, old.content_lists
        node.xattrs = old.xattrs
        self.stats.files_unmodified += 1
        self.reporter.bytes_read(node.size)
        self.reporter.file_done(entry.path, node.size)
        return True

    def _is_due(self, node: Node, old: Node | None) -> bool:
        """Whether a file must be read: it is new or changed, or --force is given."""
        return old is None or self.opts.is_force or not self._is_unchanged(node, old)

    def _is_unchanged(self, node: Node, old: Node) -> bool:
        same = (old.type, old.size, old.mtime_ns, old.ctime_ns, old.inode) == (
            node.type,
            node.size,
            node.mtime_ns,
            node.ctime_ns,
            node.inode,
        )
        return same and not _racy(old, self._parent_start)

    def _read_files(self, entries: list[_Entry]) -> set[bytes]:
        """Read and store the files: those sent ahead to the small-file worker through
        it, the others ahead in the reader threads. Returns those that failed."""
        if self._readers is None:
            raise RuntimeError("files are read only inside Archiver.run()")
        failed = set()
        rest = [e for e in entries if not e.is_sent]
        paths, sizes = [e.path for e in rest], [e.node.size for e in rest]
        if max(sizes, default=0) >= CUT_APART_FROM:
            self._start_chunk_worker()  # it starts while the files before are read
        worker = self._worker
        with closing(self._readers.feeds(paths, sizes)) as feeds:
            for entry in entries:
                try:
                    result = worker.take(entry.path) if entry.is_sent and worker else None
                    if result is None:
                        self._store_file(entry, next(feeds))
                    elif result[0] == smallfiles.ELSEWHERE:
                        self._store_alone(entry)
                    else:
                        self._store_worked(entry, result)
                except OSError as exc:
                    self._fail(entry.path, exc)
                    failed.add(entry.path)
        return failed

    def _send_ahead(self, entries: list[_Entry], *, is_due: bool = False) -> None:
        """Hand the small files among the entries that must be read (all are, if
        `is_due`) to the small-file worker, which reads them while the archiver goes on
        statting the entries after them."""
        if not is_due and self._worker is None:
            return  # not started yet: only files known to be due start it (_complete)
        limit = self._small_limit
        small = [
            e
            for e in entries
            if e.node.type == "file"
            and e.node.size <= limit
            and (is_due or self._is_due(e.node, e.old))
        ]
        # Counted once, when they are due: the files of a folder are offered twice.
        worker = self._small_file_worker(len(small) if is_due else 0)
        if worker is None or not small:
            return
        for entry in small:
            entry.is_sent = True
        worker.submit([e.path for e in small], [e.node.size for e in small])

    def _store_alone(self, entry: _Entry) -> None:
        """Read one file on its own, through the reader threads."""
        if self._readers is None:
            raise RuntimeError("files are read only inside Archiver.run()")
        with closing(self._readers.feeds([entry.path], [entry.node.size])) as feeds:
            self._store_file(entry, next(feeds))

    def _small_file_worker(self, small: int) -> smallfiles.SmallFileWorker | None:
        """The small-file worker, once started and ready; started when the backup has
        met enough small files to read that its start-up pays."""
        worker = self._worker
        if worker is None:
            if self._worker_failed or self.opts.is_dry_run:
                return None
            self._small_seen += small
            if self._small_seen < WORKER_FROM:
                return None
            try:
                worker = self._worker = smallfiles.SmallFileWorker(
                    self.repo.master.encryption,
                    self.repo.master.id_key,
                    self.repo.config.compression_level,
                )
            except OSError as exc:
                self._worker_failed = True
                self.reporter.warning(b"", f"cannot start the small-file worker: {exc}")
                return None
        if worker.is_broken:
            return None
        return worker if worker.is_ready() else None

    # -- directories -----------------------------------------------------------------

    def _old_nodes(self, old: Node | None) -> Iterator[Node]:
        """The parent's entries of a directory in name order, decoded as they are read."""
        if old is None or old.type != "dir" or old.subtree is None:
            return
        self.repo.index  # noqa: B018 - a damaged index is fatal, not a parent problem
        try:
            data = self.repo.load_blob(BlobType.TREE, old.subtree)
            yield from iter_tree(data, name=f"tree {old.subtree.hex()[:16]}")
        except RepoError as exc:
            # A damaged parent only costs rereading the files below it.
            self.reporter.warning(old.name or b"/", f"cannot use the parent's tree: {exc}")

    def _is_excluded(self, path: bytes) -> bool:
        if not (self.excludes or self.iexcludes):
            return False
        parts = split_path(path)
        return self.excludes.matches(parts) or self.iexcludes.matches(parts)

    def _stat_entry(
        self, path: bytes, name: bytes, old: Node | None, dev: int, dir_fd: int | None = None
    ) -> _Entry | None:
        """Stat one entry; None when it is left out (excluded or unreadable).

        dev is the device of the source the entry is under; a source sets its own.
        dir_fd, if given, is its folder, open: a lookup from there walks no path.
        """
        if self._is_excluded(path):
            return None
        try:
            if dir_fd is None:
                st = os.lstat(path)
            else:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if path in self.sources:
                dev = st.st_dev
            is_other_fs = self.opts.is_one_file_system and st.st_dev != dev
            is_dir = stat.S_ISDIR(st.st_mode)
            # restic keeps a mount point as an empty directory and drops anything
            # else of another file system (a bind-mounted file).
            if (is_other_fs and not is_dir) or self._is_too_large(st):
                return None
            is_file = stat.S_ISREG(st.st_mode)
            node = node_from_stat(
                name, path, st, with_atime=self.opts.with_atime, with_xattrs=not is_file
            )
        except OSError as exc:
            self._fail(path, exc)
            return None
        return _Entry(path, node, old, dev, is_other_fs, is_xattrs_due=is_file)

    def _is_too_large(self, st: os.stat_result) -> bool:
        limit = self.opts.exclude_larger_than
        return limit is not None and stat.S_ISREG(st.st_mode) and st.st_size > limit

    def _complete(self, entries: list[_Entry]) -> list[Node]:
        """Store the files, then the directories below; returns the nodes that could be read.

        Files go first so the reader threads can read a directory's files ahead. Those
        the small-file worker reads are taken after the directories below when they
        are few: the worker reads them meanwhile, and does not wait for the archiver's
        next batch at every small folder.
        """
        to_read = [e for e in entries if e.node.type == "file" and not self._reuse_unchanged(e)]
        self._send_ahead([e for e in to_read if not e.is_sent], is_due=True)
        sent = [e for e in to_read if e.is_sent]
        is_later = bool(sent) and sum(e.node.size for e in sent) <= TAKE_LATER_BYTES
        failed = self._read_files([e for e in to_read if not (is_later and e.is_sent)])
        failed |= self._subdirs(entries)
        if is_later:
            failed |= self._read_files(sent)
        return [e.node for e in entries if e.path not in failed]

    def _subdirs(self, entries: list[_Entry]) -> set[bytes]:
        """Back up the directories among the entries; returns those that failed.

        A folder that holds no folders is followed by the next one's listing and first
        statting (its small files go to the worker) before its own files are taken:
        the worker reads this folder's files meanwhile, not after.
        """
        failed = set()
        dirs = [e for e in entries if e.node.type == "dir"]
        ahead: _Listing | None = None
        try:
            for i, entry in enumerate(dirs):
                listing, ahead = ahead or self._list(entry), None
                if listing.is_leaf and i + 1 < len(dirs):
                    ahead = self._list(dirs[i + 1])
                try:
                    entry.node.subtree = self._dir(entry.path, entry.old, entry.dev, listing)
                except OSError as exc:
                    self._fail(entry.path, exc)
                    failed.add(entry.path)
        finally:
            if ahead is not None:
                ahead.close()
        return failed

    def _fail(self, path: bytes, exc: OSError) -> None:
        self.stats.errors += 1
        self.reporter.error(path, exc.strerror or str(exc))

    def _list(self, entry: _Entry) -> _Listing:
        """A directory entry's listing, with its first batch statted; an error listing
        it is kept, and raised when the directory's turn comes."""
        try:
            return self._listing(entry.path, entry.old, entry.dev, is_listed=not entry.is_other_fs)
        except OSError as exc:
            return _Listing([], _OldChildren(iter(())), b"", None, [], exc)

    def _listing(self, path: bytes, old: Node | None, dev: int, *, is_listed: bool) -> _Listing:
        names = self._untagged(path, sorted(e.name for e in _scandir(path))) if is_listed else []
        prefix = path if path.endswith(b"/") else path + b"/"
        dir_fd = _open_dir(path) if names else None
        listing = _Listing(names, _OldChildren(self._old_nodes(old)), prefix, dir_fd, [])
        try:
            listing.first = self._stat_batch(listing, 0, dev)
        except BaseException:
            listing.close()
            raise
        return listing

    def _stat_batch(self, listing: _Listing, start: int, dev: int) -> list[_Entry]:
        """Stat the listing's entries from `start`, DIR_BATCH of them, handing their small
        files to read to the worker as they come."""
        entries = []
        sent = 0
        for name in listing.names[start : start + DIR_BATCH]:
            old_child = listing.old_children.get(name)
            entry = self._stat_entry(listing.prefix + name, name, old_child, dev, listing.dir_fd)
            if entry is not None:
                entries.append(entry)
                if len(entries) - sent >= SEND_EVERY:
                    self._send_ahead(entries[sent:])
                    sent = len(entries)
        # The rest now, not when the files are stored: a folder listed ahead of its turn
        # would have its last files queued behind the next folder's.
        self._send_ahead(entries[sent:])
        return entries

    def _dir(
        self, path: bytes, old: Node | None, dev: int, listing: _Listing | None = None
    ) -> BlobId:
        """Back up a directory (listed already, or now); returns its tree's id."""
        if listing is None:
            listing = self._listing(path, old, dev, is_listed=True)
        rows: list[bytes] = []
        try:
            if listing.error is not None:
                raise listing.error
            for start in range(0, len(listing.names), DIR_BATCH):
                entries = listing.first if start == 0 else self._stat_batch(listing, start, dev)
                listing.first = []
                rows += map(pack_node, self._complete(entries))
        finally:
            listing.close()
        tree_id = self._save(BlobType.TREE, encode_packed(rows))
        if old is None or old.type != "dir":
            self.stats.dirs_new += 1
        elif old.subtree == tree_id:
            self.stats.dirs_unmodified += 1
        else:
            self.stats.dirs_changed += 1
        return tree_id

    def _untagged(self, path: bytes, names: list[bytes]) -> list[bytes]:
        """The names to back up: in a directory tagged for exclusion, only the tag file.

        As in restic, each tag excludes every other entry, so a directory with two
        different valid tags keeps neither.
        """
        tags = {t.name for t in self.exclude_tags if t.name in names and self._is_tag(path, t)}
        return [n for n in names if tags == {n}] if tags else names

    def _is_tag(self, path: bytes, tag: ExcludeTag) -> bool:
        if not tag.header:
            return True
        tag_path = os.path.join(path, tag.name)
        try:
            head = read_head(tag_path, len(tag.header))
        except OSError as exc:
            self.reporter.warning(tag_path, f"cannot read exclusion tag file: {exc.strerror}")
            return False
        if head != tag.header:
            self.reporter.warning(tag_path, "invalid signature in exclusion tag file; not excluded")
            return False
        return True

    # -- roots -----------------------------------------------------------------------

    def _virtual(self, prefix: bytes, tree: Layout, old_root: BlobId | None) -> BlobId:
        """A directory on the way to the sources: only the listed children are kept."""
        old_children = _OldChildren(
            self._old_nodes(Node(b"", "dir", subtree=old_root) if old_root is not None else None)
        )
        sources, nodes = [], []
        for name, sub in sorted(tree.items()):
            path = os.path.join(prefix, name)
            old = old_children.get(name)
            if sub is None:
                entry = self._stat_entry(path, name, old, 0)
                sources += [entry] if entry is not None else []
                continue
            node = self._intermediate(path, name, sub, old)
            if node is not None:
                nodes.append(node)
        nodes += self._complete(sources)
        return self._save_tree(sorted(nodes, key=lambda n: n.name))

    def _intermediate(self, path: bytes, name: bytes, sub: Layout, old: Node | None) -> Node | None:
        try:
            # A folder on the way to a source may be reached through a symlink;
            # the snapshot records the folder it leads to.
            st = os.stat(path)
            node = node_from_stat(name, path, st, with_atime=self.opts.with_atime)
        except OSError as exc:
            self._fail(path, exc)
            return None
        if node.type != "dir":
            self._fail(path, NotADirectoryError(errno.ENOTDIR, "not a directory"))
            return None
        node.subtree = self._virtual(path, sub, old.subtree if old is not None else None)
        return node

    def run(self) -> tuple[Snapshot, bool]:
        """Back up the sources; returns the snapshot and whether it was written."""
        paths = self._existing_paths()
        old_root = self.opts.parent.tree if self.opts.parent else None
        self._readers = Readers(self.opts.read_concurrency)
        try:
            if b"/" in paths:
                old = Node(b"", "dir", subtree=old_root) if old_root else None
                root = self._dir(b"/", old, os.lstat(b"/").st_dev)
            else:
                root = self._virtual(b"/", _layout(paths), old_root)
        finally:
            self._readers.close()
            self._readers = None
            if self._worker is not None:
                self._worker.close()
                self._worker = None
            if self._cutter is not None:
                self._cutter.close()
                self._cutter = None
        return self._finish(root, paths)

    def run_stdin(self, name: bytes, read: Callable[[int], bytes]) -> tuple[Snapshot, bool]:
        """Back up one stream as the file /NAME."""
        now = time.time_ns()
        node = Node(
            name=name,
            type="file",
            mode=0o644,
            uid=os.getuid(),
            gid=os.getgid(),
            user=user_name(os.getuid()),
            group=group_name(os.getgid()),
            mtime_ns=now,
            ctime_ns=now,
        )
        content = []
        for chunk in iter_chunks(read, self.repo.config.chunker, self._window()):
            content.append(self._save(BlobType.DATA, chunk))
            node.size += len(chunk)
            self.reporter.bytes_read(len(chunk))
        self._set_content(node, content)
        self.stats.files_new += 1
        self.stats.total_files_processed += 1
        self.stats.total_bytes_processed += node.size
        root = self._save_tree([node])
        return self._finish(root, [b"/" + name])

    def _existing_paths(self) -> list[bytes]:
        paths = []
        for path in self.opts.paths:
            try:
                os.lstat(path)
            except OSError as exc:
                self._fail(path, exc)
                continue
            paths.append(path)
        if not paths:
            raise SourceError("none of the given paths can be read; nothing to back up")
        return paths

    def _finish(self, root: BlobId, paths: list[bytes]) -> tuple[Snapshot, bool]:
        if not self.opts.is_dry_run:
            self.repo.flush()
        self.stats.data_added_packed = self.repo.bytes_stored
        time_ns = self.opts.time_ns if self.opts.time_ns is not None else self.start_ns
        snap = Snapshot(
            time_ns=time_ns,
            tz_offset=_local_offset(time_ns),
            tree=root,
            paths=sorted(paths),
            hostname=self.opts.hostname,
            username=self.opts.username,
            uid=os.getuid(),
            gid=os.getgid(),
            tags=list(self.opts.tags),
            parent=self.opts.parent.id if self.opts.parent else None,
            program_version=self.opts.program_version,
            start_ns=self.start_ns,
            summary=self.stats.as_dict(),
        )
        if self.opts.is_dry_run:
            return snap, False
        self.repo.save_snapshot(snap)
        return snap, True


def parse_files_from(data: bytes) -> list[bytes]:
    """The entries of a --files-from list: one a line, with surrounding whitespace
    removed; empty lines and lines starting with # are skipped (restic's rules)."""
    lines = (line.strip() for line in data.split(b"\n"))
    return [line for line in lines if line and not line.startswith(b"#")]


def parse_files_from_raw(data: bytes) -> list[bytes]:
    """The names of a --files-from-raw list: each ends with a NUL byte and is taken
    as it is (no comments, no trimming). ValueError on an empty or unterminated name."""
    if not data:
        return []
    if not data.endswith(b"\0"):
        raise ValueError("trailing zero byte missing")
    names = data[:-1].split(b"\0")
    if b"" in names:
        raise ValueError("empty file name in the listing")
    return names


def _open_dir(path: bytes) -> int | None:
    """The folder, open for lookups relative to it; None if it cannot be opened (then
    each entry is looked up by its path, and fails as it would have)."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None


def _scandir(path: bytes) -> Iterator[os.DirEntry[bytes]]:
    with os.scandir(path) as it:
        yield from it


def _layout(paths: list[bytes]) -> Layout:
    """Nest the sources into a tree of components; None marks a source itself."""
    root: Layout = {}
    for path in sorted(paths, key=len):
        parts = [p for p in path.split(b"/") if p]
        node = root
        for i, part in enumerate(parts):
            child: Layout | None = node.get(part, {})
            if child is None:
                break  # an ancestor is a source already: it covers this path
            if i == len(parts) - 1:
                node[part] = None
                break
            node[part] = child
            node = child
    return root


def _local_offset(time_ns: int) -> int:
    """The local UTC offset in force at that instant (DST included), in seconds."""
    return time.localtime(time_ns // 1_000_000_000).tm_gmtoff
