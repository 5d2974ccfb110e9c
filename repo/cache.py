"""The local cache of a remote repository: index files, snapshots and tree packs,
stored exactly as in the repository (still encrypted), per repository id."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable

from repo.digest import sha256_hex
from repo.types import Handle, Kind

CACHEDIR_TAG = (
    b"Signature: 8a477f597d28d172789f06886806bc55\n"
    b"# This file is a cache directory tag created by hutch.\n"
)


def default_cache_root() -> str:
    """$HUTCH_CACHE_DIR, else the platform's user cache folder."""
    env = os.environ.get("HUTCH_CACHE_DIR")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "hutch")


class Cache:
    """A folder per repository id; a lost or stale cache only costs downloads."""

    def __init__(self, root: str, repo_id: str) -> None:
        self.root = root
        self.path = os.path.join(root, repo_id)
        os.makedirs(self.path, exist_ok=True)
        tag = os.path.join(root, "CACHEDIR.TAG")
        if not os.path.exists(tag):
            self._store(tag, CACHEDIR_TAG)

    def _file(self, handle: Handle) -> str:
        if handle.kind is Kind.DATA:
            return os.path.join(self.path, "data", handle.name[:2], handle.name)
        return os.path.join(self.path, handle.kind.value, handle.name)

    @staticmethod
    def _store(path: str, data: bytes | bytearray) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temp = f"{path}.tmp-{os.urandom(4).hex()}"
        try:
            with open(temp, "wb") as f:
                f.write(data)
            os.replace(temp, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temp)  # a full or read-only cache disk only costs downloads

    def get(self, handle: Handle) -> bytes | None:
        """The cached object, if it is there and still matches its name."""
        try:
            with open(self._file(handle), "rb") as f:
                data = f.read()
        except OSError:
            return None
        if sha256_hex(data) != handle.name:
            self.drop(handle)
            return None
        return data

    def get_range(self, handle: Handle, offset: int, length: int) -> bytes | None:
        """Bytes of a cached pack (checked as a whole when it was stored)."""
        try:
            with open(self._file(handle), "rb") as f:
                f.seek(offset)
                data = f.read(length)
        except OSError:
            return None
        return data if len(data) == length else None

    def put(self, handle: Handle, data: bytes | bytearray) -> None:
        self._store(self._file(handle), data)

    def drop(self, handle: Handle) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._file(handle))

    def retain(self, kind: Kind, names: Iterable[str]) -> None:
        """Forget cached objects of a kind that the repository no longer holds."""
        keep = set(names)
        folder = os.path.join(self.path, kind.value)
        for dirpath, _dirs, files in os.walk(folder):
            for name in files:
                if name not in keep:
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(dirpath, name))
