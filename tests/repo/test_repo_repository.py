"""Tests for repo.repository: opening, blobs, packs and index files, and a backup round trip."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MakeRepo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import KEY_INFO, PASSWORD, REPO_ID, seeded

from chunker import ChunkerParams
from crypto import CHEAP, ObjectType
from repo import repository, saver
from repo.backend.memory import MemoryBackend
from repo.backup import Archiver, BackupOptions, QuietReporter
from repo.check import Checker
from repo.config import RepoConfig
from repo.errors import (
    BlobNotFound,
    DamagedObject,
    RepositoryExists,
    RepositoryNotFound,
    WrongPassword,
)
from repo.index import IndexedPack, encode_index
from repo.pack import PackedBlob, read_header
from repo.pattern import split_path
from repo.repository import PACKS_PER_INDEX, Repository
from repo.restore import RestoreOptions, Restorer
from repo.snapshot import Snapshot
from repo.tree import Node
from repo.types import BlobType, FileInfo, Handle, Kind
from repo.walk import file_content, find_node, walk

TINY_CHUNKS = ChunkerParams(min_size=64, avg_size=256, max_size=1024)
OLD_NS = 1_600_000_000_123_456_789


def _open(backend: MemoryBackend, password: bytes = PASSWORD) -> Repository:
    return Repository.open(backend, password)


def _headers(repo: Repository) -> dict[str, list[PackedBlob]]:
    """Every pack in the backend with its decoded header."""
    out = {}
    for info in repo.backend.list(Kind.DATA):
        data = repo.backend.read(Handle(Kind.DATA, info.name))
        out[info.name] = read_header(repo.master.encryption, data, len(data), name=info.name)
    return out


# -- opening -------------------------------------------------------------------------


def test_init_then_open(make_repo: MakeRepo) -> None:
    """A new repository opens with its password and has the same keys and config."""
    backend = MemoryBackend()
    created = make_repo(backend, pack_size=12345)
    opened = _open(backend)
    assert opened.config == created.config
    assert opened.config.repo_id == REPO_ID
    assert opened.config.pack_size == 12345
    assert opened.master == created.master


def test_init_writes_config_and_one_key_file(make_repo: MakeRepo) -> None:
    """init stores the config and one key file named by the SHA-256 of its bytes."""
    backend = MemoryBackend()
    make_repo(backend)
    assert backend.exists()
    (key,) = backend.list(Kind.KEY)
    assert hashlib.sha256(backend.read(Handle(Kind.KEY, key.name))).hexdigest() == key.name


def test_wrong_password(make_repo: MakeRepo) -> None:
    """A password no key file opens raises repo.errors.WrongPassword."""
    backend = MemoryBackend()
    make_repo(backend)
    with pytest.raises(WrongPassword):
        _open(backend, b"not the password")


def test_damaged_key_file_is_not_wrong_password(make_repo: MakeRepo) -> None:
    """A key file whose bytes changed under its old name is DamagedObject, not WrongPassword."""
    backend = MemoryBackend()
    make_repo(backend)
    (key,) = backend.list(Kind.KEY)
    handle = Handle(Kind.KEY, key.name)
    data = bytearray(backend.read(handle))
    data[len(data) // 2] ^= 0x01
    backend.delete(handle)
    backend.write(handle, bytes(data))
    with pytest.raises(DamagedObject, match=f"key file {key.name[:8]}"):
        _open(backend)


def test_second_key_file_still_opens(make_repo: MakeRepo) -> None:
    """A damaged key file does not stop another, intact key file from opening."""
    backend = MemoryBackend()
    make_repo(backend)
    (key,) = backend.list(Kind.KEY)
    good = backend.read(Handle(Kind.KEY, key.name))
    bad = Handle(Kind.KEY, "00" * 32)
    backend.write(bad, good[:-1] + bytes([good[-1] ^ 1]))
    assert _open(backend).config.repo_id == REPO_ID


def test_open_empty_backend() -> None:
    """Opening where there is no repository raises RepositoryNotFound."""
    with pytest.raises(RepositoryNotFound):
        _open(MemoryBackend())


def test_init_twice(make_repo: MakeRepo) -> None:
    """init where a repository exists raises RepositoryExists."""
    backend = MemoryBackend()
    make_repo(backend)
    with pytest.raises(RepositoryExists):
        make_repo(backend)


def test_init_over_orphaned_key_files() -> None:
    """init refuses a location holding key files even without a config."""
    backend = MemoryBackend()
    backend.write(Handle(Kind.KEY, "aa" * 32), b"a key file")
    with pytest.raises(RepositoryExists):
        Repository.init(backend, PASSWORD, KEY_INFO, RepoConfig(repo_id=REPO_ID), kdf=CHEAP)


def test_damaged_config(make_repo: MakeRepo) -> None:
    """A config object that fails authentication raises DamagedObject."""
    backend = MemoryBackend()
    make_repo(backend)
    handle = Handle(Kind.CONFIG, "config")
    config = bytearray(backend.read(handle))
    config[-1] ^= 1
    backend.objects[handle] = (bytes(config), 0.0)
    with pytest.raises(DamagedObject, match="config"):
        _open(backend)


# -- objects and blobs ---------------------------------------------------------------


def test_write_and_read_object(repo: Repository) -> None:
    """An object is stored under the SHA-256 of its stored bytes and reads back."""
    name = repo.write_object(Kind.SNAPSHOT, ObjectType.SNAPSHOT, b"plain")
    stored = repo.backend.read(Handle(Kind.SNAPSHOT, name))
    assert hashlib.sha256(stored).hexdigest() == name
    assert b"plain" not in stored
    assert repo.read_object(Kind.SNAPSHOT, ObjectType.SNAPSHOT, name) == b"plain"


def test_read_object_not_matching_name(repo: Repository) -> None:
    """An object whose bytes do not hash to its name raises DamagedObject naming it."""
    name = repo.write_object(Kind.INDEX, ObjectType.INDEX, b"x")
    handle = Handle(Kind.INDEX, name)
    repo.backend.delete(handle)
    repo.backend.write(handle, b"other bytes of any length")
    with pytest.raises(DamagedObject, match=f"index/{name}"):
        repo.read_object(Kind.INDEX, ObjectType.INDEX, name)


def test_read_object_of_wrong_type(repo: Repository) -> None:
    """An object read as another object type raises DamagedObject."""
    name = repo.write_object(Kind.INDEX, ObjectType.INDEX, b"x")
    with pytest.raises(DamagedObject):
        repo.read_object(Kind.INDEX, ObjectType.SNAPSHOT, name)


def test_save_flush_load(repo: Repository) -> None:
    """A saved blob can be loaded after flush()."""
    blob_id, is_new = repo.save_blob(BlobType.DATA, b"hello blob")
    assert is_new
    assert blob_id == repo.blob_id(b"hello blob")
    repo.flush()
    assert repo.load_blob(BlobType.DATA, blob_id) == b"hello blob"


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    blobs=st.lists(st.tuples(st.sampled_from(BlobType), st.binary(max_size=3000)), max_size=25),
    pack_size=st.sampled_from([512, 4096, 1 << 20]),
)
def test_save_load_round_trip(blobs: list[tuple[BlobType, bytes]], pack_size: int) -> None:
    """Every saved blob loads back, from this handle and from a fresh open."""
    backend = MemoryBackend()
    cfg = RepoConfig(repo_id=REPO_ID, pack_size=pack_size)
    repo = Repository.init(backend, PASSWORD, KEY_INFO, cfg, kdf=CHEAP)
    try:
        ids = [(btype, repo.save_blob(btype, data)[0], data) for btype, data in blobs]
        repo.flush()
        fresh = _open(backend)
        for btype, blob_id, data in ids:
            assert repo.load_blob(btype, blob_id) == data
            assert fresh.load_blob(btype, blob_id) == data
    finally:
        repo.close()


def test_same_blob_is_stored_once(repo: Repository) -> None:
    """Saving identical data twice stores it once; the second save reports it as known."""
    first = repo.save_blob(BlobType.DATA, b"same data")
    second = repo.save_blob(BlobType.DATA, b"same data")
    repo.flush()
    third = repo.save_blob(BlobType.DATA, b"same data")
    repo.flush()
    assert first == (second[0], True)
    assert second[1] is False
    assert third == (first[0], False)
    records = [b for blobs in _headers(repo).values() for b in blobs]
    assert [b.blob_id for b in records] == [first[0]]


def test_blobs_in_stored_packs_are_not_remembered_twice(make_repo: MakeRepo) -> None:
    """Once a pack is stored and indexed, its blobs are found through the index: the
    run's own set of saved blobs keeps only those still on their way, so it does not
    grow with the backup. A blob saved again after that is still not stored again."""
    repo = make_repo(pack_size=4096, compression_level=0)
    rng = seeded(11)
    datas = [rng.randbytes(1500) for _ in range(40)]
    for data in datas:
        repo.save_blob(BlobType.DATA, data)
    remembered = len(repo._saved[BlobType.DATA])
    repo.flush()
    assert remembered < 20  # packs of about three blobs were stored on the way
    assert repo._saved[BlobType.DATA] == set()
    assert all(repo.save_blob(BlobType.DATA, data)[1] is False for data in datas)
    repo.flush()
    records = [b.blob_id for blobs in _headers(repo).values() for b in blobs]
    assert sorted(records) == sorted(repo.blob_id(d) for d in datas)


def test_an_index_file_is_written_every_blobs_per_index_blobs(
    make_repo: MakeRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Packs of many small blobs are indexed by blob count, before PACKS_PER_INDEX packs."""
    monkeypatch.setattr(repository, "BLOBS_PER_INDEX", 30)
    monkeypatch.setattr(saver, "MAX_PACK_BLOBS", 10)
    backend = MemoryBackend()
    repo = make_repo(backend)
    for i in range(95):
        repo.save_blob(BlobType.DATA, b"small blob %d" % i)
    # Written while saving, not only at the end (the newest packs may still be on
    # their way to storage).
    assert len(list(backend.list(Kind.INDEX))) >= 2
    repo.flush()
    assert len(list(backend.list(Kind.INDEX))) == 4
    assert len(list(backend.list(Kind.DATA))) == 10


def test_same_data_as_tree_and_data_is_two_blobs(repo: Repository) -> None:
    """The same bytes saved as a data blob and as a tree blob are two blobs."""
    data_id, _ = repo.save_blob(BlobType.DATA, b"[1, []]")
    tree_id, is_new = repo.save_blob(BlobType.TREE, b"[1, []]")
    repo.flush()
    assert data_id == tree_id
    assert is_new
    assert repo.load_blob(BlobType.TREE, tree_id) == repo.load_blob(BlobType.DATA, data_id)


def test_fresh_open_finds_blobs_through_index(make_repo: MakeRepo) -> None:
    """After flush, a freshly opened repository finds every blob through the index files."""
    backend = MemoryBackend()
    repo = make_repo(backend)
    saved = {repo.save_blob(BlobType.DATA, os.urandom(100))[0] for _ in range(10)}
    repo.flush()
    assert list(backend.list(Kind.INDEX))
    fresh = _open(backend)
    for blob_id in saved:
        assert fresh.index.has(BlobType.DATA, blob_id)
        assert len(fresh.load_blob(BlobType.DATA, blob_id)) == 100
    assert (
        fresh.save_blob(BlobType.DATA, fresh.load_blob(BlobType.DATA, next(iter(saved))))[1]
        is False
    )


def test_unflushed_blobs_are_not_visible_to_others(make_repo: MakeRepo) -> None:
    """Blobs saved but not flushed are not in any index file yet."""
    backend = MemoryBackend()
    repo = make_repo(backend)
    blob_id, _ = repo.save_blob(BlobType.DATA, b"pending")
    assert not _open(backend).index.has(BlobType.DATA, blob_id)


def test_superseded_index_files_are_ignored(make_repo: MakeRepo) -> None:
    """Packs listed only in an index file that a later one supersedes are not loaded."""
    backend = MemoryBackend()
    repo = make_repo(backend)
    old_pack = IndexedPack(b"\x01" * 32, 500, 100, BlobType.DATA, [(b"\x0a" * 32, 0, 100, 90)])
    new_pack = IndexedPack(b"\x02" * 32, 500, 100, BlobType.DATA, [(b"\x0b" * 32, 0, 100, 90)])
    old = repo.write_object(Kind.INDEX, ObjectType.INDEX, encode_index([old_pack]))
    superseding = encode_index([new_pack], supersedes=[bytes.fromhex(old)])
    repo.write_object(Kind.INDEX, ObjectType.INDEX, superseding)
    index = _open(backend).index
    assert not index.has(BlobType.DATA, b"\x0a" * 32)
    assert index.has(BlobType.DATA, b"\x0b" * 32)
    assert index.pack_ids == [b"\x02" * 32]


class _VanishingIndexBackend(MemoryBackend):
    """Lists one index file that a concurrent prune has already deleted."""

    def list(self, kind: Kind) -> Iterator[FileInfo]:
        yield from super().list(kind)
        if kind is Kind.INDEX:
            yield FileInfo("ee" * 32, 100)


def test_index_file_gone_after_listing_is_skipped(make_repo: MakeRepo) -> None:
    """An index file that is listed but gone when read is skipped, not fatal."""
    backend = _VanishingIndexBackend()
    repo = make_repo(backend)
    blob_id, _ = repo.save_blob(BlobType.DATA, b"survives")
    repo.flush()
    assert _open(backend).load_blob(BlobType.DATA, blob_id) == b"survives"


def test_damaged_index_file_is_reported(make_repo: MakeRepo) -> None:
    """An index file whose bytes do not match its name raises DamagedObject naming it."""
    backend = MemoryBackend()
    repo = make_repo(backend)
    repo.save_blob(BlobType.DATA, b"x")
    repo.flush()
    (info,) = backend.list(Kind.INDEX)
    handle = Handle(Kind.INDEX, info.name)
    data = bytearray(backend.read(handle))
    data[40] ^= 1
    backend.objects[handle] = (bytes(data), 0.0)
    with pytest.raises(DamagedObject, match=info.name[:8]):
        _ = _open(backend).index


def test_load_unknown_blob(repo: Repository) -> None:
    """Loading a blob the index does not know raises BlobNotFound naming it."""
    with pytest.raises(BlobNotFound, match="data blob 7777777777777777"):
        repo.load_blob(BlobType.DATA, b"\x77" * 32)


def test_load_blob_from_damaged_pack(make_repo: MakeRepo) -> None:
    """A blob whose stored bytes were altered raises DamagedObject on load."""
    backend = MemoryBackend()
    repo = make_repo(backend)
    blob_id, _ = repo.save_blob(BlobType.DATA, b"will be damaged" * 10)
    repo.flush()
    ((name, (record,)),) = _headers(repo).items()
    handle = Handle(Kind.DATA, name)
    pack = bytearray(backend.read(handle))
    pack[record.offset + 30] ^= 0x80
    backend.objects[handle] = (bytes(pack), 0.0)
    with pytest.raises(DamagedObject, match=blob_id.hex()[:16]):
        _open(backend).load_blob(BlobType.DATA, blob_id)


def test_many_packs_are_all_indexed(make_repo: MakeRepo) -> None:
    """With a small pack size every pack written is listed in some index file."""
    backend = MemoryBackend()
    repo = make_repo(backend, pack_size=4096, compression_level=0)
    rng = seeded(7)
    saved = [repo.save_blob(BlobType.DATA, rng.randbytes(1500))[0] for _ in range(120)]
    repo.flush()
    packs = {info.name: info.size for info in backend.list(Kind.DATA)}
    assert len(packs) > PACKS_PER_INDEX
    assert len(list(backend.list(Kind.INDEX))) >= 2
    fresh = _open(backend)
    index = fresh.index
    assert {p.hex(): s for p, s in zip(index.pack_ids, index.pack_sizes, strict=True)} == packs
    for blob_id in saved:
        loc = index.lookup(BlobType.DATA, blob_id)
        assert loc is not None
        assert loc.pack.hex() in packs
    assert all(size < 4096 + 1600 + 200 for size in packs.values())


def test_blob_larger_than_pack_size_gets_own_pack(make_repo: MakeRepo) -> None:
    """A blob bigger than the pack size is stored alone in its pack."""
    backend = MemoryBackend()
    repo = make_repo(backend, pack_size=1024)
    big, _ = repo.save_blob(BlobType.DATA, os.urandom(5000))
    repo.flush()
    (blobs,) = [b for b in _headers(repo).values() if any(r.blob_id == big for r in b)]
    assert [r.blob_id for r in blobs] == [big]


def test_blob_types_never_share_a_pack(make_repo: MakeRepo) -> None:
    """Each pack holds blobs of one type only, and the index agrees with the headers."""
    backend = MemoryBackend()
    repo = make_repo(backend, pack_size=2048)
    rng = seeded(3)
    for i in range(80):
        btype = BlobType.TREE if i % 3 == 0 else BlobType.DATA
        repo.save_blob(btype, rng.randbytes(rng.randrange(10, 700)))
    repo.flush()
    headers = _headers(repo)
    assert len(headers) > 4
    index = _open(backend).index
    for name, records in headers.items():
        types = {r.btype for r in records}
        assert len(types) == 1, name
        (btype,) = types
        for r in records:
            loc = index.lookup(btype, r.blob_id)
            assert loc is not None
            assert (loc.pack.hex(), loc.offset, loc.length) == (name, r.offset, r.length)


def test_trees_round_trip(repo: Repository) -> None:
    """save_tree and load_tree round-trip a directory's entries."""
    nodes = [
        Node(b"b", "file", size=3, content=[b"\x01" * 32]),
        Node(b"a", "dir", subtree=b"\x02" * 32),
    ]
    tree_id, _ = repo.save_tree(nodes)
    repo.flush()
    assert repo.load_tree(tree_id) == sorted(nodes, key=lambda n: n.name)


def test_snapshots_round_trip(make_repo: MakeRepo) -> None:
    """A saved snapshot is listed by a fresh open with its id and fields."""
    backend = MemoryBackend()
    repo = make_repo(backend)
    snap = Snapshot(OLD_NS, 0, b"\x01" * 32, [b"/x"], "host", "user", tags=["t"])
    name = repo.save_snapshot(snap)
    assert snap.id == name
    (listed,) = _open(backend).list_snapshots()
    assert listed == snap


def test_a_snapshot_named_by_id_is_the_only_one_read(make_repo: MakeRepo) -> None:
    """list_snapshots(id_prefix=...) reads only the matching snapshot files: restoring a
    snapshot by id costs the same however many others the repository holds."""
    backend = MemoryBackend()
    repo = make_repo(backend)
    names = [
        repo.save_snapshot(Snapshot(OLD_NS + i, 0, bytes([i]) * 32, [b"/x"], "h", "u"))
        for i in range(1, 6)
    ]
    reads: list[Handle] = []
    original = backend.read

    def counting(handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        reads.append(handle)
        return original(handle, offset, length)

    backend.read = counting  # type: ignore[method-assign]
    (found,) = repo.list_snapshots(id_prefix=names[2][:8])
    assert found.id == names[2]
    assert [h for h in reads if h.kind is Kind.SNAPSHOT] == [Handle(Kind.SNAPSHOT, names[2])]
    assert len(repo.list_snapshots()) == 5


def test_dry_run_stores_nothing(repo: Repository) -> None:
    """In a dry run save_blob reports new blobs but writes no pack."""
    repo.is_dry_run = True
    assert repo.save_blob(BlobType.DATA, b"dry")[1] is True
    assert repo.save_blob(BlobType.DATA, b"dry")[1] is False
    repo.flush()
    assert list(repo.backend.list(Kind.DATA)) == []


# -- backup and restore in-process ------------------------------------------------------


class _Reporter:
    def __init__(self) -> None:
        self.errors: list[tuple[object, str]] = []

    def bytes_written(self, n: int) -> None:
        return None

    def error(self, path: object, message: str) -> None:
        self.errors.append((path, message))

    def planned(self, path: str, action: str) -> None:
        return None


def _make_source(root: Path) -> None:
    rng = seeded(42)
    root.mkdir()
    (root / "text.txt").write_text("hello hutch\n" * 50)
    (root / "random.bin").write_bytes(rng.randbytes(20_000))
    (root / "repeated.bin").write_bytes(b"0123456789abcdef" * 2000)
    (root / "empty").write_bytes(b"")
    (root / "secret").write_bytes(b"mode 600")
    (root / "secret").chmod(0o600)
    sub = root / "sub" / "deeper"
    sub.mkdir(parents=True)
    (sub / "inner.txt").write_bytes(b"inner")
    os.mkdir(os.path.join(os.fsencode(root), b"caf\xe9"))
    with open(os.path.join(os.fsencode(root), b"caf\xe9", b"\xff\xfe.bin"), "wb") as f:
        f.write(rng.randbytes(3000))
    os.symlink("text.txt", root / "link")
    os.symlink("/nonexistent/target", root / "dangling")
    os.link(root / "text.txt", root / "hardlink")
    os.mkfifo(root / "fifo")
    (root / "sub" / "empty-dir").mkdir()
    for i, path in enumerate(sorted(_walk(os.fsencode(root)), key=len, reverse=True)):
        os.utime(path, ns=(OLD_NS, OLD_NS + i * 1000), follow_symlinks=False)


def _walk(root: bytes) -> Iterator[bytes]:
    yield root
    for entry in os.scandir(root):
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(entry.path)
        else:
            yield entry.path


def _describe(root: bytes) -> dict[bytes, tuple[object, ...]]:
    """What a restore must reproduce, per relative path."""
    out: dict[bytes, tuple[object, ...]] = {}
    for path in _walk(root):
        st = os.lstat(path)
        kind = stat.S_IFMT(st.st_mode)
        if stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                extra: object = hashlib.sha256(f.read()).hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            extra = os.readlink(path)
        else:
            extra = None
        out[os.path.relpath(path, root)] = (kind, stat.S_IMODE(st.st_mode), st.st_mtime_ns, extra)
    return out


def _backup(repo: Repository, src: Path, parent: Snapshot | None = None) -> Archiver:
    opts = BackupOptions(
        paths=[os.fsencode(src)], hostname="host", username="user", time_ns=OLD_NS, parent=parent
    )
    archiver = Archiver(repo, opts, QuietReporter())
    archiver.run()
    return archiver


@pytest.fixture
def backed_up(make_repo: MakeRepo, tmp_path: Path) -> tuple[MemoryBackend, Path, Snapshot]:
    """A source folder backed up into a small-pack memory repository."""
    backend = MemoryBackend()
    repo = make_repo(backend, pack_size=4096, chunker=TINY_CHUNKS)
    src = tmp_path / "src"
    _make_source(src)
    archiver = _backup(repo, src)
    assert archiver.stats.errors == 0
    (snap,) = repo.list_snapshots()
    return backend, src, snap


def test_backup_and_restore_round_trip(
    backed_up: tuple[MemoryBackend, Path, Snapshot], tmp_path: Path
) -> None:
    """Restoring a fresh backup reproduces names, types, contents, modes, links and mtimes."""
    backend, src, snap = backed_up
    repo = _open(backend)
    path = os.fsencode(src)
    root = find_node(repo, snap.tree, path)
    target = tmp_path / "restored"
    reporter = _Reporter()
    result = Restorer(
        repo, root, split_path(path), RestoreOptions(os.fsencode(target)), reporter
    ).run()
    assert reporter.errors == []
    assert result.errors == 0
    restored = _describe(os.fsencode(target))
    original = _describe(path)
    del restored[b"."], original[b"."]  # the target folder itself is not part of the tree
    assert restored == original
    assert os.lstat(target / "hardlink").st_ino == os.lstat(target / "text.txt").st_ino


def test_restore_with_include(
    backed_up: tuple[MemoryBackend, Path, Snapshot], tmp_path: Path
) -> None:
    """An --include pattern restores only matching entries and the folders leading to them."""
    backend, src, snap = backed_up
    repo = _open(backend)
    path = os.fsencode(src)
    root = find_node(repo, snap.tree, path)
    target = tmp_path / "partial"
    opts = RestoreOptions(os.fsencode(target), includes=["inner.txt"])
    Restorer(repo, root, split_path(path), opts, _Reporter()).run()
    assert sorted(os.fsencode(p.relative_to(target)) for p in target.rglob("*")) == [
        b"sub",
        b"sub/deeper",
        b"sub/deeper/inner.txt",
    ]


def test_backup_uses_several_packs(backed_up: tuple[MemoryBackend, Path, Snapshot]) -> None:
    """Tiny chunks and a small pack size spread the backup over many packs, all indexed."""
    backend, _, _ = backed_up
    packs = {info.name for info in backend.list(Kind.DATA)}
    assert len(packs) > 5
    assert {p.hex() for p in _open(backend).index.pack_ids} == packs


def test_every_referenced_blob_is_loadable(backed_up: tuple[MemoryBackend, Path, Snapshot]) -> None:
    """Every tree and data blob the snapshot references loads and verifies."""
    backend, _, snap = backed_up
    repo = _open(backend)
    trees = data = 0
    for _path, node in walk(repo, snap.tree, b"/"):
        if node.type == "dir":
            assert node.subtree is not None
            repo.load_tree(node.subtree)
            trees += 1
        if node.type == "file":
            content = file_content(repo, node)
            blobs = [repo.load_blob(BlobType.DATA, b) for b in content]
            assert sum(len(b) for b in blobs) == node.size
            data += len(content)
    assert trees >= 4
    assert data > 20


def test_checker_finds_no_errors(backed_up: tuple[MemoryBackend, Path, Snapshot]) -> None:
    """check, structure and read-data, reports nothing wrong after a backup."""
    backend, _, _ = backed_up
    checker = Checker(_open(backend), lambda message: None)
    checker.check_structure()
    checker.read_packs(lambda i, name: True)
    assert checker.result.errors == []
    assert checker.result.infos == []
    assert checker.result.snapshots == 1
    assert checker.result.packs_read == checker.result.packs > 5


def test_unchanged_second_backup_adds_no_data(
    backed_up: tuple[MemoryBackend, Path, Snapshot],
) -> None:
    """A second backup of unchanged files with the first as parent stores no new data blobs."""
    backend, src, snap = backed_up
    repo = _open(backend)
    try:
        archiver = _backup(repo, src, parent=snap)
    finally:
        repo.close()
    assert archiver.stats.data_blobs == 0
    assert archiver.stats.files_new == 0
    snaps = _open(backend).list_snapshots()
    assert len(snaps) == 2
    assert len({s.tree for s in snaps}) == 1
