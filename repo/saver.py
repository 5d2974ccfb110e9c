"""Writes new blobs: compression on a small thread pool, sealing, packing and upload."""

from __future__ import annotations

import collections
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from repo.blob import compress, seal_blob
from repo.index import IndexedPack
from repo.pack import PackBuilder
from repo.types import BlobId, BlobType

# zstd and file I/O release the GIL; sealing and hashing of ids hold it (docs/design.md,
# performance notes), so only compression and uploads go to threads.
COMPRESS_THREADS = 2
MAX_IN_FLIGHT = 4


class PackSaver:
    """Turns blobs into packs; calls `on_pack` with each pack once it is stored."""

    def __init__(
        self,
        enc_key: bytes,
        level: int,
        pack_size: int,
        upload: Callable[[bytes, bytearray, BlobType], None],
        on_pack: Callable[[IndexedPack], None],
        uploads: int = 1,
    ) -> None:
        self._key = enc_key
        self._level = level
        self._pack_size = pack_size
        self._upload = upload
        self._on_pack = on_pack
        self._builders: dict[BlobType, PackBuilder] = {}
        self._queue: collections.deque[tuple[BlobType, BlobId, int, Future[bytes]]]
        self._queue = collections.deque()
        self._uploads: collections.deque[tuple[IndexedPack, Future[None]]] = collections.deque()
        self._compressors = ThreadPoolExecutor(COMPRESS_THREADS, thread_name_prefix="compress")
        # Concurrent uploads (--connections for remote repositories); as many packs wait.
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
        builder = self._builders.get(btype)
        if builder is None:
            builder = self._builders[btype] = PackBuilder(btype)
        builder.add(blob_id, sealed, raw_length)
        self.bytes_stored += len(sealed)
        if builder.size >= self._pack_size:
            self._finish(btype)

    def _finish(self, btype: BlobType) -> None:
        builder = self._builders.pop(btype)
        pack_id, data, header_length = builder.finish(self._key)
        blobs = [(b.blob_id, b.offset, b.length, b.raw_length) for b in builder.blobs]
        pack = IndexedPack(pack_id, len(data), header_length, btype, blobs)
        self.bytes_stored += header_length + 4
        self._uploads.append((pack, self._uploader.submit(self._upload, pack_id, data, btype)))
        # Packs uploading while the next one fills: memory stays near uploads + 1 packs.
        while len(self._uploads) > self._max_uploads:
            self._complete_upload()

    def _complete_upload(self) -> None:
        pack, future = self._uploads.popleft()
        future.result()
        self._on_pack(pack)

    def flush(self) -> None:
        """Write every queued blob into packs and wait until all packs are stored."""
        while self._queue:
            self._pack_one()
        for btype in list(self._builders):
            self._finish(btype)
        while self._uploads:
            self._complete_upload()

    def close(self) -> None:
        self._compressors.shutdown(wait=True, cancel_futures=True)
        self._uploader.shutdown(wait=True, cancel_futures=True)
