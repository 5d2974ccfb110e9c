"""repair index (rebuild it from pack headers) and repair snapshots (drop what is lost)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from repo.errors import DamagedObject, RepoError
from repo.index import IndexedPack
from repo.pack import TRAILER, read_header
from repo.repository import Repository
from repo.snapshot import Snapshot
from repo.tree import Node, decode_content_list, encode_tree
from repo.types import BlobId, BlobType, Handle, Kind

# Most headers fit in the last 64 KiB of their pack: one range read.
_TAIL = 64 * 1024


@dataclasses.dataclass(slots=True)
class IndexRepair:
    packs: int = 0
    blobs: int = 0
    damaged: list[str] = dataclasses.field(default_factory=list)
    replaced: int = 0


def _pack_from_header(repo: Repository, name: str, size: int) -> IndexedPack:
    handle = Handle(Kind.DATA, name)
    if size < TRAILER.size:
        raise DamagedObject(f"pack {name[:8]}: too short for a pack")
    start = max(0, size - _TAIL)
    tail = repo.backend.read(handle, start, size - start)
    (hlen,) = TRAILER.unpack_from(tail, len(tail) - TRAILER.size)
    if len(tail) < hlen + TRAILER.size <= size:
        tail = repo.backend.read(handle, size - hlen - TRAILER.size, hlen + TRAILER.size)
    blobs = read_header(repo.master.encryption, tail, size, name=f"pack {name[:8]}")
    types = {b.btype for b in blobs}
    if len(types) != 1:
        raise DamagedObject(f"pack {name[:8]}: holds {len(types)} blob types, not one")
    rows = [(b.blob_id, b.offset, b.length, b.raw_length) for b in blobs]
    return IndexedPack(bytes.fromhex(name), size, hlen, types.pop(), rows)


def repair_index(repo: Repository, report: Callable[[str], None]) -> IndexRepair:
    """Write one index file from the headers of every pack, replacing all others."""
    result = IndexRepair()
    old = [info.name for info in repo.backend.list(Kind.INDEX)]
    packs = []
    for info in repo.backend.list(Kind.DATA):
        try:
            packs.append(_pack_from_header(repo, info.name, info.size))
        except RepoError as exc:
            result.damaged.append(info.name)
            report(f"{exc}; its blobs are left out of the index")
    result.packs = len(packs)
    result.blobs = sum(len(p.blobs) for p in packs)
    repo.write_index(packs, supersedes=old)
    for name in old:
        repo.backend.delete(Handle(Kind.INDEX, name))
    result.replaced = len(old)
    return result


class SnapshotRepairer:
    """Rewrites trees that reference lost data, dropping only what is lost."""

    def __init__(self, repo: Repository, report: Callable[[str], None], *, is_dry_run: bool):
        self.repo = repo
        self.report = report
        self.is_dry_run = is_dry_run
        self._done: dict[BlobId, BlobId | None] = {}

    def _file_is_intact(self, node: Node) -> bool:
        index = self.repo.index
        if not all(index.has(BlobType.DATA, b) for b in node.content or ()):
            return False
        for list_id in node.content_lists or ():
            try:
                ids = decode_content_list(self.repo.load_blob(BlobType.TREE, list_id))
            except RepoError:
                return False
            if not all(index.has(BlobType.DATA, b) for b in ids):
                return False
        return True

    def tree(self, tree_id: BlobId, path: str) -> BlobId | None:
        """The repaired tree's id (the same id when nothing was lost), None if unreadable."""
        if tree_id in self._done:
            return self._done[tree_id]
        try:
            nodes = self.repo.load_tree(tree_id)
        except RepoError as exc:
            self.report(f"{path or '/'}: directory lost ({exc})")
            self._done[tree_id] = None
            return None
        kept = []
        for node in nodes:
            child = f"{path}/{node.name.decode('utf-8', 'backslashreplace')}"
            if node.type == "file" and not self._file_is_intact(node):
                self.report(f"{child}: file dropped, its data is lost")
                continue
            if node.type == "dir" and node.subtree is not None:
                sub = self.tree(node.subtree, child)
                if sub is None:
                    continue
                kept.append(dataclasses.replace(node, subtree=sub))
                continue
            kept.append(node)
        new_id = tree_id
        if kept != nodes:
            new_id = self.repo.blob_id(encode_tree(kept)) if self.is_dry_run else self._save(kept)
        self._done[tree_id] = new_id
        return new_id

    def _save(self, nodes: list[Node]) -> BlobId:
        return self.repo.save_tree(nodes)[0]

    def snapshot(self, snap: Snapshot) -> Snapshot | None:
        """A repaired copy of the snapshot, or None when nothing in it is lost."""
        root = self.tree(snap.tree, "")
        if root == snap.tree:
            return None
        if root is None:
            root = self._save([]) if not self.is_dry_run else snap.tree
        new = dataclasses.replace(snap, tree=root, original=snap.original or snap.id, id="")
        new.tags = sorted({*snap.tags, "repaired"})
        new.summary = dict(snap.summary, repaired_at=time.time_ns())
        return new
