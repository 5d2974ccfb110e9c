"""check: the repository's structure and, with read-data, every pack's bytes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from crypto import ObjectType
from repo.blob import open_blob
from repo.digest import sha256_hex
from repo.errors import RepoError
from repo.index import MasterIndex
from repo.pack import read_header
from repo.packread import read_pack_header
from repo.repository import Repository
from repo.snapshot import decode_snapshot
from repo.tree import decode_content_list
from repo.types import BlobId, BlobType, Handle, Kind


@dataclass(slots=True)
class CheckResult:
    errors: list[str] = field(default_factory=list)
    infos: list[str] = field(default_factory=list)
    snapshots: int = 0
    trees: int = 0
    packs: int = 0
    packs_read: int = 0


class Checker:
    """Collects every problem instead of stopping at the first."""

    def __init__(self, repo: Repository, report: Callable[[str], None]) -> None:
        self.repo = repo
        self.report = report
        self.result = CheckResult()
        self._seen_trees: set[BlobId] = set()
        # Check what the repository holds, never a cached copy of it.
        repo.cache = None

    def _error(self, message: str) -> None:
        self.result.errors.append(message)
        self.report(message)

    def check_structure(self) -> None:
        # Snapshots are listed before the index is loaded, so a backup running
        # meanwhile cannot make its new snapshot look like it points at nothing.
        names = [info.name for info in self.repo.backend.list(Kind.SNAPSHOT)]
        self._check_keys()
        index = self.repo.load_index_tolerantly(self._error)
        self._check_packs(index)
        for name in names:
            try:
                plain = self.repo.read_object(Kind.SNAPSHOT, ObjectType.SNAPSHOT, name)
                snap = decode_snapshot(plain, name)
            except RepoError as exc:
                self._error(f"snapshot {name[:8]}: {exc}")
                continue
            self.result.snapshots += 1
            self._check_tree(snap.tree, f"snapshot {name[:8]}")

    def _check_keys(self) -> None:
        for info in self.repo.backend.list(Kind.KEY):
            data = self.repo.backend.read(Handle(Kind.KEY, info.name))
            if sha256_hex(data) != info.name:
                self._error(f"key file {info.name[:8]}: damaged (its bytes do not match its name)")

    def _check_packs(self, index: MasterIndex) -> None:
        stored = {info.name: info.size for info in self.repo.backend.list(Kind.DATA)}
        by_pack: dict[bytes, list[tuple[BlobId, int, int]]] = {}
        for btype in BlobType:
            for blob_id, loc in index.iter_blobs(btype):
                by_pack.setdefault(loc.pack, []).append((blob_id, loc.offset, loc.length))
        indexed = set()
        for pack_id, size in zip(index.pack_ids, index.pack_sizes, strict=True):
            name = pack_id.hex()
            indexed.add(name)
            self.result.packs += 1
            if name not in stored:
                self._error(f"pack {name[:8]}: missing (listed in the index)")
            elif stored[name] != size:
                self._error(f"pack {name[:8]}: size {stored[name]}, the index says {size}")
            else:
                self._check_header(name, size, by_pack.get(pack_id, []))
        for name in sorted(set(stored) - indexed):
            self.result.infos.append(f"pack {name[:8]}: not referenced by any index")

    def _check_header(self, name: str, size: int, blobs: list[tuple[BlobId, int, int]]) -> None:
        """The pack's own header must hold every blob the index places in it."""
        try:
            header = read_pack_header(self.repo, name, size)
        except RepoError as exc:
            self._error(f"{exc} (pack header)")
            return
        places = {(b[0], b[1], b[2]) for b in header.blobs}
        for blob_id, offset, length in blobs:
            if (blob_id, offset, length) not in places:
                self._error(f"pack {name[:8]}: blob {blob_id.hex()[:16]} is not in its header")
                return

    def _check_blob(self, btype: BlobType, blob_id: BlobId, where: str) -> bool:
        if self.repo.index.has(btype, blob_id):
            return True
        self._error(f"{where}: {btype.name.lower()} blob {blob_id.hex()[:16]} is not in the index")
        return False

    def _check_tree(self, tree_id: BlobId, where: str) -> None:
        stack = [(tree_id, where)]
        while stack:
            tid, place = stack.pop()
            if tid in self._seen_trees:
                continue
            self._seen_trees.add(tid)
            if not self._check_blob(BlobType.TREE, tid, place):
                continue
            try:
                nodes = self.repo.load_tree(tid)
            except RepoError as exc:
                self._error(f"tree {tid.hex()[:16]}: {exc}")
                continue
            self.result.trees += 1
            for node in nodes:
                name = f"tree {tid.hex()[:16]} entry {node.name.decode(errors='replace')!r}"
                for blob_id in node.content or []:
                    self._check_blob(BlobType.DATA, blob_id, name)
                for list_id in node.content_lists or []:
                    self._check_list(list_id, name)
                if node.subtree is not None:
                    stack.append((node.subtree, name))

    def _check_list(self, list_id: BlobId, where: str) -> None:
        if not self._check_blob(BlobType.TREE, list_id, where):
            return
        try:
            data = self.repo.load_blob(BlobType.TREE, list_id)
            ids = decode_content_list(data)
        except RepoError as exc:
            self._error(f"{where}: {exc}")
            return
        for blob_id in ids:
            self._check_blob(BlobType.DATA, blob_id, where)

    def read_packs(self, select: Callable[[int, str], bool]) -> None:
        """Download packs chosen by select(position, name) and verify every byte."""
        names = sorted(p.hex() for p in self.repo.index.pack_ids)
        for i, name in enumerate(names):
            if select(i, name):
                self._read_pack(name)

    def _read_pack(self, name: str) -> None:
        self.result.packs_read += 1
        try:
            data = self.repo.backend.read(Handle(Kind.DATA, name))
        except RepoError as exc:
            self._error(f"pack {name[:8]}: {exc}")
            return
        if sha256_hex(data) != name:
            self._error(f"pack {name[:8]}: content does not match its name")
        try:
            blobs = read_header(
                self.repo.master.encryption, data, len(data), name=f"pack {name[:8]}"
            )
        except RepoError as exc:
            self._error(str(exc))
            return
        key, id_key = self.repo.master.encryption, self.repo.master.id_key
        for b in blobs:
            stored = memoryview(data)[b.offset : b.offset + b.length]
            try:
                open_blob(key, id_key, b.btype, b.blob_id, stored)
            except RepoError as exc:
                self._error(f"pack {name[:8]}: {exc}")
