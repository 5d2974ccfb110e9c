"""Storage backends: opaque named byte strings behind one small interface."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from repo.types import FileInfo, Handle, Kind

TEMP_MARK = ".tmp-"


class Backend(Protocol):
    """Moves opaque bytes; knows nothing of encryption or formats (docs/design.md, backends)."""

    location: str

    def read(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        """Return the object's bytes, or `length` bytes from `offset`; ObjectNotFound if absent."""
        ...

    def write(self, handle: Handle, data: bytes | memoryview) -> None:
        """Create the object atomically; an existing object of the same size counts as success."""
        ...

    def list(self, kind: Kind) -> Iterator[FileInfo]:
        """Every object of one kind (temporary files excluded)."""
        ...

    def stat(self, handle: Handle) -> FileInfo:
        """Size and modification time; ObjectNotFound if absent."""
        ...

    def delete(self, handle: Handle) -> None:
        """Remove the object; a missing object is not an error."""
        ...

    def exists(self) -> bool:
        """Whether the repository location holds a config object."""
        ...

    def close(self) -> None: ...


def open_backend(location: str, *, create: bool = False) -> Backend:
    """Return the backend for a repository location (a path or local:PATH)."""
    from repo.backend.local import LocalBackend  # noqa: PLC0415  (only backend so far)

    path = location.removeprefix("local:")
    return LocalBackend(path, create=create)
