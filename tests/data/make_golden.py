"""Create the golden repository tests/data/golden-v1/ and its expected table golden-v1.json.

Run ONCE, from the checkout root, with the code of format v1:

    PYTHONPATH=. python tests/data/make_golden.py

The repository is committed; tests/repo/test_repo_golden.py reads it with the current
code, so a format change that can no longer read v1 fails that test. The script refuses
to overwrite an existing golden repository: a new format gets a new golden-vN.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
from pathlib import Path

from chunker import ChunkerParams
from crypto import CHEAP, KeyInfo
from repo.backend.local import LocalBackend
from repo.backup import Archiver, BackupOptions, QuietReporter
from repo.config import RepoConfig
from repo.repository import Repository

HERE = Path(__file__).resolve().parent
TARGET = HERE / "golden-v1"
TABLE = HERE / "golden-v1.json"

PASSWORD = b"golden"
REPO_ID = "901de2" + "0" * 58
CHUNKER = ChunkerParams(min_size=64, avg_size=256, max_size=1024)
PACK_SIZE = 512  # many packs, so more than one index file is written
SNAPSHOT_TIME_NS = 1_700_000_000_000_000_000  # 2023-11-14 22:13:20 UTC, the fixed --time
HOSTNAME = "golden-host"
USERNAME = "golden-user"
TAGS = ["golden", "v1"]
BASE_MTIME_NS = 1_600_000_000_123_456_789

# (relative path, type, mode, content or symlink target); directories before their children.
ENTRIES: list[tuple[bytes, str, int, bytes]] = [
    (b"hello.txt", "file", 0o644, b"Hello, hutch!\nThis is the golden repository, format v1.\n"),
    (b"data.bin", "file", 0o640, random.Random(20241126).randbytes(8000)),
    (b"empty", "file", 0o600, b""),
    (b"run.sh", "file", 0o755, b"#!/bin/sh\necho golden\n"),
    (b"link", "symlink", 0o777, b"hello.txt"),
    (b"sub", "dir", 0o750, b""),
    (b"sub/nested.txt", "file", 0o444, b"nested file\n" * 40),
    (b"sub/caf\xe9-\xff.txt", "file", 0o644, b"a name that is not UTF-8\n"),
    (b"sub/empty-dir", "dir", 0o700, b""),
]


def _mtime(i: int) -> int:
    return BASE_MTIME_NS + i * 86_400_000_000_001


def make_source(root: bytes) -> None:
    """Create the fixed input files under root."""
    os.mkdir(root, 0o755)
    for rel, kind, mode, data in ENTRIES:
        path = os.path.join(root, rel)
        if kind == "dir":
            os.mkdir(path)
        elif kind == "symlink":
            os.symlink(data, path)
        else:
            with open(path, "wb") as f:
                f.write(data)
        if kind != "symlink":
            os.chmod(path, mode)
    # Times last, deepest first, so creating children does not change a folder's mtime.
    for i, (rel, _kind, _mode, _data) in reversed(list(enumerate(ENTRIES))):
        os.utime(os.path.join(root, rel), ns=(_mtime(i), _mtime(i)), follow_symlinks=False)


def expected_table(source: bytes, snap_id: str) -> dict[str, object]:
    """The inputs as the golden test compares them (bytes as hex)."""
    return {
        "password": PASSWORD.decode(),
        "repo_id": REPO_ID,
        "chunker": CHUNKER.to_dict(),
        "pack_size": PACK_SIZE,
        "snapshot": {
            "id": snap_id,
            "time_ns": SNAPSHOT_TIME_NS,
            "hostname": HOSTNAME,
            "username": USERNAME,
            "tags": TAGS,
            "paths_hex": [source.hex()],
        },
        "entries": [
            {
                "path_hex": rel.hex(),
                "type": kind,
                "mode": mode,
                "mtime_ns": _mtime(i),
                "data_hex": data.hex(),
            }
            for i, (rel, kind, mode, data) in enumerate(ENTRIES)
        ],
    }


def main() -> int:
    if TARGET.exists():
        print(f"{TARGET} exists; refusing to overwrite a golden repository", file=sys.stderr)
        return 1
    os.umask(0o022)
    with tempfile.TemporaryDirectory(prefix="hutch-golden-") as tmp:
        source = os.path.join(os.fsencode(tmp), b"src")
        make_source(source)
        backend = LocalBackend(str(TARGET), create=True)
        info = KeyInfo(hostname=HOSTNAME, username=USERNAME, created="2023-11-14T22:13:20+00:00")
        config = RepoConfig(repo_id=REPO_ID, chunker=CHUNKER, pack_size=PACK_SIZE)
        repo = Repository.init(backend, PASSWORD, info, config, kdf=CHEAP)
        try:
            opts = BackupOptions(
                paths=[source],
                hostname=HOSTNAME,
                username=USERNAME,
                tags=list(TAGS),
                time_ns=SNAPSHOT_TIME_NS,
                program_version="hutch make_golden v1",
            )
            snap, _ = Archiver(repo, opts, QuietReporter()).run()
        finally:
            repo.close()
    TABLE.write_text(json.dumps(expected_table(source, snap.id), indent=1) + "\n")
    print(f"wrote {TARGET} (snapshot {snap.id[:8]}) and {TABLE.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
