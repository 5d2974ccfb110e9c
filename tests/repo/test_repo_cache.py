"""Tests of repo/cache.py: what a remote repository's local cache saves in downloads."""

from __future__ import annotations

import io
import os
import random
from collections.abc import Iterator
from pathlib import Path

from strategies import KEY_INFO, PASSWORD, REPO_ID

from chunker import ChunkerParams
from crypto import CHEAP
from repo.backend.local import LocalBackend
from repo.backup import Archiver, BackupOptions, QuietReporter
from repo.cache import Cache
from repo.config import RepoConfig
from repo.dump import dump_file
from repo.repository import Repository
from repo.types import FileInfo, Handle, Kind
from repo.walk import find_node, walk

SMALL = ChunkerParams(min_size=4096, avg_size=16384, max_size=65536)


class CountingBackend(LocalBackend):
    """A local backend that counts the bytes read, by kind, as a remote would send them."""

    def __init__(self, path: str) -> None:
        super().__init__(path, create=True)
        self.read_bytes: dict[Kind, int] = {}

    def read(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        data = super().read(handle, offset, length)
        self.read_bytes[handle.kind] = self.read_bytes.get(handle.kind, 0) + len(data)
        return data

    def list(self, kind: Kind) -> Iterator[FileInfo]:
        return super().list(kind)


def _setup(tmp_path: Path) -> tuple[CountingBackend, bytes, bytes]:
    rng = random.Random(11)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(8):
        (src / f"big{i}.bin").write_bytes(rng.randbytes(2_000_000))
    (src / "small.txt").write_bytes(rng.randbytes(50_000))
    backend = CountingBackend(str(tmp_path / "repo"))
    cfg = RepoConfig(repo_id=REPO_ID, chunker=SMALL)
    repo = Repository.init(backend, PASSWORD, KEY_INFO, cfg, kdf=CHEAP)
    opts = BackupOptions(paths=[os.fsencode(src)], hostname="h", username="u")
    Archiver(repo, opts, QuietReporter()).run()
    repo.close()
    return backend, os.fsencode(src / "small.txt"), (src / "small.txt").read_bytes()


def _open(backend: CountingBackend, cache_root: Path) -> Repository:
    repo = Repository.open(backend, PASSWORD)
    repo.cache = Cache(str(cache_root), repo.config.repo_id)
    return repo


def test_warm_cache_lists_without_data_downloads(tmp_path: Path) -> None:
    """With a warm cache, listing snapshots and walking their trees reads no data pack."""
    backend, _path, _data = _setup(tmp_path)
    cold = _open(backend, tmp_path / "cache")
    snap = cold.list_snapshots()[0]
    list(walk(cold, snap.tree, b"/"))
    assert backend.read_bytes.get(Kind.DATA, 0) > 0  # the cold run fetched tree packs
    backend.read_bytes.clear()
    warm = _open(backend, tmp_path / "cache")
    snap = warm.list_snapshots()[0]
    entries = list(walk(warm, snap.tree, b"/"))
    assert len(entries) > 9
    assert backend.read_bytes.get(Kind.DATA, 0) == 0
    assert backend.read_bytes.get(Kind.SNAPSHOT, 0) == 0
    assert backend.read_bytes.get(Kind.INDEX, 0) == 0


def test_dump_of_one_file_downloads_about_its_stored_size(tmp_path: Path) -> None:
    """Dumping one small file fetches only the ranges of its chunks, not whole packs."""
    backend, path, data = _setup(tmp_path)
    warm = _open(backend, tmp_path / "cache")
    list(walk(warm, warm.list_snapshots()[0].tree, b"/"))  # warm the cache
    backend.read_bytes.clear()
    repo = _open(backend, tmp_path / "cache")
    node = find_node(repo, repo.list_snapshots()[0].tree, path)
    out = io.BytesIO()
    dump_file(repo, node, path, out)
    assert out.getvalue() == data
    fetched = backend.read_bytes.get(Kind.DATA, 0)
    total = sum(i.size for i in backend.list(Kind.DATA))
    assert len(data) <= fetched <= len(data) * 1.1 + 4096
    assert fetched < total / 50


def test_stale_cache_entries_are_dropped(tmp_path: Path) -> None:
    """A cached snapshot the repository no longer has is removed from the cache."""
    backend, _path, _data = _setup(tmp_path)
    repo = _open(backend, tmp_path / "cache")
    snap = repo.list_snapshots()[0]
    assert repo.cache is not None
    cached = Path(repo.cache.path) / "snapshots" / snap.id
    assert cached.exists()
    backend.delete(Handle(Kind.SNAPSHOT, snap.id))
    assert _open(backend, tmp_path / "cache").list_snapshots() == []
    assert not cached.exists()


def test_damaged_cache_file_is_refetched(tmp_path: Path) -> None:
    """A cached object whose bytes no longer match its name is fetched again."""
    backend, _path, _data = _setup(tmp_path)
    repo = _open(backend, tmp_path / "cache")
    snap = repo.list_snapshots()[0]
    assert repo.cache is not None
    cached = Path(repo.cache.path) / "snapshots" / snap.id
    cached.write_bytes(b"garbage")
    again = _open(backend, tmp_path / "cache").list_snapshots()
    assert [s.id for s in again] == [snap.id]
