"""Restore: plan from the tree, decide per entry against the target, fetch each pack
range once on a small thread pool, write with pwrite, then metadata."""

from __future__ import annotations

import collections
import contextlib
import os
import stat
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from repo.errors import RepoError
from repo.packread import fetch_run, runs, verify_file
from repo.pattern import PatternSet
from repo.repository import Repository
from repo.restorefs import (
    Dirs,
    apply_fd_metadata,
    lstat_at,
    make_special,
    remove_entry,
    special_matches,
)
from repo.tree import Node
from repo.types import BlobId, BlobLocation, BlobType
from repo.walk import file_content, is_safe_name

OPEN_FILES = 128
OVERWRITE_MODES = ("always", "if-changed", "if-newer", "never")

# What happens to an entry: created anew, replaced, patched in place (if-changed:
# only ranges that differ are written), or left as it is.
CREATE, REPLACE, PATCH, SKIP = "create", "replace", "patch", "skip"

Run = tuple[bytes, int, int, list[tuple[BlobId, BlobLocation]]]


class RestoreReporter(Protocol):
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
    threads: int = 2


@dataclass(slots=True)
class _File:
    rel: tuple[bytes, ...]
    node: Node
    blobs: list[tuple[BlobId, int]] = field(default_factory=list)  # every chunk, by offset
    fetch: list[tuple[BlobId, int]] = field(default_factory=list)  # the chunks to write
    action: str = CREATE
    remaining: int = 0
    damaged: list[tuple[int, int, str]] = field(default_factory=list)


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
        self.files: list[_File] = []
        self.links: list[tuple[tuple[bytes, ...], tuple[bytes, ...]]] = []
        self.others: list[tuple[tuple[bytes, ...], Node]] = []
        self._inodes: dict[tuple[int, int], tuple[bytes, ...]] = {}
        self._fds: collections.OrderedDict[int, int] = collections.OrderedDict()
        # Every name each restored folder has in the snapshot, for --delete.
        self._names: dict[tuple[bytes, ...], set[bytes]] = {}

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

    def _plan(self, tree_id: BlobId, rel: tuple[bytes, ...], parts: tuple[str, ...]) -> bool:
        """Collect what to restore below a tree; True when anything was taken."""
        taken = False
        try:
            nodes = self.repo.load_tree(tree_id)
        except RepoError as exc:
            self._error(rel, f"cannot read its tree: {exc}")
            return False
        self._names[rel] = {n.name for n in nodes}
        for node in nodes:
            if not is_safe_name(node.name):
                self._error((*rel, node.name), "refusing an entry with an unsafe name")
                continue
            child = (*rel, node.name)
            cparts = (*parts, node.name.decode("utf-8", "surrogateescape"))
            is_dir = node.type == "dir"
            want, descend = self._wanted(cparts, is_dir)
            if is_dir:
                index = len(self.dirs)
                self.dirs.append((child, node))
                below = (
                    descend and node.subtree is not None and self._plan(node.subtree, child, cparts)
                )
                if not (want or below):
                    self.dirs.pop(index)
                    continue
            elif not want:
                continue
            else:
                self._plan_leaf(child, node)
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
            self.files.append(self._plan_file(rel, node))
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
        for blob_id in content:
            loc = self.repo.index.lookup(BlobType.DATA, blob_id)
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
        st = lstat_at(self._dirs.existing(rel[:-1]), rel[-1])
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
                loc = self.repo.index.lookup(BlobType.DATA, blob_id)
                length = loc.raw_length if loc else 0
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
        for item in self.files:
            item.action = self._decide(item.rel, item.node)
            if item.action == PATCH:
                item.fetch = self._changed_blobs(item)
                if not item.fetch and self._same_size(item):
                    # Content already right: only its metadata is (re)applied.
                    self.reporter.planned(_show(item.rel), SKIP)
                    continue
            elif item.action == SKIP:
                item.fetch = []
                self.result.skipped += 1
            self.reporter.planned(_show(item.rel), item.action)

    # -- running ---------------------------------------------------------------------

    def run(self) -> RestoreResult:
        self.repo.index  # noqa: B018 - a damaged index stops here, not as a tree error
        if self.root.type == "dir" and self.root.subtree is not None:
            self._plan(self.root.subtree, (), self.base)
        else:
            self._plan_leaf((self.root.name,), self.root)
        if not self.opts.is_dry_run:
            os.makedirs(self.opts.target, exist_ok=True)
        root_fd = _open_target(self.opts.target)
        if root_fd is None:  # a dry run into a folder that does not exist yet
            self._report_all_new()
            return self.result
        self._dirs = Dirs(root_fd)
        try:
            self._run_phases()
        finally:
            for fd in self._fds.values():
                os.close(fd)
            self._dirs.close()
            os.close(root_fd)
        return self.result

    def _run_phases(self) -> None:
        if self.opts.is_dry_run:
            self._decide_files()
            self._delete_extras()
            return
        self._make_dirs()
        self._decide_files()
        self._write_files()
        self._make_links_and_others()
        if self.opts.is_verify:
            self._verify()
        if self.opts.is_delete:
            self._delete_extras()
        self._dir_metadata()

    def _report_all_new(self) -> None:
        for item in self.files:
            self.reporter.planned(_show(item.rel), CREATE)

    def _make_dirs(self) -> None:
        for rel, _node in self.dirs:
            try:
                os.mkdir(rel[-1], 0o700, dir_fd=self._dirs.fd(rel[:-1]))
            except FileExistsError:
                st = os.stat(rel[-1], dir_fd=self._dirs.fd(rel[:-1]), follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    if self.opts.overwrite == "never":
                        self._error(rel, "exists and is not a directory")
                        continue
                    remove_entry(self._dirs.fd(rel[:-1]), rel[-1])
                    os.mkdir(rel[-1], 0o700, dir_fd=self._dirs.fd(rel[:-1]))
                    self.result.dirs += 1
            except OSError as exc:
                self._error(rel, exc.strerror or str(exc))
            else:
                self.result.dirs += 1

    def _open_item(self, item: _File) -> int:
        parent = self._dirs.fd(item.rel[:-1])
        name = item.rel[-1]
        if item.action == PATCH:
            fd = os.open(name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        else:
            # Replace whatever is there: writing into an existing inode could reach a
            # file outside the target through a hard link, or follow a symlink.
            with contextlib.suppress(FileNotFoundError):
                remove_entry(parent, name)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(name, flags, 0o600, dir_fd=parent)
        os.ftruncate(fd, item.node.size)
        return fd

    def _fd(self, index: int) -> int:
        fd = self._fds.get(index)
        if fd is not None:
            self._fds.move_to_end(index)
            return fd
        item = self.files[index]
        flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(item.rel[-1], flags, dir_fd=self._dirs.fd(item.rel[:-1]))
        self._remember(index, fd)
        return fd

    def _remember(self, index: int, fd: int) -> None:
        self._fds[index] = fd
        while len(self._fds) > OPEN_FILES:
            os.close(self._fds.popitem(last=False)[1])

    def _write_files(self) -> None:
        by_pack: dict[bytes, dict[BlobId, list[tuple[int, int]]]] = {}
        for index, item in enumerate(self.files):
            if item.action == SKIP:
                item.remaining = -1
                continue
            try:
                self._remember(index, self._open_item(item))
            except OSError as exc:
                self._error(item.rel, exc.strerror or str(exc))
                item.remaining = -1
                continue
            for blob_id, offset in item.fetch:
                loc = self.repo.index.lookup(BlobType.DATA, blob_id)
                if loc is None:
                    continue  # planned only when indexed
                by_pack.setdefault(loc.pack, {}).setdefault(blob_id, []).append((index, offset))
                item.remaining += 1
            self._maybe_finish(index)
        self._fetch_and_write(by_pack)

    def _runs(self, by_pack: dict[bytes, dict[BlobId, list[tuple[int, int]]]]) -> Iterator[Run]:
        for pack, blobs in by_pack.items():
            locs = {b: self.repo.index.lookup(BlobType.DATA, b) for b in blobs}
            for start, end, run in runs(locs):
                yield pack, start, end, run

    def _fetch_and_write(self, by_pack: dict[bytes, dict[BlobId, list[tuple[int, int]]]]) -> None:
        """Reading and decrypting run on a pool (pread, zstd and the network release
        the GIL); writing stays on this thread, which owns every descriptor."""
        targets = {b: t for blobs in by_pack.values() for b, t in blobs.items()}
        threads = max(1, self.opts.threads)
        pending: collections.deque[tuple[Run, Future[list[tuple[BlobId, bytes, str | None]]]]]
        pending = collections.deque()
        with ThreadPoolExecutor(threads, thread_name_prefix="restore") as pool:
            for run in self._runs(by_pack):
                pending.append((run, pool.submit(fetch_run, self.repo, *run)))
                while len(pending) > threads + 1:
                    self._write_run(*pending.popleft(), targets)
            while pending:
                self._write_run(*pending.popleft(), targets)

    def _write_run(
        self,
        run: Run,
        future: Future[list[tuple[BlobId, bytes, str | None]]],
        targets: dict[BlobId, list[tuple[int, int]]],
    ) -> None:
        locs = dict(run[3])
        for blob_id, data, problem in future.result():
            for index, offset in targets[blob_id]:
                item = self.files[index]
                if problem is not None:
                    end = offset + locs[blob_id].raw_length
                    item.damaged.append((offset, end, problem))
                elif not (self.opts.is_sparse and data.count(0) == len(data)):
                    self._pwrite(index, data, offset)
                item.remaining -= 1
                self._maybe_finish(index)

    def _pwrite(self, index: int, data: bytes, offset: int) -> None:
        fd = self._fd(index)
        view = memoryview(data)
        while view:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n
        self.result.bytes += len(data)
        self.reporter.bytes_written(len(data))

    def _maybe_finish(self, index: int) -> None:
        item = self.files[index]
        if item.remaining != 0:
            return
        item.remaining = -1
        fd = self._fd(index)
        try:
            if item.damaged:
                for start, end, why in item.damaged:
                    self._error(item.rel, f"damaged bytes {start}-{end}: {why}")
            else:
                apply_fd_metadata(fd, item.node)
                self.result.files += 1
        finally:
            os.close(self._fds.pop(index))

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
        for rel, node in sorted(self.others, key=lambda x: x[1].type == "symlink"):
            if self._decide(rel, node) == SKIP:
                self.result.skipped += 1
                continue
            try:
                make_special(self._dirs.fd(rel[:-1]), rel[-1], node)
            except OSError as exc:
                self._error(rel, exc.strerror or str(exc))
            else:
                self.result.files += 1

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
            try:
                apply_fd_metadata(self._dirs.fd(rel), node)
            except OSError as exc:
                self._error(rel, exc.strerror or str(exc))

    def _verify(self) -> None:
        for item in self.files:
            if item.damaged or not item.node.size or item.action == SKIP:
                continue
            problem = verify_file(self.repo, self._dirs.fd(item.rel[:-1]), item.rel[-1], item.blobs)
            if problem:
                self._error(item.rel, f"verification failed: {problem}")


def _open_target(target: bytes) -> int | None:
    try:
        return os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return None
