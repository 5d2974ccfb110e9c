"""Comparing two snapshot trees, and naming a tree as SNAPSHOT[:PATH]."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from repo.errors import PathNotFound
from repo.repository import Repository
from repo.snapshot import Snapshot, SnapshotFilter, find_snapshot
from repo.tree import Node
from repo.types import BlobId, BlobType
from repo.walk import file_content, find_node

BlobRef = tuple[BlobType, BlobId]


def snapshot_tree(
    repo: Repository, snaps: Sequence[Snapshot], ref: str, flt: SnapshotFilter
) -> tuple[Snapshot, BlobId]:
    """The snapshot a `SNAPSHOT[:PATH]` reference names, and the tree of PATH in it."""
    snap_ref, _, sub = ref.partition(":")
    snap = find_snapshot(snaps, snap_ref, flt)
    if not sub.strip("/"):
        return snap, snap.tree
    node = find_node(repo, snap.tree, os.fsencode(sub))
    if node.type != "dir" or node.subtree is None:
        raise PathNotFound(f"{sub}: not a directory in snapshot {snap.short_id}")
    return snap, node.subtree


@dataclass(frozen=True, slots=True)
class Change:
    """One changed path: restic's modifiers +, -, M (content), U (metadata), T (type),
    and ? after M when only the content changed (probable bit rot)."""

    path: bytes
    modifier: str


@dataclass(slots=True)
class DiffStat:
    """What one side of a comparison has that the other lacks (restic's DiffStat)."""

    files: int = 0
    dirs: int = 0
    others: int = 0
    data_blobs: int = 0
    tree_blobs: int = 0
    bytes: int = 0

    def add(self, node: Node) -> None:
        if node.type == "file":
            self.files += 1
        elif node.type == "dir":
            self.dirs += 1
        else:
            self.others += 1


def _metadata(node: Node) -> tuple[object, ...]:
    """What `U` compares: everything but content, inode numbers and access time."""
    return (
        node.mode,
        node.uid,
        node.gid,
        node.user,
        node.group,
        node.mtime_ns,
        node.ctime_ns,
        node.size,
        node.rdev,
        node.xattrs,
    )


def _content(node: Node) -> tuple[object, ...]:
    return (node.content or [], node.content_lists or [])


def _shown(path: bytes, node: Node) -> bytes:
    return path + b"/" if node.type == "dir" else path


def _modifier(n1: Node, n2: Node) -> str:
    if n1.type != n2.type:
        return "T"
    if n1.type == "file" and _content(n1) != _content(n2):
        return "M?" if _metadata(n1) == _metadata(n2) else "M"
    if n1.type == "symlink" and n1.target != n2.target:
        return "M"
    return "U" if _metadata(n1) != _metadata(n2) else ""


class Differ:
    """Compares two trees; identical subtrees (same id) are skipped without loading.

    Blob counts therefore leave out blobs found only inside identical subtrees: a blob
    that moved into one of them from a changed file can count as removed."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.added = DiffStat()
        self.removed = DiffStat()
        self.changed_files = 0
        self._before: set[BlobRef] = set()
        self._after: set[BlobRef] = set()

    def diff(self, tree1: BlobId, tree2: BlobId) -> Iterator[Change]:
        """Every change from tree1 to tree2 in path order; the blob statistics are
        complete once the iterator is exhausted."""
        self._before.add((BlobType.TREE, tree1))
        self._after.add((BlobType.TREE, tree2))
        yield from self._trees(b"", tree1, tree2)
        self._count(self._before - self._after, self.removed)
        self._count(self._after - self._before, self.added)

    def _trees(self, prefix: bytes, tree1: BlobId, tree2: BlobId) -> Iterator[Change]:
        if tree1 == tree2:
            return
        nodes1 = {n.name: n for n in self.repo.load_tree(tree1)}
        nodes2 = {n.name: n for n in self.repo.load_tree(tree2)}
        for name in sorted(nodes1.keys() | nodes2.keys()):
            n1, n2 = nodes1.get(name), nodes2.get(name)
            path = prefix + b"/" + name
            if n1 is not None:
                self._add_blobs(self._before, n1)
            if n2 is not None:
                self._add_blobs(self._after, n2)
            if n2 is None and n1 is not None:
                yield from self._one_side("-", path, n1, self.removed, self._before)
            elif n1 is None and n2 is not None:
                yield from self._one_side("+", path, n2, self.added, self._after)
            elif n1 is not None and n2 is not None:
                yield from self._both(path, n1, n2)

    def _both(self, path: bytes, n1: Node, n2: Node) -> Iterator[Change]:
        modifier = _modifier(n1, n2)
        if modifier.startswith("M") and n1.type == "file":
            self.changed_files += 1
        if modifier:
            yield Change(_shown(path, n2), modifier)
        if n1.type == n2.type == "dir" and n1.subtree is not None and n2.subtree is not None:
            yield from self._trees(path, n1.subtree, n2.subtree)

    def _one_side(
        self, modifier: str, path: bytes, node: Node, stat: DiffStat, blobs: set[BlobRef]
    ) -> Iterator[Change]:
        """A node only one side has, and everything below it (restic prints it all)."""
        yield Change(_shown(path, node), modifier)
        stat.add(node)
        if node.type != "dir" or node.subtree is None:
            return
        for child in self.repo.load_tree(node.subtree):
            self._add_blobs(blobs, child)
            yield from self._one_side(modifier, path + b"/" + child.name, child, stat, blobs)

    def _add_blobs(self, blobs: set[BlobRef], node: Node) -> None:
        if node.subtree is not None:
            blobs.add((BlobType.TREE, node.subtree))
        if node.type != "file":
            return
        blobs.update((BlobType.TREE, i) for i in node.content_lists or ())
        blobs.update((BlobType.DATA, i) for i in file_content(self.repo, node))

    def _count(self, blobs: set[BlobRef], stat: DiffStat) -> None:
        for btype, blob_id in blobs:
            if btype is BlobType.DATA:
                stat.data_blobs += 1
            else:
                stat.tree_blobs += 1
            loc = self.repo.index.lookup(btype, blob_id)
            stat.bytes += loc.raw_length if loc is not None else 0
