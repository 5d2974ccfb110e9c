"""Statistics over snapshots: restore size, unique file contents, and unique stored blobs."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from crypto import OVERHEAD
from repo.errors import BlobNotFound
from repo.repository import Repository
from repo.snapshot import Snapshot
from repo.types import BlobId, BlobType
from repo.walk import file_content

# A blob stored without compression: sealed `marker ‖ raw` (docs/design.md, blobs).
_UNCOMPRESSED_EXTRA = OVERHEAD + 1


class StatsMode(enum.StrEnum):
    """restic's counting modes (blobs-per-file is not offered)."""

    RESTORE_SIZE = "restore-size"
    FILES_BY_CONTENTS = "files-by-contents"
    RAW_DATA = "raw-data"


@dataclass(slots=True)
class Stats:
    """restic's stats fields; sizes in bytes, ratios as restic computes them."""

    mode: StatsMode
    snapshots_count: int = 0
    total_size: int = 0
    total_file_count: int = 0
    total_blob_count: int = 0
    # raw-data: what the blobs would take stored without compression.
    total_uncompressed_size: int = 0
    compression_ratio: float = 0.0
    compression_progress: float = 0.0
    compression_space_saving: float = 0.0
    # raw-data: bytes the files restore to, over the raw bytes of their unique chunks.
    deduplication_ratio: float = 0.0


class _Counter:
    def __init__(self, repo: Repository, stats: Stats) -> None:
        self.repo = repo
        self.stats = stats
        self.contents: set[tuple[BlobId, ...]] = set()
        self.blobs: set[tuple[BlobType, BlobId]] = set()
        # raw-data: the restore size below each tree, so each tree is read once.
        self.tree_sizes: dict[BlobId, int] = {}
        self.seen_trees: set[BlobId] = set()

    def restore_size(self, tree_id: BlobId, links: set[tuple[int, int]]) -> None:
        """restic: every entry counts; a hard-linked inode's size counts once per snapshot."""
        for node in self.repo.load_tree(tree_id):
            self.stats.total_file_count += 1
            if node.nlink is None or node.inode == 0:
                self.stats.total_size += node.size
            elif (node.device or 0, node.inode) not in links:
                links.add((node.device or 0, node.inode))
                self.stats.total_size += node.size
            if node.subtree is not None:
                self.restore_size(node.subtree, links)

    def by_contents(self, tree_id: BlobId) -> None:
        """Files with contents not seen before; a tree seen before holds none."""
        if tree_id in self.seen_trees:
            return
        self.seen_trees.add(tree_id)
        for node in self.repo.load_tree(tree_id):
            if node.type == "file":
                key = (*(node.content or ()), *(node.content_lists or ()))
                if key not in self.contents:
                    self.contents.add(key)
                    self.stats.total_file_count += 1
                    self.stats.total_size += node.size
            if node.subtree is not None:
                self.by_contents(node.subtree)

    def raw_data(self, tree_id: BlobId) -> int:
        """Collect the blobs below a tree; returns the size its files restore to."""
        known = self.tree_sizes.get(tree_id)
        if known is not None:
            return known
        self.blobs.add((BlobType.TREE, tree_id))
        size = 0
        for node in self.repo.load_tree(tree_id):
            if node.type == "file":
                size += node.size
                self.blobs.update((BlobType.TREE, i) for i in node.content_lists or ())
                self.blobs.update((BlobType.DATA, i) for i in file_content(self.repo, node))
            if node.subtree is not None:
                size += self.raw_data(node.subtree)
        self.tree_sizes[tree_id] = size
        return size

    def count_blobs(self, restore_size: int) -> None:
        """Sizes of the collected blobs from the index, and restic's ratios."""
        s = self.stats
        compressed = compressed_uncompressed = data_raw = 0
        for btype, blob_id in self.blobs:
            loc = self.repo.index.lookup(btype, blob_id)
            if loc is None:
                raise BlobNotFound(f"{btype.name.lower()} blob {blob_id.hex()[:16]}: not in index")
            uncompressed = loc.raw_length + _UNCOMPRESSED_EXTRA
            s.total_blob_count += 1
            s.total_size += loc.length
            s.total_uncompressed_size += uncompressed
            if loc.length != uncompressed:
                compressed += loc.length
                compressed_uncompressed += uncompressed
            if btype is BlobType.DATA:
                data_raw += loc.raw_length
        if compressed:
            s.compression_ratio = compressed_uncompressed / compressed
        if s.total_uncompressed_size:
            s.compression_progress = compressed_uncompressed / s.total_uncompressed_size * 100
            s.compression_space_saving = (1 - s.total_size / s.total_uncompressed_size) * 100
        if data_raw:
            s.deduplication_ratio = restore_size / data_raw


def compute_stats(repo: Repository, snaps: Sequence[Snapshot], mode: StatsMode) -> Stats:
    """Walk the snapshots and count as `mode` says (restic's stats command)."""
    stats = Stats(mode, snapshots_count=len(snaps))
    counter = _Counter(repo, stats)
    restore_size = 0
    for snap in snaps:
        if mode is StatsMode.RESTORE_SIZE:
            counter.restore_size(snap.tree, set())
        elif mode is StatsMode.FILES_BY_CONTENTS:
            counter.by_contents(snap.tree)
        else:
            restore_size += counter.raw_data(snap.tree)
    if mode is StatsMode.RAW_DATA:
        counter.count_blobs(restore_size)
    return stats
