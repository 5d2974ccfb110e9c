"""Bandwidth limits (--limit-upload, --limit-download) for any backend."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from repo.backend import Backend
from repo.types import FileInfo, Handle, Kind


class _Bucket:
    """A token bucket shared by every thread of the process: bytes per second."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        with self._lock:
            now = time.monotonic()
            self._next = max(now, self._next) + n / self.rate
            done = self._next
        # Return when these bytes would have passed at the limited rate.
        if done > now:
            time.sleep(done - now)


class LimitBackend:
    """Paces reads and writes of the wrapped backend to KiB/s limits (0 = none)."""

    def __init__(self, inner: Backend, upload_kib: int, download_kib: int) -> None:
        self.inner = inner
        self.location = inner.location
        self._up = _Bucket(upload_kib * 1024) if upload_kib else None
        self._down = _Bucket(download_kib * 1024) if download_kib else None

    def read(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        data = self.inner.read(handle, offset, length)
        if self._down:
            self._down.take(len(data))
        return data

    def write(self, handle: Handle, data: bytes | bytearray | memoryview) -> None:
        if self._up:
            self._up.take(len(data))
        self.inner.write(handle, data)

    def list(self, kind: Kind) -> Iterator[FileInfo]:
        return self.inner.list(kind)

    def stat(self, handle: Handle) -> FileInfo:
        return self.inner.stat(handle)

    def delete(self, handle: Handle) -> None:
        self.inner.delete(handle)

    def exists(self) -> bool:
        return self.inner.exists()

    def close(self) -> None:
        self.inner.close()
