"""Writes new blobs: compression on a small thread pool, sealing, packing and upload."""

from __future__ import annotations

import collections
import errno
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from repo.blob import compress, seal_blob
from repo.errors import BackendError
from repo.index import IndexedPack
from repo.pack import PackWriter, Spool
from repo.types import BlobId, BlobType

# zstd and file I/O release the GIL; sealing and hashing of ids hold it (docs/design.md,
# performance notes), so only compression and uploads go to threads.
COMPRESS_THREADS = 2
MAX_IN_FLIGHT = 4


class PackSaver:
    """Turns blobs into packs; calls `on_pack` with each pack once it is stored.

    Each pack is written blob by blob into a spool file (`spool` opens one and returns
    it as a `Spool`) and handed to `store` when full; `store` closes it.
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
        self._writers: dict[BlobType, tuple[PackWriter, Spool]] = {}
        self._queue: collections.deque[tuple[BlobType, BlobId, int, Future[bytes]]]
        self._queue = collections.deque()
        self._uploads: collections.deque[tuple[IndexedPack, Spool, Future[None]]]
        self._uploads = collections.deque()
        self._compressors = ThreadPoolExecutor(COMPRESS_THREADS, thread_name_prefix="compress")
        # Concurrent uploads (--connections for remote repositories).
        self._max_uploads = max(1, uploads)
        self._uploader = ThreadPoolExecutor(self._max_uploads, thread_name_prefix="upload")
        self.bytes_stored = 0

    def add(self, btype: BlobType, blob_id: BlobId, data: bytes) -> None:
        """Queue a new blob; its pack is written later (see flush)."""
        future = self._compressors.submit(compress, data, self._level)
        self._queue.append((btype, blob_id, len(data), future))
        while len(self._queue) > MAX_IN_FLIGHT:
            self._pack_one()

    def _pack_one(self) -> None:
        btype, blob_id, raw_length, future = self._queue.popleft()
        sealed = seal_blob(self._key, btype, blob_id, future.result())
        if btype not in self._writers:
            spool = self._spool()
            self._writers[btype] = (PackWriter(btype, spool.fd), spool)
        writer, spool = self._writers[btype]
        try:
            writer.add(blob_id, sealed, raw_length)
        except OSError as exc:
            raise _spool_error(spool, exc) from exc
        self.bytes_stored += len(sealed)
        if writer.size >= self._pack_size:
            self._finish(btype)

    def _finish(self, btype: BlobType) -> None:
        writer, spool = self._writers.pop(btype)
        try:
            pack_id, header_length = writer.finish(self._key)
        except OSError as exc:
            spool.discard()
            raise _spool_error(spool, exc) from exc
        blobs = [(b.blob_id, b.offset, b.length, b.raw_length) for b in writer.blobs]
        pack = IndexedPack(pack_id, writer.size, header_length, btype, blobs)
        self.bytes_stored += header_length + 4
        future = self._uploader.submit(self._store, pack_id, spool, btype)
        self._uploads.append((pack, spool, future))
        while len(self._uploads) > self._max_uploads:
            self._complete_upload()

    def _complete_upload(self) -> None:
        pack, _spool, future = self._uploads.popleft()
        future.result()
        self._on_pack(pack)

    def flush(self) -> None:
        """Write every queued blob into packs and wait until all packs are stored."""
        while self._queue:
            self._pack_one()
        for btype in list(self._writers):
            self._finish(btype)
        while self._uploads:
            self._complete_upload()

    def close(self) -> None:
        self._compressors.shutdown(wait=True, cancel_futures=True)
        self._uploader.shutdown(wait=True, cancel_futures=True)
        # Packs never finished or never stored (an error or an interrupt) leave no spool
        # file behind; a stored pack's file is gone already.
        for _writer, spool in self._writers.values():
            spool.discard()
        self._writers.clear()
        for _pack, spool, _future in self._uploads:
            spool.discard()
        self._uploads.clear()


def _spool_error(spool: Spool, exc: OSError) -> BackendError:
    if exc.errno == errno.ENOSPC:
        return BackendError(f"{spool.name}: no space left on device")
    return BackendError(f"{spool.name}: {exc.strerror or exc}")
