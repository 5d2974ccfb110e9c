"""The local-directory backend: atomic create-only writes with fsync."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

from repo.backend import TEMP_MARK
from repo.errors import BackendError, ObjectNotFound
from repo.types import FileInfo, Handle, Kind

# Pack bytes this backend has written (once durable: `adopt`, `write`) or read (at
# least DROP_FROM of them) leave the page cache straight away (docs/design.md, "Page
# cache"): a backup or a restore would otherwise fill memory with data no one reads
# again soon, and fresh pages for the next pack cost the kernel far more than pages
# just freed.
DROP_FROM = 128 * 1024


def _drop_cached(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to drop the cached pages of fd's bytes offset .. offset+length
    (0 = to the end); a hint, so a system without it or refusing it changes nothing."""
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBackend:
    """A repository in a folder: `config`, `keys/`, `data/<2 hex>/`, `index/`, ..."""

    def __init__(self, path: str, *, create: bool = False) -> None:
        self.location = os.path.abspath(path)
        self._is_create = create
        self._known_dirs: set[str] = set()

    def _path(self, handle: Handle) -> str:
        if handle.kind is Kind.CONFIG:
            return os.path.join(self.location, "config")
        if handle.kind is Kind.DATA:
            return os.path.join(self.location, "data", handle.name[:2], handle.name)
        return os.path.join(self.location, handle.kind.value, handle.name)

    def exists(self) -> bool:
        return os.path.isfile(os.path.join(self.location, "config"))

    def read(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        try:
            fd = os.open(self._path(handle), os.O_RDONLY)
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"{handle}: not found") from exc
        except OSError as exc:
            raise BackendError(f"{handle}: {exc.strerror}") from exc
        try:
            if length is None:
                size = os.fstat(fd).st_size - offset
                length = max(size, 0)
            data = os.pread(fd, length, offset)
            parts = [data]
            got = len(data)
            while len(data) > 0 and got < length:
                data = os.pread(fd, length - got, offset + got)
                parts.append(data)
                got += len(data)
            if handle.kind is Kind.DATA and got >= DROP_FROM:
                _drop_cached(fd, offset, got)
            return parts[0] if len(parts) == 1 else b"".join(parts)
        except OSError as exc:
            raise BackendError(f"{handle}: {exc.strerror}") from exc
        finally:
            os.close(fd)

    def _ensure_dir(self, path: str) -> None:
        if path in self._known_dirs:
            return
        if not os.path.isdir(path):
            os.makedirs(path, exist_ok=True)
            _fsync_dir(os.path.dirname(path))
        self._known_dirs.add(path)

    def write(self, handle: Handle, data: bytes | bytearray | memoryview) -> None:
        final = self._path(handle)
        folder = os.path.dirname(final)
        temp = os.path.join(folder, f"{os.path.basename(final)}{TEMP_MARK}{os.urandom(6).hex()}")
        try:
            self._ensure_dir(folder)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
                if handle.kind is Kind.DATA:
                    _drop_cached(fd, 0, 0)
            finally:
                os.close(fd)
            if os.path.exists(final) and os.path.getsize(final) == len(data):
                os.unlink(temp)
                return
            os.replace(temp, final)
            _fsync_dir(folder)
        except OSError as exc:
            raise _failed_write(handle, exc, temp) from exc

    def spool_dir(self) -> str:
        """Where packs are written while they fill: the data folder itself, whose listing
        (one level of subfolders) never shows its own files, so `adopt` is a rename."""
        folder = os.path.join(self.location, Kind.DATA.value)
        try:
            self._ensure_dir(folder)
        except OSError as exc:
            raise BackendError(f"{folder}: {exc.strerror or exc}") from exc
        return folder

    def adopt(self, handle: Handle, fd: int, path: str) -> None:
        """Store the finished file at path (in spool_dir, open as fd) as the object:
        made durable, then renamed into place, so it appears whole or not at all."""
        final = self._path(handle)
        folder = os.path.dirname(final)
        try:
            self._ensure_dir(folder)
            os.fsync(fd)
            os.replace(path, final)
            _fsync_dir(folder)
        except OSError as exc:
            raise _failed_write(handle, exc, path) from exc
        _drop_cached(fd, 0, 0)

    def list(self, kind: Kind) -> Iterator[FileInfo]:
        folder = os.path.join(self.location, kind.value)
        folders = [folder]
        if kind is Kind.DATA:
            try:
                folders = [e.path for e in os.scandir(folder) if e.is_dir()]
            except FileNotFoundError:
                return
        for path in folders:
            try:
                entries = list(os.scandir(path))
            except FileNotFoundError:
                continue
            for entry in entries:
                if TEMP_MARK in entry.name or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted since the folder was read: a lock released, a pack pruned
                yield FileInfo(entry.name, st.st_size, st.st_mtime)

    def stat(self, handle: Handle) -> FileInfo:
        try:
            st = os.stat(self._path(handle))
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"{handle}: not found") from exc
        except OSError as exc:
            raise BackendError(f"{handle}: {exc.strerror}") from exc
        return FileInfo(handle.name, st.st_size, st.st_mtime)

    def delete(self, handle: Handle) -> None:
        try:
            os.unlink(self._path(handle))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise BackendError(f"{handle}: {exc.strerror}") from exc

    def close(self) -> None:
        return None


def _failed_write(handle: Handle, exc: OSError, temp: str) -> BackendError:
    """Remove the temporary file of a write that failed; the error to raise for it."""
    with contextlib.suppress(OSError):
        os.unlink(temp)
    if exc.errno == errno.ENOSPC:
        return BackendError(f"{handle}: no space left on device")
    return BackendError(f"{handle}: {exc.strerror or exc}")
