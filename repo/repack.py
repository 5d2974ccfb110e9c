"""repair packs: copy the blobs of damaged packs that still verify into new packs.

Order, as in prune (docs/design.md, prune): new packs, then an index file that lists
them and supersedes every index file naming a damaged pack, then deleting those index
files, and only then the damaged packs. Killed at any step, nothing readable is lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from repo.blob import open_blob
from repo.errors import ObjectNotFound, RepoError
from repo.index import IndexedPack
from repo.pack import PackBuilder
from repo.packread import read_pack_header
from repo.repository import Repository
from repo.types import BlobId, BlobType, Handle, Kind

Record = tuple[BlobId, int, int, int]


class PackNotFound(RepoError):
    """No pack, or more than one, matches the given id prefix."""


def find_pack(repo: Repository, prefix: str, indexed: Iterable[bytes] = ()) -> str:
    """The one pack, stored or indexed, whose id starts with `prefix`."""
    prefix = prefix.lower()
    if not prefix or any(c not in "0123456789abcdef" for c in prefix):
        raise PackNotFound(f"pack {prefix!r}: not a pack id")
    names = {info.name for info in repo.backend.list(Kind.DATA)}
    names.update(p.hex() for p in indexed)
    found = sorted(n for n in names if n.startswith(prefix))
    if not found:
        raise PackNotFound(f"pack {prefix}: no such pack")
    if len(found) > 1:
        raise PackNotFound(f"pack {prefix}: prefix is ambiguous ({len(found)} packs)")
    return found[0]


@dataclass(slots=True)
class Salvage:
    """What repair packs did: blobs copied, blobs lost, files written and removed."""

    saved: int = 0
    lost: list[tuple[BlobType, BlobId]] = field(default_factory=list)
    packs_written: int = 0
    index_files_replaced: int = 0
    packs_removed: list[str] = field(default_factory=list)


class PackSalvager:
    """Reads damaged packs and re-packs every blob that authenticates and matches its id."""

    def __init__(self, repo: Repository, report: Callable[[str], None]) -> None:
        self.repo = repo
        self.report = report
        self.result = Salvage()
        self._builders: dict[BlobType, PackBuilder] = {}
        self._copied: set[BlobId] = set()
        self.new_packs: list[IndexedPack] = []

    def _records(self, name: str, data: bytes, indexed: list[IndexedPack]) -> list[IndexedPack]:
        """The pack's blobs as the index lists them, plus what its header adds if readable."""
        packs = list(indexed)
        try:
            packs.append(read_pack_header(self.repo, name, len(data)))
        except RepoError as exc:
            self.report(f"{exc}; using the index entries only")
        return packs

    def salvage(self, name: str, indexed: list[IndexedPack]) -> list[tuple[BlobType, BlobId]]:
        """Copy the good blobs of one pack; returns the blobs that could not be read."""
        try:
            data = self.repo.backend.read(Handle(Kind.DATA, name))
        except ObjectNotFound:
            self.report(f"pack {name[:8]}: missing; all its blobs are lost")
            data = b""
        bad: dict[tuple[BlobType, BlobId], None] = {}
        good: set[BlobId] = set()
        packs = self._records(name, data, indexed) if data else indexed
        for pack in packs:
            for blob_id, offset, length, raw in pack.blobs:
                if blob_id in good:
                    continue
                if self._copy(pack.btype, (blob_id, offset, length, raw), data):
                    good.add(blob_id)
                    bad.pop((pack.btype, blob_id), None)
                else:
                    bad[(pack.btype, blob_id)] = None
        self.result.saved += len(good)
        return list(bad)

    def _copy(self, btype: BlobType, record: Record, data: bytes) -> bool:
        blob_id, offset, length, raw = record
        stored = data[offset : offset + length]
        try:
            open_blob(self.repo.master.encryption, self.repo.master.id_key, btype, blob_id, stored)
        except RepoError:
            return False
        if blob_id not in self._copied:
            self._copied.add(blob_id)
            builder = self._builders.setdefault(btype, PackBuilder(btype))
            builder.add(blob_id, stored, raw)
            if builder.size >= self.repo.config.pack_size:
                self._finish(btype)
        return True

    def _finish(self, btype: BlobType) -> None:
        builder = self._builders.pop(btype)
        pack_id, data, header_length = builder.finish(self.repo.master.encryption)
        self.repo.backend.write(Handle(Kind.DATA, pack_id.hex()), data)
        blobs = [(b.blob_id, b.offset, b.length, b.raw_length) for b in builder.blobs]
        self.new_packs.append(IndexedPack(pack_id, len(data), header_length, btype, blobs))
        self.result.packs_written += 1

    def flush(self) -> None:
        for btype in list(self._builders):
            self._finish(btype)


def salvage_packs(
    repo: Repository,
    names: Sequence[str],
    report: Callable[[str], None],
    keep_copy: Callable[[str, bytes], None] | None = None,
) -> Salvage:
    """Replace damaged packs by new packs of their readable blobs (restic's repair packs).

    `keep_copy` receives each damaged pack's bytes before anything is changed."""
    files, leftovers = repo.read_index_state()
    damaged = {bytes.fromhex(n) for n in names}
    if keep_copy is not None:
        for name in names:
            try:
                keep_copy(name, repo.backend.read(Handle(Kind.DATA, name)))
            except ObjectNotFound:
                continue
    salvager = PackSalvager(repo, report)
    lost: list[tuple[BlobType, BlobId]] = []
    for name in names:
        pack_id = bytes.fromhex(name)
        indexed = [p for packs in files.values() for p in packs if p.pack_id == pack_id]
        lost.extend(salvager.salvage(name, indexed))
    salvager.flush()
    affected = [f for f, packs in files.items() if any(p.pack_id in damaged for p in packs)]
    kept = [p for f in affected for p in files[f] if p.pack_id not in damaged]
    old = affected + leftovers
    if salvager.new_packs or old:
        repo.write_index(kept + salvager.new_packs, supersedes=old)
    for name in old:
        repo.backend.delete(Handle(Kind.INDEX, name))
    for name in names:
        repo.backend.delete(Handle(Kind.DATA, name))
    result = salvager.result
    result.index_files_replaced = len(old)
    result.packs_removed = list(names)
    elsewhere = {
        (p.btype, b[0])
        for packs in files.values()
        for p in packs
        if p.pack_id not in damaged
        for b in p.blobs
    }
    result.lost = [b for b in dict.fromkeys(lost) if b not in elsewhere]
    return result
