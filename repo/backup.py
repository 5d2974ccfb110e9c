"""Backup: walk the sources, reuse unchanged files from the parent, store new chunks."""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Protocol

from chunker import iter_chunks
from repo.errors import RepoError, SourceError
from repo.fsmeta import group_name, node_from_stat, user_name
from repo.pattern import PatternSet, split_path
from repo.repository import Repository
from repo.snapshot import Snapshot
from repo.tree import MAX_INLINE_CONTENT, Node, encode_content_list, encode_tree
from repo.types import BlobId, BlobType

# docs/design.md, "Backup": an entry whose mtime or ctime is this close to the parent
# snapshot's start may have changed again within the same timestamp tick, so it is
# reread. Linux file systems stamp with the kernel's coarse clock (a few ms); whole
# seconds on both stamps suggest a file system with 1 s or 2 s granularity.
RACY_NS = 20_000_000
RACY_COARSE_NS = 2_000_000_000
READ_WINDOW = 32 * 1024 * 1024
O_NOATIME = getattr(os, "O_NOATIME", 0)

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
    is_dry_run: bool = False
    with_atime: bool = False
    program_version: str = ""


def _racy(node: Node, start_ns: int) -> bool:
    is_coarse = node.mtime_ns % 1_000_000_000 == 0 and node.ctime_ns % 1_000_000_000 == 0
    window = RACY_COARSE_NS if is_coarse else RACY_NS
    return max(node.mtime_ns, node.ctime_ns) >= start_ns - window


class Archiver:
    """Runs one backup into an open repository."""

    def __init__(self, repo: Repository, opts: BackupOptions, reporter: Reporter) -> None:
        self.repo = repo
        self.opts = opts
        self.reporter = reporter
        self.stats = BackupStats()
        self.excludes = PatternSet(opts.excludes)
        self.start_ns = time.time_ns()
        self._parent_start = opts.parent.start_ns if opts.parent else 0

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

    def _save_tree(self, nodes: list[Node]) -> BlobId:
        return self._save(BlobType.TREE, encode_tree(nodes))

    # -- files -----------------------------------------------------------------------

    def _read_file(self, path: bytes, node: Node, st: os.stat_result) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | O_NOATIME)
        except PermissionError:
            # O_NOATIME is refused on files we do not own.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            fst = os.fstat(fd)
            if not stat.S_ISREG(fst.st_mode):
                raise OSError(errno.EINVAL, "changed type while being read")
            content: list[BlobId] = []
            size = 0

            def read(n: int) -> bytes:
                data = os.read(fd, n)
                self.reporter.bytes_read(len(data))
                return data

            for chunk in iter_chunks(read, self.repo.config.chunker, READ_WINDOW):
                content.append(self._save(BlobType.DATA, chunk))
                size += len(chunk)
            after = os.fstat(fd)
        finally:
            os.close(fd)
        if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns) or size != st.st_size:
            self.reporter.warning(path, "file changed while it was read; stored what was read")
        node.size = size
        self._set_content(node, content)

    def _set_content(self, node: Node, content: list[BlobId]) -> None:
        if len(content) <= MAX_INLINE_CONTENT:
            node.content = content
            return
        node.content = None
        node.content_lists = [
            self._save(BlobType.TREE, encode_content_list(content[i : i + MAX_INLINE_CONTENT]))
            for i in range(0, len(content), MAX_INLINE_CONTENT)
        ]

    def _file(self, path: bytes, node: Node, old: Node | None, st: os.stat_result) -> None:
        self.stats.total_files_processed += 1
        self.stats.total_bytes_processed += node.size
        if old is not None and not self.opts.is_force and self._is_unchanged(node, old):
            node.content, node.content_lists = old.content, old.content_lists
            self.stats.files_unmodified += 1
            self.reporter.bytes_read(node.size)
        else:
            self._read_file(path, node, st)
            if old is None:
                self.stats.files_new += 1
            elif (old.content, old.content_lists) == (node.content, node.content_lists):
                self.stats.files_unmodified += 1
            else:
                self.stats.files_changed += 1
        self.reporter.file_done(path, node.size)

    def _is_unchanged(self, node: Node, old: Node) -> bool:
        same = (old.type, old.size, old.mtime_ns, old.ctime_ns, old.inode) == (
            node.type,
            node.size,
            node.mtime_ns,
            node.ctime_ns,
            node.inode,
        )
        return same and not _racy(old, self._parent_start)

    # -- directories -----------------------------------------------------------------

    def _old_children(self, old: Node | None) -> dict[bytes, Node]:
        if old is None or old.type != "dir" or old.subtree is None:
            return {}
        try:
            return {n.name: n for n in self.repo.load_tree(old.subtree)}
        except RepoError as exc:
            # A damaged parent only costs rereading the files below it.
            self.reporter.warning(old.name, f"cannot use the parent's tree: {exc}")
            return {}

    def _entry(self, path: bytes, name: bytes, old: Node | None) -> Node | None:
        """Back up one entry; None when it was skipped (excluded or unreadable)."""
        if self.excludes and self.excludes.matches(split_path(path)):
            return None
        try:
            st = os.lstat(path)
            node = node_from_stat(name, path, st, with_atime=self.opts.with_atime)
            if node.type == "file":
                self._file(path, node, old, st)
            elif node.type == "dir":
                node.subtree = self._dir(path, old)
        except OSError as exc:
            self._fail(path, exc)
            return None
        return node

    def _fail(self, path: bytes, exc: OSError) -> None:
        self.stats.errors += 1
        self.reporter.error(path, exc.strerror or str(exc))

    def _dir(self, path: bytes, old: Node | None) -> BlobId:
        old_children = self._old_children(old)
        names = sorted(e.name for e in _scandir(path))
        nodes = []
        for name in names:
            node = self._entry(os.path.join(path, name), name, old_children.get(name))
            if node is not None:
                nodes.append(node)
        tree_id = self._save_tree(nodes)
        if old is None or old.type != "dir":
            self.stats.dirs_new += 1
        elif old.subtree == tree_id:
            self.stats.dirs_unmodified += 1
        else:
            self.stats.dirs_changed += 1
        return tree_id

    # -- roots -----------------------------------------------------------------------

    def _virtual(self, prefix: bytes, tree: Layout, old_root: BlobId | None) -> BlobId:
        """A directory on the way to the sources: only the listed children are kept."""
        old_children = self._old_children(
            Node(b"", "dir", subtree=old_root) if old_root is not None else None
        )
        nodes = []
        for name, sub in sorted(tree.items()):
            path = os.path.join(prefix, name)
            old = old_children.get(name)
            if sub is None:
                node = self._entry(path, name, old)
            else:
                node = self._intermediate(path, name, sub, old)
            if node is not None:
                nodes.append(node)
        return self._save_tree(nodes)

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
        if b"/" in paths:
            root = self._dir(b"/", Node(b"", "dir", subtree=old_root) if old_root else None)
        else:
            root = self._virtual(b"/", _layout(paths), old_root)
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
        for chunk in iter_chunks(read, self.repo.config.chunker, READ_WINDOW):
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
