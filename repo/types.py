"""Value types and narrow protocols shared by the repository modules."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

BlobId = bytes

ID_SIZE = 32


class BlobType(enum.IntEnum):
    """Kind of a blob; the values are the object type bytes of docs/design.md (framing)."""

    DATA = 1
    TREE = 2


class Kind(enum.StrEnum):
    """The object folders of a repository (docs/design.md, repository layout)."""

    CONFIG = "config"
    KEY = "keys"
    DATA = "data"
    INDEX = "index"
    SNAPSHOT = "snapshots"
    LOCK = "locks"


@dataclass(frozen=True, slots=True)
class Handle:
    """Names one object in a backend: its kind and its name (a hex SHA-256, or "config")."""

    kind: Kind
    name: str

    def __str__(self) -> str:
        if self.kind is Kind.CONFIG:
            return "config"
        return f"{self.kind.value}/{self.name}"


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What a backend knows about a stored object."""

    name: str
    size: int
    mtime: float = 0.0  # seconds since the epoch; 0 where the backend cannot tell


@dataclass(frozen=True, slots=True)
class BlobLocation:
    """Where a blob is stored: its pack, and its byte range inside the pack."""

    pack: bytes
    offset: int
    length: int
    raw_length: int


class BlobLoader(Protocol):
    """Loads a blob by id, verified, decrypted and decompressed."""

    def load_blob(self, btype: BlobType, blob_id: BlobId) -> bytes: ...


class BlobSaver(Protocol):
    """Saves a blob unless it is known; returns its id and whether it was new."""

    def save_blob(self, btype: BlobType, data: bytes) -> tuple[BlobId, bool]: ...
