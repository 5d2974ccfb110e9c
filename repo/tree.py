"""Tree blobs: one directory's sorted entries in a fixed field order (docs/design.md, trees)."""

from __future__ import annotations

import itertools
import operator
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any

import msgpack

from repo.errors import DamagedObject
from repo.types import ID_SIZE, BlobId

TREE_VERSION = 1
# A file with more chunks than this keeps its chunk list in list blobs (docs/design.md, trees).
MAX_INLINE_CONTENT = 10_000

NODE_TYPES = ("file", "dir", "symlink", "fifo", "socket", "chardev", "blockdev")


@dataclass(slots=True)
class Node:
    """One directory entry of a snapshot; field order is the on-disk order."""

    name: bytes
    type: str
    mode: int = 0
    uid: int = 0
    gid: int = 0
    user: str = ""
    group: str = ""
    mtime_ns: int = 0
    ctime_ns: int = 0
    inode: int = 0
    size: int = 0
    content: list[BlobId] | None = None
    subtree: BlobId | None = None
    target: bytes | None = None
    rdev: int = 0
    xattrs: list[tuple[bytes, bytes]] = field(default_factory=list)
    device: int | None = None
    nlink: int | None = None
    atime_ns: int | None = None
    content_lists: list[BlobId] | None = None


_FIELDS = [f.name for f in fields(Node)]
_GET_FIELDS = operator.attrgetter(*_FIELDS)
_XATTRS = _FIELDS.index("xattrs")


def _node_row(node: Node) -> list[Any]:
    row = list(_GET_FIELDS(node))
    row[_XATTRS] = [list(x) for x in node.xattrs]
    return row


def encode_tree(nodes: list[Node]) -> bytes:
    """Encode entries sorted by name, so identical directories encode identically."""
    nodes = sorted(nodes, key=lambda n: n.name)
    data: bytes = msgpack.packb([TREE_VERSION, [_node_row(n) for n in nodes]], use_bin_type=True)
    return data


# A Packer per thread: msgpack.packb() makes one per call, and each new one allocates a
# 256 KiB buffer, a quarter of a megabyte of malloc and free for every entry packed.
_packers = threading.local()


def _packer() -> msgpack.Packer:
    packer: msgpack.Packer | None = getattr(_packers, "packer", None)
    if packer is None:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    return packer


def pack_node(node: Node) -> bytes:
    """One entry as encode_tree() encodes it: a directory of many entries can be kept
    as these bytes, some 150 a file, rather than as Node objects of a kilobyte."""
    data: bytes = _packer().pack(_node_row(node))
    return data


def encode_packed(rows: list[bytes]) -> bytes:
    """encode_tree() of the nodes that pack_node() gave `rows`, already sorted by name:
    the same bytes, since a msgpack array is its header and then its items."""
    packer = _packer()
    head = packer.pack_array_header(2) + packer.pack(TREE_VERSION)
    return b"".join([head, packer.pack_array_header(len(rows)), *rows])


_INT_FIELDS = ("mode", "uid", "gid", "mtime_ns", "ctime_ns", "inode", "size", "rdev")
_GET_INTS = operator.attrgetter(*_INT_FIELDS)
_INT_TYPES = (int,) * len(_INT_FIELDS)


def _check_node(node: Node, name: str) -> None:
    # map(isinstance, ...) rather than a generator: a tree walk checks every entry, and
    # the checks then run without a Python frame each.
    if not isinstance(node.name, bytes) or not all(map(isinstance, _GET_INTS(node), _INT_TYPES)):
        raise DamagedObject(f"{name}: entry with fields of the wrong type")
    if node.type not in NODE_TYPES:
        raise DamagedObject(f"{name}: entry of unknown type {node.type!r}")
    ids = (node.content or []) + (node.content_lists or [])
    if node.subtree is not None:
        ids.append(node.subtree)
    if ids and not (
        all(map(isinstance, ids, itertools.repeat(bytes))) and set(map(len, ids)) == {ID_SIZE}
    ):
        raise DamagedObject(f"{name}: malformed blob id")


def decode_tree(data: bytes, *, name: str = "tree") -> list[Node]:
    """Decode a tree blob; malformed data is DamagedObject naming the tree."""
    try:
        version, rows = msgpack.unpackb(data, raw=False, use_list=True)
        if version != TREE_VERSION:
            raise DamagedObject(f"{name}: unsupported tree version {version}")
        return [_row_node(row, name) for row in rows]
    except (TypeError, ValueError, msgpack.UnpackException) as exc:
        raise DamagedObject(f"{name}: malformed tree") from exc


def iter_tree(data: bytes, *, name: str = "tree") -> Iterator[Node]:
    """decode_tree() one entry at a time, for a directory of any size in little memory;
    malformed data is DamagedObject when it is met."""
    unpacker = msgpack.Unpacker(raw=False, use_list=True, max_buffer_size=max(1, len(data)))
    unpacker.feed(data)
    try:
        if unpacker.read_array_header() != 2:
            raise DamagedObject(f"{name}: malformed tree")
        version = unpacker.unpack()
        if version != TREE_VERSION:
            raise DamagedObject(f"{name}: unsupported tree version {version}")
        for _ in range(unpacker.read_array_header()):
            yield _row_node(unpacker.unpack(), name)
    except (TypeError, ValueError, msgpack.UnpackException) as exc:
        raise DamagedObject(f"{name}: malformed tree") from exc


def _row_node(row: Any, name: str) -> Node:
    node = Node(*row[: len(_FIELDS)])
    node.xattrs = [(bytes(k), bytes(v)) for k, v in node.xattrs]
    _check_node(node, name)
    return node


def encode_content_list(ids: list[BlobId]) -> bytes:
    """A list blob: part of the chunk list of a very large file."""
    data: bytes = msgpack.packb([TREE_VERSION, ids], use_bin_type=True)
    return data


def decode_content_list(data: bytes, *, name: str = "list blob") -> list[BlobId]:
    try:
        version, ids = msgpack.unpackb(data, raw=False)
        if version != TREE_VERSION or any(len(i) != ID_SIZE for i in ids):
            raise DamagedObject(f"{name}: malformed chunk list")
        return [bytes(i) for i in ids]
    except (TypeError, ValueError, msgpack.UnpackException) as exc:
        raise DamagedObject(f"{name}: malformed chunk list") from exc
