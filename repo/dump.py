"""dump: one file's bytes, or a directory as a tar stream, written to a binary stream."""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

from repo.errors import DamagedObject, RepoError
from repo.packread import Data, load_in_order
from repo.repository import Repository
from repo.tree import Node
from repo.walk import file_content, walk

if TYPE_CHECKING:
    import tarfile  # imported when a folder is dumped: start-up time counts in every dump

# Threads loading blobs ahead while one is written, for a local repository (a remote one
# gets --connections of them).
THREADS = 2


def file_chunks(
    repo: Repository, node: Node, path: bytes, threads: int = THREADS
) -> Iterator[Data]:
    """A file's bytes, chunk by chunk, the next chunks loaded while this one is used; a
    missing or damaged chunk raises an error that names the file and the byte where the
    bytes it could not deliver start."""
    offset = 0
    content = file_content(repo, node)
    if len(content) < 2:
        threads = 0  # nothing to load ahead: no pool to start
    try:
        for data in load_in_order(repo, content, threads):
            offset += len(data)
            yield data
    except RepoError as exc:
        shown = path.decode("utf-8", "backslashreplace")
        raise DamagedObject(f"{shown}: damaged from byte {offset}: {exc}") from exc


class _ChunkReader(io.RawIOBase):
    """A file's content as a readable stream, one chunk loaded at a time."""

    def __init__(self, chunks: Iterator[Data]) -> None:
        self._chunks = chunks
        self._buf: Data = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = memoryview(self._buf)[n:]  # slicing bytes would copy the rest
        return n


def dump_file(
    repo: Repository, node: Node, path: bytes, out: BinaryIO, threads: int = THREADS
) -> None:
    for data in file_chunks(repo, node, path, threads):
        out.write(data)


@functools.cache
def _tar_types() -> dict[str, bytes]:
    import tarfile  # noqa: PLC0415 - see the import above

    return {
        "file": tarfile.REGTYPE,
        "dir": tarfile.DIRTYPE,
        "symlink": tarfile.SYMTYPE,
        "fifo": tarfile.FIFOTYPE,
        "chardev": tarfile.CHRTYPE,
        "blockdev": tarfile.BLKTYPE,
    }


def _tarinfo(name: str, node: Node) -> tarfile.TarInfo:
    import tarfile  # noqa: PLC0415 - see the import above

    info = tarfile.TarInfo(name)
    info.type = _tar_types()[node.type]
    info.mode = node.mode
    info.uid, info.gid = node.uid, node.gid
    info.uname, info.gname = node.user, node.group
    info.mtime = node.mtime_ns // 1_000_000_000
    if node.type == "file":
        info.size = node.size
    if node.type == "symlink":
        info.linkname = (node.target or b"").decode("utf-8", "surrogateescape")
    if node.type in ("chardev", "blockdev"):
        info.devmajor, info.devminor = os.major(node.rdev), os.minor(node.rdev)
    return info


def dump_tar(
    repo: Repository, node: Node, top: bytes, out: BinaryIO, threads: int = THREADS
) -> None:
    """Write a directory as a POSIX tar stream, paths relative to its parent."""
    import tarfile  # noqa: PLC0415 - see the import above

    with tarfile.open(
        fileobj=out,
        mode="w|",
        format=tarfile.PAX_FORMAT,
        encoding="utf-8",
        errors="surrogateescape",
    ) as tar:
        base = top.rstrip(b"/").rsplit(b"/", 1)[0]
        tar.addfile(_tarinfo(_rel(top, base), node))
        if node.subtree is None:
            return
        links: dict[tuple[int, int], str] = {}
        for path, child in walk(repo, node.subtree, top):
            if child.type == "socket":
                continue
            name = _rel(path, base)
            info = _tarinfo(name, child)
            if child.nlink and child.device is not None and child.type == "file":
                key = (child.device, child.inode)
                if key in links:
                    info.type, info.linkname, info.size = tarfile.LNKTYPE, links[key], 0
                    tar.addfile(info)
                    continue
                links[key] = name
            if child.type == "file":
                stream = io.BufferedReader(
                    _ChunkReader(file_chunks(repo, child, path, threads)), 1 << 20
                )
                tar.addfile(info, stream)
            else:
                tar.addfile(info)


def _rel(path: bytes, base: bytes) -> str:
    rel = path[len(base) :].lstrip(b"/") or b"."
    return rel.decode("utf-8", "surrogateescape")
