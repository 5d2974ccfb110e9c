"""Reading data blobs for restore and dump: many blobs of one pack with few range reads,
one file's blobs in order with the next ones loaded ahead, and checking restored files."""

from __future__ import annotations

import collections
import contextlib
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from repo.backend.local import LocalBackend
from repo.blob import open_data_view
from repo.errors import BlobNotFound, DamagedObject, RepoError
from repo.index import IndexedPack
from repo.pack import TRAILER, read_header
from repo.repository import Repository
from repo.types import BlobId, BlobLocation, BlobType, Handle, Kind

if TYPE_CHECKING:
    from concurrent.futures import Future

# Most headers fit in the last 64 KiB of their pack: one range read.
_TAIL = 64 * 1024
# Blobs of one pack closer than MAX_GAP are fetched in one read of at most MAX_READ:
# few requests to a remote, and little memory per read in flight. A local repository
# reads no gap at all (LOCAL_GAP): a read call costs microseconds there, and the bytes
# between wanted blobs (data only older snapshots use) would grow with the history.
MAX_GAP = 1 << 20
LOCAL_GAP = 0
MAX_READ = 4 << 20
# Plaintext bytes open at once across the threads of a restore or dump, counting chunks
# of BUDGET_FROM bytes or more (a few smaller ones per thread are no matter). A chunk
# costs about twice its size while zstd expands it (the output and zstd's window), and a
# VM image has runs of 8 MiB all-zero chunks: this bounds the buffers, whatever the
# number of threads (remote repositories use --connections of them).
PLAIN_BUDGET = 12 << 20
BUDGET_FROM = 1 << 20

# A blob's plaintext: a view into the decrypted payload when it was stored uncompressed.
Data = bytes | memoryview
# A pack range to read at once: (pack id, start, end, its blobs in pack order).
Run = tuple[bytes, int, int, list[tuple[BlobId, BlobLocation]]]
_NO_HOLD = contextlib.nullcontext()


def runs(
    locs: Mapping[BlobId, BlobLocation | None], max_gap: int = MAX_GAP
) -> Iterator[tuple[int, int, list[tuple[BlobId, BlobLocation]]]]:
    """Group one pack's blobs into (start, end, blobs) byte ranges to read at once,
    joining blobs at most max_gap bytes apart."""
    ordered = sorted(
        ((b, loc) for b, loc in locs.items() if loc is not None), key=lambda x: x[1].offset
    )
    run: list[tuple[BlobId, BlobLocation]] = []
    start = end = 0
    for blob_id, loc in ordered:
        if run and (loc.offset - end > max_gap or loc.offset + loc.length - start > MAX_READ):
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


def open_data_blob(
    repo: Repository, blob_id: BlobId, stored: bytes | memoryview, size: int
) -> Data:
    """repo.blob.open_data_view with this repository's keys."""
    return open_data_view(repo.master.encryption, repo.master.id_key, blob_id, stored, size)


class Budget:
    """Bytes that threads may hold at once: a taker waits until the others have given
    back enough, but one taker alone gets however much it asks for."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def hold(self, n: int) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: not self._used or self._used + n <= self._limit)
            self._used += n
        try:
            yield
        finally:
            with self._changed:
                self._used -= n
                self._changed.notify_all()


def _open_in_pack(
    repo: Repository, pack: bytes, blob_id: BlobId, loc: BlobLocation, stored: memoryview
) -> Data | str:
    """The plaintext, or what is wrong with the blob."""
    try:
        return open_data_blob(repo, blob_id, stored, loc.raw_length)
    except RepoError as exc:
        return f"pack {pack.hex()[:8]}: {exc}"


def decode_run(
    repo: Repository, run: Run, budget: Budget | None = None
) -> Iterator[tuple[BlobId, BlobLocation, Data, str]]:
    """One range read of a pack, then its blobs one at a time, in pack order:
    (id, location, plaintext, "") per blob, or (id, location, b"", problem). One blob's
    plaintext is alive at a time, while the caller writes it; with a budget, held from
    it until the caller asks for the next one."""
    pack, start, end, blobs = run
    handle = Handle(Kind.DATA, pack.hex())
    try:
        data = memoryview(repo.backend.read(handle, start, end - start))
    except RepoError as exc:
        for blob_id, loc in blobs:
            yield blob_id, loc, b"", str(exc)
        return
    for blob_id, loc in blobs:
        stored = data[loc.offset - start : loc.offset - start + loc.length]
        if len(stored) != loc.length:
            yield blob_id, loc, b"", f"pack {pack.hex()[:8]} is truncated"
            continue
        big = loc.raw_length >= BUDGET_FROM
        with budget.hold(loc.raw_length) if budget is not None and big else _NO_HOLD:
            plain = _open_in_pack(repo, pack, blob_id, loc, stored)
            if isinstance(plain, str):
                yield blob_id, loc, b"", plain
            else:
                yield blob_id, loc, plain, ""
            del plain


def _load(repo: Repository, blob_id: BlobId, loc: BlobLocation | None) -> Data:
    if loc is None:
        raise BlobNotFound(f"data blob {blob_id.hex()[:16]}: not in index")
    stored = repo.backend.read(Handle(Kind.DATA, loc.pack.hex()), loc.offset, loc.length)
    return open_data_blob(repo, blob_id, stored, loc.raw_length)


def load_in_order(repo: Repository, blob_ids: Iterable[BlobId], threads: int = 2) -> Iterator[Data]:
    """Each data blob in turn, the next few read, decrypted and decompressed on a small
    pool (the backend, AES and zstd release the GIL) while the caller writes this one.
    A blob that cannot be loaded raises its RepoError in its place. With threads < 1,
    each blob is loaded when asked for, on this thread."""
    ids = iter(blob_ids)
    if threads < 1:
        for blob_id in ids:
            yield _load(repo, blob_id, repo.index.lookup(BlobType.DATA, blob_id))
        return
    # Imported here: concurrent.futures brings logging, start-up time a one-chunk dump
    # (the common case) would pay for nothing.
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    # Loaded or loading, not yet handed out: at most threads + 1 blobs, and no more
    # plaintext than the budget unless it is a single blob.
    pending: collections.deque[tuple[Future[Data], int]] = collections.deque()
    held = 0
    pool = ThreadPoolExecutor(threads, thread_name_prefix="load")
    try:
        for blob_id in ids:
            loc = repo.index.lookup(BlobType.DATA, blob_id)
            size = loc.raw_length if loc else 0
            while pending and (len(pending) > threads or held + size > PLAIN_BUDGET):
                done, n = pending.popleft()
                held -= n
                yield done.result()
            pending.append((pool.submit(_load, repo, blob_id, loc), size))
            held += size
        while pending:
            yield pending.popleft()[0].result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


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


def read_gap(repo: Repository) -> int:
    """The largest gap between two blobs that one read of this repository spans."""
    return LOCAL_GAP if isinstance(repo.backend, LocalBackend) else MAX_GAP
