"""Writes new blobs: compression on a small thread pool, sealing, packing and upload."""

from __future__ import annotations

import collections
import errno
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

from repo.blob import compress_parts, seal_blob
from repo.digest import file_digest
from repo.errors import BackendError
from repo.index import IndexedPack
from repo.pack import PackWriter, Spool
from repo.types import BlobId, BlobType

# zstd, hashlib and file writes release the GIL; chunking and hashing blob ids hold
# it (docs/design.md, performance notes). So the archiver's thread only chunks and
# names blobs, and each new blob is compressed, sealed and appended to its pack on a
# worker: the pack's SHA-256 and its writes overlap the chunking of what follows.
COMPRESS_THREADS = 2
# Work queued for the workers: up to MAX_IN_FLIGHT tasks whatever their size, and more
# while they hold at most MAX_QUEUED_BYTES of data in all.
MAX_IN_FLIGHT = 4
MAX_QUEUED_BYTES = 4 * 1024 * 1024
# Blobs smaller than BATCH_BYTES go to the workers in batches of up to that many bytes
# or BATCH_BLOBS blobs: a task per small file, and a wait for the oldest after each,
# cost more than compressing it (about 50 µs a file in thread switches).
BATCH_BYTES = 256 * 1024
BATCH_BLOBS = 64
# Blobs under this size are compressed, sealed and packed on the caller's thread: the
# work is a few microseconds, and on a worker each blob cost two turns at the GIL,
# which the archiver, busy with system calls for every small file, then waited for.
INLINE_MAX = 4096
# A pack is finished at pack_size bytes or at this many blobs, whichever comes first:
# its header, and the records kept until the pack is indexed, stay small when the
# blobs are tiny (docs/design.md, packs).
MAX_PACK_BLOBS = 8192
# Packs written to spool files on disk that may wait for their fsync and rename beyond
# the storing thread's one, before the archiver waits.
LOCAL_STORES_AHEAD = 3


class _Finished(NamedTuple):
    """A pack written whole, not yet named: its IndexedPack but for the id."""

    size: int
    header_length: int
    btype: BlobType
    blobs: list[tuple[BlobId, int, int, int]]


class PackSaver:
    """Turns blobs into packs; calls `on_pack` with each pack once it is stored.

    Each pack is written blob by blob into a spool file (`spool` opens one and returns
    it as a `Spool`) and handed to `store` when full; `store` closes it. Workers share
    the open packs under one lock; `store` and `on_pack` run as the caller's thread
    drives them (add, flush).
    """

    def __init__(
        self,
        enc_key: bytes,
        level: int,
        pack_size: int,
        spool: Callable[[], Spool],
        store: Callable[[bytes, Spool, BlobType], None],
        on_pack: Callable[[IndexedPack], None],
        uploads: int = 1,
    ) -> None:
        self._key = enc_key
        self._level = level
        self._pack_size = pack_size
        self._spool = spool
        self._store = store
        self._on_pack = on_pack
        self._lock = threading.Lock()
        # Under the lock: the open pack of each type, and packs finished, not yet stored.
        self._writers: dict[BlobType, tuple[PackWriter, Spool]] = {}
        self._finished: collections.deque[tuple[_Finished, Spool]] = collections.deque()
        self._pending: collections.deque[tuple[Future[None], int]] = collections.deque()
        self._queued_bytes = 0  # the data of the blobs in _pending
        # Small blobs not handed to a worker yet, and their size.
        self._batch: list[tuple[BlobType, BlobId, bytes]] = []
        self._batch_bytes = 0
        self._is_torn = False  # an append to an open pack was interrupted
        self._uploads: collections.deque[tuple[_Finished, Spool, Future[bytes]]]
        self._uploads = collections.deque()
        self._workers = ThreadPoolExecutor(COMPRESS_THREADS, thread_name_prefix="compress")
        # Concurrent uploads (--connections for remote repositories).
        self._max_uploads = max(1, uploads)
        self._uploader = ThreadPoolExecutor(self._max_uploads, thread_name_prefix="upload")
        self.bytes_stored = 0

    def add(self, btype: BlobType, blob_id: BlobId, data: bytes) -> None:
        """Queue a new blob; its pack is written later (see flush)."""
        if len(data) < INLINE_MAX:
            self._here(lambda: self._pack_blobs([(btype, blob_id, data)]))
            return
        self._batch.append((btype, blob_id, data))
        self._batch_bytes += len(data)
        if self._batch_bytes >= BATCH_BYTES or len(self._batch) >= BATCH_BLOBS:
            self._submit_batch()

    def _submit_batch(self) -> None:
        batch, size = self._batch, self._batch_bytes
        if not batch:
            return
        self._batch, self._batch_bytes = [], 0
        self._pending.append((self._workers.submit(self._pack_blobs, batch), size))
        self._queued_bytes += size
        while len(self._pending) > MAX_IN_FLIGHT and self._queued_bytes > MAX_QUEUED_BYTES:
            future, done = self._pending.popleft()
            future.result()
            self._queued_bytes -= done
        if self._finished:  # read without the lock: a pack missed now goes next time
            self._start_stores()

    def add_sealed(self, btype: BlobType, blob_id: BlobId, sealed: bytes, size: int) -> None:
        """Append a blob compressed and sealed already (by the small-file worker) of
        `size` plaintext bytes to its open pack."""
        self._here(lambda: self._append([(btype, blob_id, sealed, size)]))

    def _here(self, append: Callable[[], None]) -> None:
        """Run an append to the open packs on the caller's thread, then store the packs
        it finished."""
        try:
            append()
        except BaseException:
            # An interrupt (KeyboardInterrupt is raised on this thread) can stop an
            # append half done: the open packs are dropped, not finished, by flush.
            self._is_torn = True
            raise
        if self._finished:
            self._start_stores()

    def _pack_blobs(self, batch: list[tuple[BlobType, BlobId, bytes]]) -> None:
        """Compress and seal the blobs, then append them to their open packs (on a
        worker, or on the caller's thread for a tiny blob)."""
        self._append(
            [
                (
                    btype,
                    blob_id,
                    seal_blob(self._key, btype, blob_id, compress_parts(data, self._level)),
                    len(data),
                )
                for btype, blob_id, data in batch
            ]
        )

    def _append(self, sealed: list[tuple[BlobType, BlobId, bytes | bytearray, int]]) -> None:
        with self._lock:
            for btype, blob_id, stored, size in sealed:
                if btype not in self._writers:
                    spool = self._spool()
                    self._writers[btype] = (PackWriter(btype, spool.fd), spool)
                writer, spool = self._writers[btype]
                try:
                    writer.add(blob_id, stored, size)
                except OSError as exc:
                    raise _spool_error(spool, exc) from exc
                self.bytes_stored += len(stored)
                if writer.size >= self._pack_size or len(writer.blobs) >= MAX_PACK_BLOBS:
                    self._finish_locked(btype)

    def _finish_locked(self, btype: BlobType) -> None:
        writer, spool = self._writers.pop(btype)
        try:
            header_length = writer.finish(self._key)
        except OSError as exc:
            spool.discard()
            raise _spool_error(spool, exc) from exc
        blobs = [(b.blob_id, b.offset, b.length, b.raw_length) for b in writer.blobs]
        self._finished.append((_Finished(writer.size, header_length, btype, blobs), spool))
        self.bytes_stored += header_length + 4

    def _start_stores(self) -> None:
        """Hand finished packs to the uploader; at most `uploads` are stored at once."""
        while True:
            with self._lock:
                if not self._finished:
                    return
                pack, spool = self._finished.popleft()
            future = self._uploader.submit(self._hash_and_store, spool, pack.btype)
            self._uploads.append((pack, spool, future))
            while self._uploads and (
                self._uploads[0][2].done() or len(self._uploads) > self._stores_ahead()
            ):
                self._complete_upload()

    def _hash_and_store(self, spool: Spool, btype: BlobType) -> bytes:
        """Name the finished pack by its SHA-256 and store it (on an upload thread)."""
        try:
            pack_id = file_digest(spool.fd)
        except OSError as exc:
            spool.discard()
            raise _spool_error(spool, exc) from exc
        self._store(pack_id, spool, btype)
        return pack_id

    def _stores_ahead(self) -> int:
        """How many packs may wait to be stored before the caller waits for one: spools
        in memory count against the upload connections; a few more spool files on
        disk wait on the local disk's fsync instead of the archiver."""
        in_memory = any(spool.path is None for _pack, spool, _future in self._uploads)
        return self._max_uploads if in_memory else self._max_uploads + LOCAL_STORES_AHEAD

    def _complete_upload(self) -> None:
        pack, _spool, future = self._uploads.popleft()
        pack_id = future.result()
        self._on_pack(IndexedPack(pack_id, pack.size, pack.header_length, pack.btype, pack.blobs))

    def flush(self) -> None:
        """Write every queued blob into packs and wait until all packs are stored."""
        self._submit_batch()
        while self._pending:
            future, size = self._pending.popleft()
            future.result()
            self._queued_bytes -= size
        with self._lock:
            for btype in list(self._writers):
                if self._is_torn:
                    self._writers.pop(btype)[1].discard()
                else:
                    self._finish_locked(btype)
        self._start_stores()
        while self._uploads:
            self._complete_upload()

    def close(self) -> None:
        self._workers.shutdown(wait=True, cancel_futures=True)
        self._uploader.shutdown(wait=True, cancel_futures=True)
        # Packs never finished or never stored (an error or an interrupt) leave no spool
        # file behind; a stored pack's file is gone already.
        for _writer, spool in self._writers.values():
            spool.discard()
        for _pack, spool in self._finished:
            spool.discard()
        for _pack, spool, _future in self._uploads:
            spool.discard()
        self._writers.clear()
        self._finished.clear()
        self._uploads.clear()
        self._pending.clear()
        self._batch.clear()


def _spool_error(spool: Spool, exc: OSError) -> BackendError:
    if exc.errno == errno.ENOSPC:
        return BackendError(f"{spool.name}: no space left on device")
    return BackendError(f"{spool.name}: {exc.strerror or exc}")
