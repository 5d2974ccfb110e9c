"""prune: mark what snapshots use, delete unused packs, repack partly used ones.

The order of the steps keeps the repository valid when prune is killed at any
instant (docs/design.md, prune): new packs, then the new index (whose last file
supersedes the old ones), then deleting old index files, and only then old packs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from repo.blob import open_blob
from repo.errors import BlobNotFound, RepoError
from repo.index import IndexedPack, MasterIndex
from repo.pack import PackBuilder
from repo.repository import Repository
from repo.tree import decode_content_list
from repo.types import BlobId, BlobType, Handle, Kind

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """`100M`, `2G`, `4096` as bytes (ValueError otherwise)."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"invalid size {text!r}")
    return int(float(match[1]) * _UNITS[match[2].lower()])


@dataclass(frozen=True, slots=True)
class UnusedLimit:
    """--max-unused: a share of the repository, a size, or no limit (restic's meaning)."""

    percent: float | None = None
    size: int | None = None

    @classmethod
    def parse(cls, text: str) -> UnusedLimit:
        text = text.strip()
        if text == "unlimited":
            return cls()
        if text.endswith("%"):
            percent = float(text[:-1])
            if not 0 <= percent < 100:
                raise ValueError(f"--max-unused {text}: the percentage must be in [0, 100)")
            return cls(percent=percent)
        return cls(size=parse_size(text))

    def allowed(self, used: int) -> float:
        """Unused bytes tolerated next to `used` bytes in use."""
        if self.percent is not None:
            return used * self.percent / (100 - self.percent)
        if self.size is not None:
            return self.size
        return float("inf")


@dataclass(slots=True)
class PackUse:
    pack: IndexedPack
    used: int = 0
    unused: int = 0
    used_blobs: list[tuple[BlobId, int, int, int]] = field(default_factory=list)
    # The pack's blobs minus copies of blobs the index places in another pack.
    indexed_blobs: list[tuple[BlobId, int, int, int]] = field(default_factory=list)

    def reindexed(self) -> IndexedPack:
        p = self.pack
        return IndexedPack(p.pack_id, p.size, p.header_length, p.btype, self.indexed_blobs)


@dataclass(slots=True)
class PrunePlan:
    """What prune will do, and the sizes that justify it."""

    keep: list[PackUse] = field(default_factory=list)
    repack: list[PackUse] = field(default_factory=list)
    delete: list[PackUse] = field(default_factory=list)
    unindexed: list[str] = field(default_factory=list)
    index_files: list[str] = field(default_factory=list)
    used_bytes: int = 0
    unused_bytes: int = 0
    duplicate_blobs: int = 0

    @property
    def unused_after(self) -> int:
        return sum(p.unused for p in self.keep)

    superseded_leftovers: int = 0

    def is_noop(self) -> bool:
        return not (
            self.repack
            or self.delete
            or self.unindexed
            or self.duplicate_blobs
            or self.superseded_leftovers
        )


class _Marker:
    """A bitmap over index positions of every blob the snapshots reach."""

    def __init__(self, repo: Repository, index: MasterIndex) -> None:
        self.repo = repo
        self.index = index
        self.used = {t: bytearray(index.loaded_count(t)) for t in BlobType}

    def mark(self, btype: BlobType, blob_id: BlobId, where: str) -> bool:
        """Mark a blob; False when it was marked already."""
        pos = self.index.position(btype, blob_id)
        if pos < 0:
            raise BlobNotFound(
                f"{where}: {btype.name.lower()} blob {blob_id.hex()[:16]} is not in the index; "
                "refusing to prune a damaged repository (run check)"
            )
        if self.used[btype][pos]:
            return False
        self.used[btype][pos] = 1
        return True

    def walk(self, tree_id: BlobId, where: str) -> None:
        """Mark a snapshot's trees once each, holding one tree in memory at a time."""
        stack = [tree_id]
        while stack:
            tid = stack.pop()
            if not self.mark(BlobType.TREE, tid, where):
                continue
            for node in self.repo.load_tree(tid):
                for blob_id in node.content or ():
                    self.mark(BlobType.DATA, blob_id, where)
                for list_id in node.content_lists or ():
                    if self.mark(BlobType.TREE, list_id, where):
                        data = self.repo.load_blob(BlobType.TREE, list_id)
                        for blob_id in decode_content_list(data):
                            self.mark(BlobType.DATA, blob_id, where)
                if node.subtree is not None:
                    stack.append(node.subtree)

    def is_used(self, btype: BlobType, blob_id: BlobId) -> bool:
        pos = self.index.position(btype, blob_id)
        return pos >= 0 and bool(self.used[btype][pos])


def plan_prune(
    repo: Repository,
    limit: UnusedLimit,
    max_repack: int | None,
    ignore_snapshots: frozenset[str] = frozenset(),
) -> PrunePlan:
    """Decide which packs to delete, repack and keep (changes nothing); snapshots in
    `ignore_snapshots` count as forgotten already."""
    # Made before the index files are decoded: its small objects then sit below their
    # memory, which can be given back once they are freed.
    index = MasterIndex()
    files, leftovers = repo.read_index_state()
    index.load(p for packs in files.values() for p in packs)
    repo.use_index(index)
    marker = _Marker(repo, index)
    for snap in repo.list_snapshots(is_strict=True):
        if snap.id in ignore_snapshots:
            continue
        marker.walk(snap.tree, f"snapshot {snap.short_id}")
    # Superseded files a killed prune left behind are superseded again and removed:
    # once the file that superseded them is gone, they would come back to life.
    plan = PrunePlan(index_files=list(files) + leftovers, superseded_leftovers=len(leftovers))
    seen: set[bytes] = set()
    for packs in files.values():
        for pack in packs:
            if pack.pack_id not in seen:
                seen.add(pack.pack_id)
                plan_pack(plan, marker, index, pack)
    _choose_repacks(plan, limit, max_repack)
    stored = {info.name for info in repo.backend.list(Kind.DATA)}
    plan.unindexed = sorted(stored - {p.hex() for p in seen})
    return plan


def plan_pack(plan: PrunePlan, marker: _Marker, index: MasterIndex, pack: IndexedPack) -> None:
    use = PackUse(pack)
    for blob in pack.blobs:
        blob_id, _offset, length, _raw = blob
        loc = index.lookup(pack.btype, blob_id)
        # A blob stored twice counts only in the pack the index chose; the new index
        # forgets the other copy, whose bytes are then unused space.
        is_chosen = loc is not None and loc.pack == pack.pack_id
        if is_chosen:
            use.indexed_blobs.append(blob)
        else:
            plan.duplicate_blobs += 1
        if is_chosen and marker.is_used(pack.btype, blob_id):
            use.used += length
            use.used_blobs.append(blob)
        else:
            use.unused += length
    plan.used_bytes += use.used
    plan.unused_bytes += use.unused
    if not use.used_blobs:
        plan.delete.append(use)
    else:
        plan.keep.append(use)


def _choose_repacks(plan: PrunePlan, limit: UnusedLimit, max_repack: int | None) -> None:
    """Repack partly used packs, most unused first, until the unused space is in limit."""
    partly = sorted((p for p in plan.keep if p.unused), key=lambda p: p.unused / p.pack.size)
    allowed = limit.allowed(plan.used_bytes)
    unused = sum(p.unused for p in plan.keep)
    repacked = 0
    while partly and unused > allowed:
        candidate = partly.pop()
        if max_repack is not None and repacked + candidate.used > max_repack:
            break
        plan.keep.remove(candidate)
        plan.repack.append(candidate)
        unused -= candidate.unused
        repacked += candidate.used


@dataclass(slots=True)
class PruneResult:
    packs_deleted: int = 0
    packs_written: int = 0
    bytes_deleted: int = 0
    bytes_written: int = 0


def _copy_blobs(repo: Repository, use: PackUse) -> Iterator[tuple[BlobId, bytes, int]]:
    """The used blobs of a pack as stored ciphertext, each authenticated while copied."""
    handle = Handle(Kind.DATA, use.pack.pack_id.hex())
    data = repo.backend.read(handle)
    for blob_id, offset, length, raw in use.used_blobs:
        stored = data[offset : offset + length]
        try:
            open_blob(repo.master.encryption, repo.master.id_key, use.pack.btype, blob_id, stored)
        except RepoError as exc:
            raise RepoError(f"pack {handle.name[:8]}: {exc}; not pruning") from exc
        yield blob_id, stored, raw


def execute_prune(
    repo: Repository, plan: PrunePlan, progress: Callable[[str], None]
) -> PruneResult:
    """Carry out a plan in the order that keeps the repository valid at every step."""
    result = PruneResult()
    new_packs: list[IndexedPack] = []
    builders: dict[BlobType, PackBuilder] = {}

    def finish(btype: BlobType) -> None:
        builder = builders.pop(btype)
        pack_id, data, header_length = builder.finish(repo.master.encryption)
        repo.backend.write(Handle(Kind.DATA, pack_id.hex()), data)
        blobs = [(b.blob_id, b.offset, b.length, b.raw_length) for b in builder.blobs]
        new_packs.append(IndexedPack(pack_id, len(data), header_length, btype, blobs))
        result.packs_written += 1
        result.bytes_written += len(data)

    for use in plan.repack:
        btype = use.pack.btype
        for blob_id, stored, raw in _copy_blobs(repo, use):
            builder = builders.setdefault(btype, PackBuilder(btype))
            builder.add(blob_id, stored, raw)
            if builder.size >= repo.config.pack_size:
                finish(btype)
    for btype in list(builders):
        finish(btype)
    progress(f"repacked {len(plan.repack)} packs into {result.packs_written}")
    kept = [use.reindexed() for use in plan.keep] + new_packs
    # write_index checks the lock first; nothing is deleted after a lost lock either.
    repo.write_index(kept, supersedes=plan.index_files)
    if repo.lock_guard is not None:
        repo.lock_guard()
    for name in plan.index_files:
        repo.backend.delete(Handle(Kind.INDEX, name))
    if repo.lock_guard is not None:
        repo.lock_guard()
    for use in plan.delete + plan.repack:
        repo.backend.delete(Handle(Kind.DATA, use.pack.pack_id.hex()))
        result.packs_deleted += 1
        result.bytes_deleted += use.pack.size
    for name in plan.unindexed:
        repo.backend.delete(Handle(Kind.DATA, name))
        result.packs_deleted += 1
    return result
