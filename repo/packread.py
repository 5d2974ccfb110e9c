"""Reading many blobs of one pack with few range reads, and checking restored files."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

from repo.blob import open_blob
from repo.errors import DamagedObject, RepoError
from repo.index import IndexedPack
from repo.pack import TRAILER, read_header
from repo.repository import Repository
from repo.types import BlobId, BlobLocation, BlobType, Handle, Kind

# Most headers fit in the last 64 KiB of their pack: one range read.
_TAIL = 64 * 1024
# Blobs of one pack closer than MAX_GAP are fetched in one read of at most MAX_READ:
# few requests to a remote, and little memory per read in flight.
MAX_GAP = 1 << 20
MAX_READ = 4 << 20


def runs(
    locs: Mapping[BlobId, BlobLocation | None],
) -> Iterator[tuple[int, int, list[tuple[BlobId, BlobLocation]]]]:
    """Group one pack's blobs into (start, end, blobs) byte ranges to read at once."""
    ordered = sorted(
        ((b, loc) for b, loc in locs.items() if loc is not None), key=lambda x: x[1].offset
    )
    run: list[tuple[BlobId, BlobLocation]] = []
    start = end = 0
    for blob_id, loc in ordered:
        if run and (loc.offset - end > MAX_GAP or loc.offset + loc.length - start > MAX_READ):
            yield start, end, run
            run = []
        if not run:
            start = loc.offset
        run.append((blob_id, loc))
        end = max(end, loc.offset + loc.length)
    if run:
        yield start, end, run


def read_pack_header(repo: Repository, name: str, size: int) -> IndexedPack:
    """A pack's header as an index entry, read from its tail (one range read mostly)."""
    handle = Handle(Kind.DATA, name)
    if size < TRAILER.size:
        raise DamagedObject(f"pack {name[:8]}: too short for a pack")
    start = max(0, size - _TAIL)
    tail = repo.backend.read(handle, start, size - start)
    (hlen,) = TRAILER.unpack_from(tail, len(tail) - TRAILER.size)
    if len(tail) < hlen + TRAILER.size <= size:
        tail = repo.backend.read(handle, size - hlen - TRAILER.size, hlen + TRAILER.size)
    blobs = read_header(repo.master.encryption, tail, size, name=f"pack {name[:8]}")
    types = {b.btype for b in blobs}
    if len(types) != 1:
        raise DamagedObject(f"pack {name[:8]}: holds {len(types)} blob types, not one")
    rows = [(b.blob_id, b.offset, b.length, b.raw_length) for b in blobs]
    return IndexedPack(bytes.fromhex(name), size, hlen, types.pop(), rows)


def fetch_run(
    repo: Repository, pack: bytes, start: int, end: int, run: list[tuple[BlobId, BlobLocation]]
) -> list[tuple[BlobId, bytes, str | None]]:
    """One range read of a pack: (id, plaintext, None) per blob, or (id, b"", problem)."""
    handle = Handle(Kind.DATA, pack.hex())
    try:
        data = memoryview(repo.backend.read(handle, start, end - start))
    except RepoError as exc:
        return [(blob_id, b"", str(exc)) for blob_id, _loc in run]
    out: list[tuple[BlobId, bytes, str | None]] = []
    for blob_id, loc in run:
        stored = data[loc.offset - start : loc.offset - start + loc.length]
        if len(stored) != loc.length:
            out.append((blob_id, b"", f"pack {pack.hex()[:8]} is truncated"))
            continue
        try:
            plain = open_blob(
                repo.master.encryption, repo.master.id_key, BlobType.DATA, blob_id, stored
            )
        except RepoError as exc:
            out.append((blob_id, b"", f"pack {pack.hex()[:8]}: {exc}"))
            continue
        out.append((blob_id, plain, None))
    return out


def verify_file(
    repo: Repository, dir_fd: int, name: bytes, blobs: list[tuple[BlobId, int]]
) -> str | None:
    """Re-read a restored file and compare every chunk with its id; None when all match."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    try:
        for blob_id, offset in blobs:
            loc = repo.index.lookup(BlobType.DATA, blob_id)
            if loc is None:
                return f"blob {blob_id.hex()[:16]} not found"
            data = os.pread(fd, loc.raw_length, offset)
            if repo.blob_id(data) != blob_id:
                return f"bytes {offset}-{offset + loc.raw_length} differ from the snapshot"
    finally:
        os.close(fd)
    return None
