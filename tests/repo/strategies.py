"""Hypothesis strategies and fixed keys shared by the repository tests."""

from __future__ import annotations

import random

from hypothesis import strategies as st

from crypto import KeyInfo
from repo.snapshot import Snapshot
from repo.tree import NODE_TYPES, Node
from repo.types import ID_SIZE, BlobType

ENC_KEY = bytes(range(32))
ID_KEY = bytes(range(32, 64))
OTHER_KEY = bytes(range(64, 96))
PASSWORD = b"correct horse"
KEY_INFO = KeyInfo(hostname="testhost", username="tester", created="2024-01-02T03:04:05+00:00")
REPO_ID = "ab" * 32

U32 = 2**32 - 1
U64 = 2**64 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1

blob_ids = st.binary(min_size=ID_SIZE, max_size=ID_SIZE)
blob_types = st.sampled_from(BlobType)
payloads = st.binary(max_size=2048)
# Highly compressible data, so that zstd is actually chosen.
compressible = st.builds(
    lambda unit, count: unit * count, st.binary(min_size=1, max_size=8), st.integers(70, 400)
)
names = st.binary(min_size=1, max_size=40)
i64 = st.integers(I64_MIN, I64_MAX)


def _xattrs() -> st.SearchStrategy[list[tuple[bytes, bytes]]]:
    pair = st.tuples(st.binary(min_size=1, max_size=20), st.binary(max_size=40))
    return st.lists(pair, max_size=3, unique_by=lambda p: p[0])


nodes = st.builds(
    Node,
    name=names,
    type=st.sampled_from(NODE_TYPES),
    mode=st.integers(0, 0o7777),
    uid=st.integers(0, U32),
    gid=st.integers(0, U32),
    user=st.text(max_size=12),
    group=st.text(max_size=12),
    mtime_ns=i64,
    ctime_ns=i64,
    inode=st.integers(0, U64),
    size=st.integers(0, I64_MAX),
    content=st.none() | st.lists(blob_ids, max_size=5),
    subtree=st.none() | blob_ids,
    target=st.none() | st.binary(max_size=60),
    rdev=st.integers(0, U64),
    xattrs=_xattrs(),
    device=st.none() | st.integers(0, U64),
    nlink=st.none() | st.integers(2, U32),
    atime_ns=st.none() | i64,
    content_lists=st.none() | st.lists(blob_ids, max_size=3),
)
# One directory: entry names are unique.
directories = st.lists(nodes, max_size=8, unique_by=lambda n: n.name)

# A blob as the pack tests use it: its type and plaintext.
blob_lists = st.lists(payloads, min_size=0, max_size=12)

tags = st.text(alphabet="abcdefgh", min_size=1, max_size=4)
snapshots = st.builds(
    Snapshot,
    time_ns=st.integers(-(10**18), 4 * 10**18),
    tz_offset=st.integers(-14 * 3600, 14 * 3600).map(lambda s: s - s % 60),
    tree=blob_ids,
    paths=st.lists(st.binary(min_size=1, max_size=30).map(lambda p: b"/" + p), max_size=3),
    hostname=st.text(max_size=20),
    username=st.text(max_size=20),
    uid=st.integers(0, U32),
    gid=st.integers(0, U32),
    tags=st.lists(tags, max_size=4),
    parent=st.none() | st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    original=st.none() | st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    program_version=st.text(max_size=20),
    start_ns=st.integers(0, I64_MAX),
    summary=st.dictionaries(st.text(max_size=20), st.integers(0, U64), max_size=5),
)


def seeded(seed: int) -> random.Random:
    """A reproducible pseudo-random generator for test data."""
    return random.Random(seed)
