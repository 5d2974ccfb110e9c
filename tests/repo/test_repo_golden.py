"""The golden repository tests/data/golden-v1 (format v1) must stay readable by the current code.

It was written once by tests/data/make_golden.py; never regenerate it to make this
test pass (docs/development.md, golden repositories).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from chunker import ChunkerParams
from crypto import CHEAP, read_kdf_params
from repo.backend.local import LocalBackend
from repo.check import Checker
from repo.errors import WrongPassword
from repo.pattern import split_path
from repo.repository import Repository
from repo.restore import RestoreOptions, Restorer
from repo.snapshot import Snapshot
from repo.tree import Node
from repo.types import Handle, Kind
from repo.walk import find_node, iter_file_data, walk

DATA = Path(__file__).resolve().parent.parent / "data"
GOLDEN = DATA / "golden-v1"
TABLE: dict[str, Any] = json.loads((DATA / "golden-v1.json").read_text())
PASSWORD = TABLE["password"].encode()
SNAP: dict[str, Any] = TABLE["snapshot"]
SOURCE = bytes.fromhex(SNAP["paths_hex"][0])
ENTRIES: dict[bytes, dict[str, Any]] = {bytes.fromhex(e["path_hex"]): e for e in TABLE["entries"]}


@pytest.fixture
def backend(tmp_path: Path) -> LocalBackend:
    """A copy of the golden repository, so the committed one is never written to."""
    copy = tmp_path / "golden-v1"
    shutil.copytree(GOLDEN, copy)
    return LocalBackend(str(copy))


@pytest.fixture
def repo(backend: LocalBackend) -> Repository:
    """The golden repository, opened with its password."""
    return Repository.open(backend, PASSWORD)


@pytest.fixture
def snapshot(repo: Repository) -> Snapshot:
    """The golden repository's only snapshot."""
    (snap,) = repo.list_snapshots()
    return snap


def _tree(repo: Repository, snap: Snapshot) -> dict[bytes, Node]:
    root = find_node(repo, snap.tree, SOURCE)
    assert root.type == "dir"
    assert root.subtree is not None
    return {path.lstrip(b"/"): node for path, node in walk(repo, root.subtree, b"/")}


def test_opens_with_its_password(repo: Repository) -> None:
    """The v1 config decodes with the parameters it was written with."""
    assert repo.config.repo_id == TABLE["repo_id"]
    assert repo.config.version == 1
    assert repo.config.pack_size == TABLE["pack_size"]
    assert repo.config.chunker == ChunkerParams.from_dict(TABLE["chunker"])


def test_wrong_password_is_refused(backend: LocalBackend) -> None:
    """The golden repository's key file does not open with another password."""
    with pytest.raises(WrongPassword):
        Repository.open(backend, b"not golden")


def test_key_file_uses_cheap_kdf(backend: LocalBackend) -> None:
    """The one key file records the cheap test KDF parameters."""
    (info,) = backend.list(Kind.KEY)
    assert read_kdf_params(backend.read(Handle(Kind.KEY, info.name))) == CHEAP


def test_every_object_matches_its_name(backend: LocalBackend) -> None:
    """Every stored object except the config is named by the SHA-256 of its bytes."""
    count = 0
    for kind in (Kind.KEY, Kind.DATA, Kind.INDEX, Kind.SNAPSHOT):
        for info in backend.list(kind):
            data = backend.read(Handle(kind, info.name))
            assert hashlib.sha256(data).hexdigest() == info.name
            count += 1
    assert count > 10


def test_lists_its_snapshot(snapshot: Snapshot) -> None:
    """The snapshot decodes with its id, time, host, user, tags and path."""
    assert snapshot.id == SNAP["id"]
    assert snapshot.time_ns == SNAP["time_ns"]
    assert snapshot.hostname == SNAP["hostname"]
    assert snapshot.username == SNAP["username"]
    assert snapshot.tags == SNAP["tags"]
    assert snapshot.paths == [SOURCE]


def test_index_spans_several_files(backend: LocalBackend, repo: Repository) -> None:
    """The index is spread over more than one index file, and every pack is in it."""
    assert len(list(backend.list(Kind.INDEX))) >= 2
    packs = {info.name for info in backend.list(Kind.DATA)}
    assert {p.hex() for p in repo.index.pack_ids} == packs


def test_tree_matches_the_inputs(repo: Repository, snapshot: Snapshot) -> None:
    """Names, types, modes, mtimes, file contents and link targets equal the recorded inputs."""
    nodes = _tree(repo, snapshot)
    assert set(nodes) == set(ENTRIES)
    for rel, want in ENTRIES.items():
        node = nodes[rel]
        data = bytes.fromhex(want["data_hex"])
        assert (node.type, node.mtime_ns) == (want["type"], want["mtime_ns"]), rel
        if node.type != "symlink":
            assert node.mode == want["mode"], rel
        if node.type == "file":
            assert node.size == len(data)
            assert b"".join(iter_file_data(repo, node, rel)) == data, rel
        elif node.type == "symlink":
            assert node.target == data


def test_binary_file_spans_several_chunks(repo: Repository, snapshot: Snapshot) -> None:
    """The tiny chunker parameters split data.bin into many chunks."""
    node = _tree(repo, snapshot)[b"data.bin"]
    assert node.content is not None
    assert len(node.content) >= 8


def test_non_utf8_name_is_kept(repo: Repository, snapshot: Snapshot) -> None:
    """The entry whose name is not UTF-8 keeps its bytes."""
    names = set(_tree(repo, snapshot))
    assert any(_is_not_utf8(name) for name in names)


def _is_not_utf8(name: bytes) -> bool:
    try:
        name.decode()
    except UnicodeDecodeError:
        return True
    return False


def test_check_and_read_data_find_no_errors(repo: Repository) -> None:
    """check's structure pass and reading every pack report no errors."""
    checker = Checker(repo, lambda message: None)
    checker.check_structure()
    checker.read_packs(lambda i, name: True)
    assert checker.result.errors == []
    assert checker.result.snapshots == 1
    assert checker.result.packs_read == checker.result.packs == len(list(repo.index.pack_ids))


class _Reporter:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def bytes_written(self, n: int) -> None:
        return None

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    def planned(self, path: str, action: str) -> None:
        return None


def test_restores_the_inputs(repo: Repository, snapshot: Snapshot, tmp_path: Path) -> None:
    """Restoring the snapshot writes the recorded files, links, modes and mtimes."""
    target = os.fsencode(tmp_path / "restored")
    root = find_node(repo, snapshot.tree, SOURCE)
    reporter = _Reporter()
    Restorer(repo, root, split_path(SOURCE), RestoreOptions(target), reporter).run()
    assert reporter.errors == []
    for rel, want in ENTRIES.items():
        path = os.path.join(target, rel)
        st = os.lstat(path)
        data = bytes.fromhex(want["data_hex"])
        assert st.st_mtime_ns == want["mtime_ns"], rel
        if want["type"] == "symlink":
            assert os.readlink(path) == data
            continue
        assert stat.S_IMODE(st.st_mode) == want["mode"], rel
        if want["type"] == "file":
            with open(path, "rb") as f:
                assert f.read() == data, rel
