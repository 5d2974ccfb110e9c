#!/usr/bin/env python3
"""Index memory benchmark: resident bytes per blob of hutch's in-memory index.

Loads an index of N blobs (default 1 million, in packs of 100 data blobs, as a backup
of ~1 TB at the default chunk size would have) and prints the growth of the process's
resident memory per blob, and the time of the load and of lookups.

    .venv/bin/python benchmarks/index_memory.py [--blobs 1000000] [--via load|add|repository]

--via says how the blobs come in: `load` streams the packs into MasterIndex.load (the
default); `add` hands them to MasterIndex.add_pack one by one, as a backup does; and
`repository` writes them as index files of a local repository (in a child process,
in --work or a temporary folder) that Repository.open then loads.

Run it from the checkout with an interpreter that has hutch's dependencies (the
`.venv` that `make test` builds, or one where hutch is installed). Peers for comparison (from their
designs, not measured here): a Python dict of tuples ~200 bytes a blob, restic ~56 plus
buckets, borg ~106 per chunk.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crypto import CHEAP, KeyInfo
from repo.backend.local import LocalBackend
from repo.config import RepoConfig
from repo.index import IndexedPack, MasterIndex
from repo.repository import PACKS_PER_INDEX, Repository
from repo.types import BlobType

PER_PACK = 100
PASSWORD = b"bench-password"


def rss_bytes() -> int:
    """Resident anonymous memory: the data the process holds, without code pages that
    first use of a library maps in."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def blob_id(n: int) -> bytes:
    return hashlib.blake2b(n.to_bytes(8, "little", signed=True), digest_size=32).digest()


def packs(count: int) -> Iterator[IndexedPack]:
    for start in range(0, count, PER_PACK):
        numbers = range(start, min(start + PER_PACK, count))
        rows = [(blob_id(n), (n - start) * 1000, 1000, 2000) for n in numbers]
        yield IndexedPack(blob_id(-start - 1), 200_000, 1000, BlobType.DATA, rows)


def write_repository(path: str, count: int) -> None:
    """A local repository whose index files list `count` blobs (no packs: loading the
    index never reads them), written as a backup writes them: PACKS_PER_INDEX a file."""
    info = KeyInfo(hostname="bench", username="bench", created="2024-01-01T00:00:00+00:00")
    config = RepoConfig(repo_id="ab" * 32)
    repo = Repository.init(LocalBackend(path, create=True), PASSWORD, info, config, kdf=CHEAP)
    batch: list[IndexedPack] = []
    for pack in packs(count):
        batch.append(pack)
        if len(batch) == PACKS_PER_INDEX:
            repo.write_index(batch)
            batch = []
    if batch:
        repo.write_index(batch)
    repo.close()


def in_child(work: Callable[[], None]) -> None:
    """Run `work` in a forked child, so that none of its memory stays in this process."""
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            work()
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    _pid, status = os.waitpid(pid, 0)
    if status:
        raise RuntimeError(f"child failed with status {status}")


def load(via: str, count: int, work: str) -> tuple[MasterIndex, float]:
    """The index of `count` blobs loaded one way, and the seconds that took."""
    if via == "repository":
        path = os.path.join(work, "repo")
        in_child(lambda: write_repository(path, count))
        start = time.perf_counter()
        repo = Repository.open(LocalBackend(path), PASSWORD)
        index = repo.index
        repo.close()
        return index, time.perf_counter() - start
    start = time.perf_counter()
    for _pack in packs(count):
        pass
    making_s = time.perf_counter() - start
    index = MasterIndex()
    start = time.perf_counter()
    if via == "add":
        for pack in packs(count):
            index.add_pack(pack)
    else:
        # Streamed, as index files are: the inputs never exist all at once.
        index.load(packs(count))
    return index, time.perf_counter() - start - making_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blobs", type=int, default=1_000_000)
    parser.add_argument("--via", choices=["load", "add", "repository"], default="load")
    parser.add_argument("--work", help="folder for the repository of --via repository")
    args = parser.parse_args()
    if args.work:
        os.makedirs(args.work, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        gc.collect()
        before = rss_bytes()
        index, load_s = load(args.via, args.blobs, work)
        gc.collect()
        grown = rss_bytes() - before
    probes = [blob_id(n) for n in range(0, args.blobs, max(1, args.blobs // 100_000))]
    start = time.perf_counter()
    found = sum(index.has(BlobType.DATA, p) for p in probes)
    lookup_us = (time.perf_counter() - start) / len(probes) * 1e6
    if found != len(probes):
        raise RuntimeError(f"{len(probes) - found} loaded blobs not found")
    print("| blobs | resident bytes per blob | load s | lookup µs |")
    print("|--:|--:|--:|--:|")
    print(f"| {args.blobs} | {grown / args.blobs:.1f} | {load_s:.2f} | {lookup_us:.2f} |")


if __name__ == "__main__":
    main()
