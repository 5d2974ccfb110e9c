#!/usr/bin/env python3
"""Index memory benchmark: resident bytes per blob of hutch's in-memory index.

Loads an index of N blobs (default 1 million, in packs of 100 data blobs, as a backup
of ~1 TB at the default chunk size would have) and prints the growth of the process's
resident memory per blob, and the time of the load and of lookups.

    python3 benchmarks/index_memory.py [--blobs 1000000]

Run it from the checkout (or with hutch installed). Peers for comparison (from their
designs, not measured here): a Python dict of tuples ~200 bytes a blob, restic ~56 plus
buckets, borg ~106 per chunk.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from repo.index import IndexedPack, MasterIndex  # noqa: E402
from repo.types import BlobType  # noqa: E402

PER_PACK = 100


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


def packs(count: int):  # noqa: ANN201 - a generator of IndexedPack
    for start in range(0, count, PER_PACK):
        rows = [(blob_id(n), (n - start) * 1000, 1000, 2000) for n in range(start, min(start + PER_PACK, count))]
        yield IndexedPack(blob_id(-start - 1), 200_000, 1000, BlobType.DATA, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blobs", type=int, default=1_000_000)
    args = parser.parse_args()
    gc.collect()
    before = rss_bytes()
    start = time.perf_counter()
    for _pack in packs(args.blobs):
        pass
    making_s = time.perf_counter() - start
    index = MasterIndex()
    start = time.perf_counter()
    # Streamed, as index files are: the inputs never exist all at once.
    index.load(packs(args.blobs))
    load_s = time.perf_counter() - start - making_s
    gc.collect()
    grown = rss_bytes() - before
    probes = [blob_id(n) for n in range(0, args.blobs, max(1, args.blobs // 100_000))]
    start = time.perf_counter()
    found = sum(index.has(BlobType.DATA, p) for p in probes)
    lookup_us = (time.perf_counter() - start) / len(probes) * 1e6
    assert found == len(probes)
    print("| blobs | resident bytes per blob | load s | lookup µs |")
    print("|--:|--:|--:|--:|")
    print(f"| {args.blobs} | {grown / args.blobs:.1f} | {load_s:.2f} | {lookup_us:.2f} |")


if __name__ == "__main__":
    main()
