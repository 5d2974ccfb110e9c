"""An in-memory backend: the fast default for unit tests."""

from __future__ import annotations

import time
from collections.abc import Iterator

from repo.errors import ObjectNotFound
from repo.types import FileInfo, Handle, Kind


class MemoryBackend:
    """Keeps objects in a dict; behaves like the other backends otherwise."""

    def __init__(self) -> None:
        self.location = "memory:"
        self.objects: dict[Handle, tuple[bytes, float]] = {}

    def exists(self) -> bool:
        return Handle(Kind.CONFIG, "config") in self.objects

    def read(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        try:
            data = self.objects[handle][0]
        except KeyError as exc:
            raise ObjectNotFound(f"{handle}: not found") from exc
        end = len(data) if length is None else offset + length
        return data[offset:end]

    def write(self, handle: Handle, data: bytes | bytearray | memoryview) -> None:
        old = self.objects.get(handle)
        if old is not None and len(old[0]) == len(data):
            return
        self.objects[handle] = (bytes(data), time.time())

    def list(self, kind: Kind) -> Iterator[FileInfo]:
        for handle, (data, mtime) in list(self.objects.items()):
            if handle.kind is kind:
                yield FileInfo(handle.name, len(data), mtime)

    def stat(self, handle: Handle) -> FileInfo:
        try:
            data, mtime = self.objects[handle]
        except KeyError as exc:
            raise ObjectNotFound(f"{handle}: not found") from exc
        return FileInfo(handle.name, len(data), mtime)

    def delete(self, handle: Handle) -> None:
        self.objects.pop(handle, None)

    def close(self) -> None:
        return None
