"""The repository: opening with a password, objects, blobs, index, snapshots."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from crypto import (
    AuthenticationError,
    KdfParams,
    KeyFileError,
    KeyInfo,
    MasterKey,
    ObjectType,
    create_keyfile,
    id_hash,
    open_keyfile,
    seal,
    unseal,
)
from crypto import WrongPassword as KeyWrongPassword
from repo.backend import TEMP_MARK, Backend
from repo.backend.local import LocalBackend
from repo.blob import open_blob
from repo.cache import Cache
from repo.config import RepoConfig, decode_config, encode_config
from repo.digest import sha256_hex
from repo.errors import (
    BackendError,
    BlobNotFound,
    DamagedObject,
    ObjectNotFound,
    RepositoryExists,
    RepositoryNotFound,
    WrongPassword,
)
from repo.index import IndexedPack, MasterIndex, decode_index, encode_index
from repo.pack import Spool
from repo.snapshot import Snapshot, decode_snapshot, encode_snapshot
from repo.tree import Node, decode_tree, encode_tree
from repo.types import BlobId, BlobType, Handle, Kind

if TYPE_CHECKING:
    from repo.saver import PackSaver

CONFIG = Handle(Kind.CONFIG, "config")
# docs/design.md, "Local cache": what is kept locally besides tree packs.
_CACHED = (Kind.INDEX, Kind.SNAPSHOT)
# A backup writes an index file after this many packs, or packs holding this many
# blobs, so an interrupted run's packs are found by the next one and the records kept
# until then stay few (docs/design.md, index).
PACKS_PER_INDEX = 16
BLOBS_PER_INDEX = 32768


def _sha256(data: bytes | bytearray | memoryview) -> str:
    return sha256_hex(data)


class Repository:
    """An open repository: its backend, master key and config."""

    def __init__(self, backend: Backend, master: MasterKey, config: RepoConfig) -> None:
        self.backend = backend
        self.master = master
        self.config = config
        self._index: MasterIndex | None = None
        self._saver: PackSaver | None = None
        self._unindexed: list[IndexedPack] = []
        self._saved: dict[BlobType, set[BlobId]] = {t: set() for t in BlobType}
        self.is_dry_run = False
        self.cache: Cache | None = None
        self.on_damaged_snapshot: Callable[[str], None] | None = None
        self.upload_threads = 1  # more for remote repositories (--connections)
        # Called before an index or a snapshot is written: raises when our lock is lost.
        self.lock_guard: Callable[[], None] | None = None
        # The key file that opened the repository (repo/keys.py refuses to remove it).
        self.key_name: str | None = None

    # -- opening ---------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        backend: Backend,
        password: bytes,
        info: KeyInfo,
        config: RepoConfig,
        kdf: KdfParams | None = None,
    ) -> Repository:
        """Create a new repository with one key file."""
        if backend.exists():
            raise RepositoryExists(f"{backend.location}: a repository already exists there")
        if any(True for _ in backend.list(Kind.KEY)):
            raise RepositoryExists(f"{backend.location}: holds key files but no config")
        master = MasterKey.generate()
        keyfile = create_keyfile(master, password, info, kdf or KdfParams())
        key_name = _sha256(keyfile)
        backend.write(Handle(Kind.KEY, key_name), keyfile)
        repo = cls(backend, master, config)
        repo.key_name = key_name
        backend.write(CONFIG, seal(master.encryption, ObjectType.CONFIG, encode_config(config)))
        return repo

    @classmethod
    def open(cls, backend: Backend, password: bytes) -> Repository:
        """Open with the first key file the password unlocks."""
        if not backend.exists():
            raise RepositoryNotFound(f"{backend.location}: no repository there (run init first)")
        key_name, master = cls._unlock(backend, password)
        return cls.open_with_key(backend, key_name, master)

    @classmethod
    def open_with_key(cls, backend: Backend, key_name: str, master: MasterKey) -> Repository:
        """Open with a master key already unlocked, as a command that opens the repository
        twice does (forget --prune): Argon2id runs once per command."""
        raw = backend.read(CONFIG)
        try:
            plain = unseal(master.encryption, ObjectType.CONFIG, raw, name="config")
        except AuthenticationError as exc:
            raise DamagedObject(str(exc)) from exc
        repo = cls(backend, master, decode_config(plain))
        repo.key_name = key_name
        return repo

    @staticmethod
    def _unlock(backend: Backend, password: bytes) -> tuple[str, MasterKey]:
        damaged: list[str] = []
        for info in backend.list(Kind.KEY):
            data = backend.read(Handle(Kind.KEY, info.name))
            if _sha256(data) != info.name:
                damaged.append(info.name)
                continue
            try:
                return info.name, open_keyfile(data, password)[0]
            except KeyWrongPassword:
                continue
            except KeyFileError as exc:
                raise DamagedObject(f"key file {info.name[:8]}: {exc}") from exc
        if damaged:
            raise DamagedObject(
                f"key file {damaged[0][:8]}: damaged (its bytes do not match its name)"
            )
        raise WrongPassword("wrong password or no key file matches")

    # -- objects ---------------------------------------------------------------------

    def write_object(self, kind: Kind, otype: ObjectType, plain: bytes) -> str:
        """Seal and store an object under the SHA-256 of its stored bytes."""
        data = seal(self.master.encryption, otype, plain)
        name = _sha256(data)
        self.backend.write(Handle(kind, name), data)
        return name

    def read_object(self, kind: Kind, otype: ObjectType, name: str) -> bytes:
        """Read, check against its name, and open a sealed object."""
        handle = Handle(kind, name)
        cached = self.cache.get(handle) if self.cache and kind in _CACHED else None
        data = cached if cached is not None else self.backend.read(handle)
        if cached is None and self.cache and kind in _CACHED:
            self.cache.put(handle, data)
        if _sha256(data) != name:
            raise DamagedObject(f"{handle}: content does not match its name")
        try:
            return unseal(self.master.encryption, otype, data, name=str(handle))
        except AuthenticationError as exc:
            raise DamagedObject(str(exc)) from exc

    # -- snapshots -------------------------------------------------------------------

    def list_snapshots(self, *, is_strict: bool = False, id_prefix: str = "") -> list[Snapshot]:
        """Every snapshot. A damaged one raises when strict (prune must not lose the data
        it references) or when no `on_damaged_snapshot` is set; else it is reported and
        left out, so one bad snapshot does not stop work on the others."""
        snaps = []
        infos = list(self.backend.list(Kind.SNAPSHOT))
        if self.cache:
            self.cache.retain(Kind.SNAPSHOT, (i.name for i in infos))
        # A snapshot named by id costs one read, however long the history.
        infos = [i for i in infos if i.name.startswith(id_prefix)]
        for info in infos:
            try:
                plain = self.read_object(Kind.SNAPSHOT, ObjectType.SNAPSHOT, info.name)
                snaps.append(decode_snapshot(plain, info.name))
            except ObjectNotFound:
                continue  # forgotten by another process after we listed it
            except DamagedObject as exc:
                if is_strict or self.on_damaged_snapshot is None:
                    raise
                self.on_damaged_snapshot(f"{exc}; skipping it (run check)")
        return snaps

    def delete_snapshot(self, snap_id: str) -> None:
        """Remove a snapshot object (never once our lock may be taken for stale)."""
        if self.lock_guard is not None:
            self.lock_guard()
        self.backend.delete(Handle(Kind.SNAPSHOT, snap_id))

    def replace_snapshot(self, old: Snapshot, new: Snapshot, *, is_forget: bool) -> str:
        """Store a rewritten snapshot (its trees flushed first); drop the old one if asked."""
        self.flush()
        new_id = self.save_snapshot(new)
        if is_forget:
            self.delete_snapshot(old.id)
        return new_id

    def save_snapshot(self, snap: Snapshot) -> str:
        if self.lock_guard is not None:
            self.lock_guard()
        snap.id = self.write_object(Kind.SNAPSHOT, ObjectType.SNAPSHOT, encode_snapshot(snap))
        return snap.id

    # -- index -----------------------------------------------------------------------

    def load_index_tolerantly(self, on_damage: Callable[[str], None]) -> MasterIndex:
        """Load the index, reporting damaged index files instead of stopping (check)."""
        self._index = self._load_index(on_damage)
        return self._index

    def use_index(self, index: MasterIndex) -> None:
        """Adopt an index loaded elsewhere (prune loads its own)."""
        self._index = index

    @property
    def index(self) -> MasterIndex:
        """The index, loaded on first use (a no-change backup never needs it)."""
        if self._index is None:
            self._index = self._load_index()
        return self._index

    def read_index_files(self) -> dict[str, list[IndexedPack]]:
        """The packs of every index file in force (superseded files left out)."""
        return self.read_index_state()[0]

    def _index_files(
        self, on_damage: Callable[[str], None] | None
    ) -> Iterator[tuple[str, list[IndexedPack], list[bytes]]]:
        """(name, packs, superseded index ids) of every index file, decoded one at a
        time. A damaged one raises, unless `on_damage` is given (check): then it is
        reported there and left out."""
        infos = list(self.backend.list(Kind.INDEX))
        if self.cache:
            self.cache.retain(Kind.INDEX, (i.name for i in infos))
        for info in infos:
            try:
                plain = self.read_object(Kind.INDEX, ObjectType.INDEX, info.name)
                packs, supersedes = decode_index(plain, name=f"index {info.name[:8]}")
            except ObjectNotFound:
                continue  # removed by a concurrent prune after we listed it
            except DamagedObject as exc:
                if on_damage is None:
                    raise
                on_damage(str(exc))
                continue
            yield info.name, packs, supersedes

    def read_index_state(
        self, on_damage: Callable[[str], None] | None = None
    ) -> tuple[dict[str, list[IndexedPack]], list[str]]:
        """(the packs of every index file in force, superseded index files still stored).

        A damaged index file raises, unless `on_damage` is given (check): then it is
        reported there and left out."""
        files: dict[str, list[IndexedPack]] = {}
        superseded: set[str] = set()
        for name, packs, supersedes in self._index_files(on_damage):
            files[name] = packs
            superseded.update(s.hex() for s in supersedes)
        in_force = {name: packs for name, packs in files.items() if name not in superseded}
        return in_force, sorted(superseded & files.keys())

    def _load_index(self, on_damage: Callable[[str], None] | None = None) -> MasterIndex:
        # Streamed file by file: decoded index files take several times the index's own
        # memory, and holding them all at once left that much resident after the load.
        superseded: set[str] = set()
        loaded: set[str] = set()
        tree_packs: list[str] = []

        def packs() -> Iterator[IndexedPack]:
            for name, file_packs, supersedes in self._index_files(on_damage):
                loaded.add(name)
                superseded.update(s.hex() for s in supersedes)
                for pack in file_packs:
                    if pack.btype is BlobType.TREE:
                        tree_packs.append(pack.pack_id.hex())
                    yield pack

        index = MasterIndex()
        index.load(packs())
        if superseded & loaded:
            # A replaced index file is still stored (a prune stopped before deleting
            # it): its packs may be gone, so load again without it. Rare.
            index = MasterIndex()
            files = self.read_index_state(on_damage)[0]
            in_force = [p for file_packs in files.values() for p in file_packs]
            index.load(in_force)
            tree_packs = [p.pack_id.hex() for p in in_force if p.btype is BlobType.TREE]
        if self.cache:
            self.cache.retain(Kind.DATA, tree_packs)
        return index

    def write_index(self, packs: list[IndexedPack], supersedes: Sequence[str] = ()) -> str:
        """Store one index file; it names the index files it replaces."""
        if self.lock_guard is not None:
            self.lock_guard()
        plain = encode_index(packs, [bytes.fromhex(s) for s in supersedes])
        return self.write_object(Kind.INDEX, ObjectType.INDEX, plain)

    # -- blobs -----------------------------------------------------------------------

    def load_blob(self, btype: BlobType, blob_id: BlobId) -> bytes:
        loc = self.index.lookup(btype, blob_id)
        if loc is None:
            raise BlobNotFound(f"{btype.name.lower()} blob {blob_id.hex()[:16]}: not in index")
        handle = Handle(Kind.DATA, loc.pack.hex())
        stored = None
        if self.cache and btype is BlobType.TREE:
            stored = self.cache.get_range(handle, loc.offset, loc.length)
            if stored is None:
                # Tree packs are small and read again and again: keep them whole.
                pack = self.backend.read(handle)
                if _sha256(pack) == handle.name:
                    self.cache.put(handle, pack)
                stored = pack[loc.offset : loc.offset + loc.length]
        if stored is None:
            stored = self.backend.read(handle, loc.offset, loc.length)
        return open_blob(self.master.encryption, self.master.id_key, btype, blob_id, stored)

    def blob_id(self, data: bytes | memoryview) -> BlobId:
        return id_hash(self.master.id_key, data)

    def has_blob(self, btype: BlobType, blob_id: BlobId) -> bool:
        return blob_id in self._saved[btype] or self.index.has(btype, blob_id)

    def save_blob(self, btype: BlobType, data: bytes) -> tuple[BlobId, bool]:
        """Store a blob unless the repository (or this run) has it already."""
        blob_id = self.blob_id(data)
        if self.has_blob(btype, blob_id):
            return blob_id, False
        self._saved[btype].add(blob_id)
        if not self.is_dry_run:
            self._get_saver().add(btype, blob_id, data)
        return blob_id, True

    def save_sealed_blob(self, btype: BlobType, blob_id: BlobId, sealed: bytes, size: int) -> bool:
        """save_blob for a blob named, compressed and sealed already, of `size` plaintext
        bytes; whether it was new."""
        if self.has_blob(btype, blob_id):
            return False
        self._saved[btype].add(blob_id)
        if not self.is_dry_run:
            self._get_saver().add_sealed(btype, blob_id, sealed, size)
        return True

    def _get_saver(self) -> PackSaver:
        if self._saver is None:
            # Imported here: only writers need its thread pools (and the logging module
            # concurrent.futures brings), and then only after the key is derived.
            from repo.saver import PackSaver  # noqa: PLC0415

            self._saver = PackSaver(
                self.master.encryption,
                self.config.compression_level,
                self.config.pack_size,
                self._spool,
                self._store_pack,
                self._pack_stored,
                self.upload_threads,
            )
        return self._saver

    def _spool(self) -> Spool:
        """A new, empty file for a pack being written. In a local repository, a file
        in the repository that storing renames into place; elsewhere an anonymous
        in-memory file, uploaded when full (nothing lands in a shared folder)."""
        if not isinstance(self.backend, LocalBackend):
            return Spool(os.memfd_create("hutch-pack", os.MFD_CLOEXEC), None)
        path = os.path.join(self.backend.spool_dir(), f"{TEMP_MARK}pack-{os.urandom(8).hex()}")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise BackendError(f"{path}: {exc.strerror or exc}") from exc
        return Spool(fd, path)

    def _store_pack(self, pack_id: bytes, spool: Spool, btype: BlobType) -> None:
        handle = Handle(Kind.DATA, pack_id.hex())
        try:
            if spool.path is not None and isinstance(self.backend, LocalBackend):
                self.backend.adopt(handle, spool.fd, spool.path)
                return
            size = os.fstat(spool.fd).st_size
            data = os.pread(spool.fd, size, 0)
        finally:
            spool.discard()
        self.backend.write(handle, data)
        if self.cache and btype is BlobType.TREE:
            self.cache.put(handle, data)

    def _pack_stored(self, pack: IndexedPack) -> None:
        self.index.add_pack(pack)
        # The index has them now: _saved keeps only blobs still on their way to a pack,
        # not every blob of the run.
        self._saved[pack.btype].difference_update(blob[0] for blob in pack.blobs)
        self._unindexed.append(pack)
        blobs = sum(len(p.blobs) for p in self._unindexed)  # at most 16 packs
        if len(self._unindexed) >= PACKS_PER_INDEX or blobs >= BLOBS_PER_INDEX:
            self._write_index()

    def _write_index(self) -> None:
        if self._unindexed:
            self.write_index(self._unindexed)
            self._unindexed = []

    @property
    def bytes_stored(self) -> int:
        return self._saver.bytes_stored if self._saver else 0

    def flush(self) -> None:
        """Store every pending blob and index every stored pack."""
        if self._saver is not None:
            self._saver.flush()
        self._write_index()

    def close(self) -> None:
        if self._saver is not None:
            self._saver.close()
            self._saver = None
        self.backend.close()

    # -- trees -----------------------------------------------------------------------

    def load_tree(self, tree_id: BlobId) -> list[Node]:
        data = self.load_blob(BlobType.TREE, tree_id)
        return decode_tree(data, name=f"tree {tree_id.hex()[:16]}")

    def save_tree(self, nodes: list[Node]) -> tuple[BlobId, bool]:
        return self.save_blob(BlobType.TREE, encode_tree(nodes))


@contextlib.contextmanager
def closing(repo: Repository) -> Iterator[Repository]:
    try:
        yield repo
    finally:
        repo.close()
