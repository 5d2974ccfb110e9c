"""repair index (rebuild it from pack headers) and repair snapshots (drop what is lost)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from repo.errors import RepoError
from repo.packread import read_pack_header
from repo.repository import Repository
from repo.snapshot import Snapshot
from repo.tree import Node, decode_content_list, encode_tree
from repo.types import BlobId, BlobType, Handle, Kind


@dataclasses.dataclass(slots=True)
class IndexRepair:
    packs: int = 0
    blobs: int = 0
    damaged: list[str] = dataclasses.field(default_factory=list)
    replaced: int = 0


def repair_index(repo: Repository, report: Callable[[str], None]) -> IndexRepair:
    """Write one index file from the headers of every pack, replacing all others."""
    result = IndexRepair()
    old = [info.name for info in repo.backend.list(Kind.INDEX)]
    packs = []
    for info in repo.backend.list(Kind.DATA):
        try:
            packs.append(read_pack_header(repo, info.name, info.size))
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
