"""Restore: plan from the tree, fetch each pack range once, write with pwrite, then metadata."""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from repo.errors import RepoError
from repo.packread import read_blobs, verify_file
from repo.pattern import PatternSet
from repo.repository import Repository
from repo.tree import Node
from repo.types import BlobId, BlobType
from repo.walk import file_content, is_safe_name

OPEN_FILES = 128


class RestoreReporter(Protocol):
    def bytes_written(self, n: int) -> None: ...
    def error(self, path: str, message: str) -> None: ...


@dataclass(slots=True)
class RestoreOptions:
    target: bytes
    includes: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)
    is_sparse: bool = False
    is_verify: bool = False


@dataclass(slots=True)
class _File:
    rel: tuple[bytes, ...]
    node: Node
    blobs: list[tuple[BlobId, int]] = field(default_factory=list)
    remaining: int = 0
    damaged: list[tuple[int, int, str]] = field(default_factory=list)


@dataclass(slots=True)
class RestoreResult:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    errors: int = 0


class _Dirs:
    """Open directory descriptors below the target, opened component by component
    with O_NOFOLLOW so a symlink planted in the target is never followed."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self._fds: collections.OrderedDict[tuple[bytes, ...], int] = collections.OrderedDict()

    def fd(self, rel: tuple[bytes, ...]) -> int:
        if not rel:
            return self.root_fd
        fd = self._fds.get(rel)
        if fd is not None:
            self._fds.move_to_end(rel)
            return fd
        parent = self.fd(rel[:-1])
        fd = os.open(rel[-1], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
        self._fds[rel] = fd
        while len(self._fds) > OPEN_FILES:
            os.close(self._fds.popitem(last=False)[1])
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _show(rel: tuple[bytes, ...]) -> str:
    return "/".join(p.decode("utf-8", "surrogateescape") for p in rel) or "."


class Restorer:
    """Restores one tree into a target folder."""

    _dirs: _Dirs  # open while run() runs

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
        return item

    # -- running ---------------------------------------------------------------------

    def run(self) -> RestoreResult:
        if self.root.type == "dir" and self.root.subtree is not None:
            self._plan(self.root.subtree, (), self.base)
        else:
            self._plan_leaf((self.root.name,), self.root)
        os.makedirs(self.opts.target, exist_ok=True)
        root_fd = os.open(self.opts.target, os.O_RDONLY | os.O_DIRECTORY)
        self._dirs = _Dirs(root_fd)
        try:
            self._make_dirs()
            self._write_files()
            self._make_links_and_others()
            if self.opts.is_verify:
                self._verify()
            self._dir_metadata()
        finally:
            for fd in self._fds.values():
                os.close(fd)
            self._dirs.close()
            os.close(root_fd)
        return self.result

    def _make_dirs(self) -> None:
        for rel, _node in self.dirs:
            try:
                os.mkdir(rel[-1], 0o700, dir_fd=self._dirs.fd(rel[:-1]))
            except FileExistsError:
                st = os.stat(rel[-1], dir_fd=self._dirs.fd(rel[:-1]), follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    self._error(rel, "exists and is not a directory")
            except OSError as exc:
                self._error(rel, exc.strerror or str(exc))
            else:
                self.result.dirs += 1

    def _create(self, item: _File) -> int:
        parent = self._dirs.fd(item.rel[:-1])
        name = item.rel[-1]
        # Replace whatever is there: writing into an existing inode could reach a file
        # outside the target through a hard link, or follow a symlink.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=parent)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, 0o600, dir_fd=parent)
        os.ftruncate(fd, item.node.size)
        return fd

    def _reopen(self, item: _File) -> int:
        flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        return os.open(item.rel[-1], flags, dir_fd=self._dirs.fd(item.rel[:-1]))

    def _fd(self, index: int) -> int:
        fd = self._fds.get(index)
        if fd is not None:
            self._fds.move_to_end(index)
            return fd
        fd = self._reopen(self.files[index])
        self._remember(index, fd)
        return fd

    def _remember(self, index: int, fd: int) -> None:
        self._fds[index] = fd
        while len(self._fds) > OPEN_FILES:
            os.close(self._fds.popitem(last=False)[1])

    def _write_files(self) -> None:
        by_pack: dict[bytes, dict[BlobId, list[tuple[int, int]]]] = {}
        for index, item in enumerate(self.files):
            try:
                fd = self._create(item)
            except OSError as exc:
                self._error(item.rel, exc.strerror or str(exc))
                item.remaining = -1
                continue
            self._remember(index, fd)
            for blob_id, offset in item.blobs:
                loc = self.repo.index.lookup(BlobType.DATA, blob_id)
                if loc is None:
                    continue  # planned only when indexed
                by_pack.setdefault(loc.pack, {}).setdefault(blob_id, []).append((index, offset))
                item.remaining += 1
            self._maybe_finish(index)
        for pack, blobs in by_pack.items():
            self._restore_pack(pack, blobs)

    def _restore_pack(self, pack: bytes, blobs: dict[BlobId, list[tuple[int, int]]]) -> None:
        locs = {b: self.repo.index.lookup(BlobType.DATA, b) for b in blobs}
        for blob_id, data, problem in read_blobs(self.repo, pack, locs):
            for index, offset in blobs[blob_id]:
                item = self.files[index]
                if problem is not None:
                    loc = locs[blob_id]
                    end = offset + (loc.raw_length if loc else 0)
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
                _apply_fd_metadata(fd, item.node)
                self.result.files += 1
        finally:
            os.close(self._fds.pop(index))

    def _make_links_and_others(self) -> None:
        for first, rel in self.links:
            try:
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
            try:
                _make_special(self._dirs.fd(rel[:-1]), rel[-1], node)
            except OSError as exc:
                self._error(rel, exc.strerror or str(exc))
            else:
                self.result.files += 1

    def _dir_metadata(self) -> None:
        for rel, node in reversed(self.dirs):
            try:
                fd = self._dirs.fd(rel)
                _apply_fd_metadata(fd, node)
            except OSError as exc:
                self._error(rel, exc.strerror or str(exc))

    def _verify(self) -> None:
        for item in self.files:
            if item.damaged or not item.node.size:
                continue
            problem = verify_file(self.repo, self._dirs.fd(item.rel[:-1]), item.rel[-1], item.blobs)
            if problem:
                self._error(item.rel, f"verification failed: {problem}")


def _chown(apply: Callable[[], None]) -> None:
    # Not root: keep our own uid/gid, as restic does.
    with contextlib.suppress(PermissionError):
        apply()


def _apply_fd_metadata(fd: int, node: Node) -> None:
    _chown(lambda: os.fchown(fd, node.uid, node.gid))
    os.fchmod(fd, node.mode)
    for name, value in node.xattrs:
        try:
            os.setxattr(fd, name, value)
        except OSError as exc:
            if exc.errno not in (errno.ENOTSUP, errno.EPERM, errno.EACCES):
                raise
    os.utime(fd, ns=(node.atime_ns or node.mtime_ns, node.mtime_ns))


def _make_special(parent: int, name: bytes, node: Node) -> None:
    try:
        os.unlink(name, dir_fd=parent)
    except FileNotFoundError:
        pass
    except IsADirectoryError as exc:
        raise OSError(errno.EEXIST, "a directory is in the way") from exc
    if node.type == "symlink":
        os.symlink(node.target or b"", name, dir_fd=parent)
    elif node.type == "fifo":
        os.mkfifo(name, 0o600, dir_fd=parent)
    elif node.type in ("chardev", "blockdev"):
        kind = stat.S_IFCHR if node.type == "chardev" else stat.S_IFBLK
        os.mknod(name, kind | 0o600, node.rdev, dir_fd=parent)
    else:
        raise OSError(errno.ENOTSUP, f"cannot restore a {node.type}")
    _chown(lambda: os.chown(name, node.uid, node.gid, dir_fd=parent, follow_symlinks=False))
    if node.type != "symlink":
        os.chmod(name, node.mode, dir_fd=parent)
    times = (node.atime_ns or node.mtime_ns, node.mtime_ns)
    os.utime(name, ns=times, dir_fd=parent, follow_symlinks=False)
