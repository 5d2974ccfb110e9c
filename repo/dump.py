"""dump: one file's bytes, or a directory as a tar stream, written to a binary stream."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from typing import BinaryIO

from repo.repository import Repository
from repo.tree import Node
from repo.walk import iter_file_data, walk


class _ChunkReader(io.RawIOBase):
    """A file's content as a readable stream, one chunk loaded at a time."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""

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
        self._buf = self._buf[n:]
        return n


def dump_file(repo: Repository, node: Node, path: bytes, out: BinaryIO) -> None:
    for data in iter_file_data(repo, node, path):
        out.write(data)


_TAR_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "fifo": tarfile.FIFOTYPE,
    "chardev": tarfile.CHRTYPE,
    "blockdev": tarfile.BLKTYPE,
}


def _tarinfo(name: str, node: Node) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = _TAR_TYPES[node.type]
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


def dump_tar(repo: Repository, node: Node, top: bytes, out: BinaryIO) -> None:
    """Write a directory as a POSIX tar stream, paths relative to its parent."""
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
                stream = io.BufferedReader(_ChunkReader(iter_file_data(repo, child, path)), 1 << 20)
                tar.addfile(info, stream)
            else:
                tar.addfile(info)


def _rel(path: bytes, base: bytes) -> str:
    rel = path[len(base) :].lstrip(b"/") or b"."
    return rel.decode("utf-8", "surrogateescape")
