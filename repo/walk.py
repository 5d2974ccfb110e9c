"""Walking snapshot trees: finding a path, listing entries, a file's chunk list."""

from __future__ import annotations

from collections.abc import Iterator

from repo.errors import DamagedObject, PathNotFound, RepoError
from repo.repository import Repository
from repo.tree import Node, decode_content_list
from repo.types import BlobId, BlobType


def is_safe_name(name: bytes) -> bool:
    """Whether an entry name can be created inside a folder without escaping it."""
    return bool(name) and b"/" not in name and b"\0" not in name and name not in (b".", b"..")


def path_parts(path: bytes) -> list[bytes]:
    return [p for p in path.split(b"/") if p and p != b"."]


def find_node(repo: Repository, root: BlobId, path: bytes) -> Node:
    """The node at an absolute path inside a snapshot; the root is a synthetic dir node."""
    node = Node(b"/", "dir", mode=0o755, subtree=root)
    shown = b""
    for part in path_parts(path):
        if node.type != "dir" or node.subtree is None:
            raise PathNotFound(f"{shown.decode(errors='replace')}: not a directory")
        shown += b"/" + part
        children = {n.name: n for n in repo.load_tree(node.subtree)}
        found = children.get(part)
        if found is None:
            raise PathNotFound(f"{shown.decode(errors='replace')}: no such file or directory")
        node = found
    return node


def walk(repo: Repository, tree_id: BlobId, prefix: bytes) -> Iterator[tuple[bytes, Node]]:
    """Every entry below a tree, depth first in name order, with its absolute path."""
    for node in repo.load_tree(tree_id):
        path = prefix.rstrip(b"/") + b"/" + node.name
        yield path, node
        if node.type == "dir" and node.subtree is not None:
            yield from walk(repo, node.subtree, path)


def file_content(repo: Repository, node: Node) -> list[BlobId]:
    """A file's chunk ids, reading its list blobs when it has them."""
    if node.content_lists is None:
        return list(node.content or [])
    out: list[BlobId] = []
    for list_id in node.content_lists:
        data = repo.load_blob(BlobType.TREE, list_id)
        out.extend(decode_content_list(data, name=f"list blob {list_id.hex()[:16]}"))
    return out


def iter_file_data(repo: Repository, node: Node, path: bytes) -> Iterator[bytes]:
    """A file's bytes, chunk by chunk; a missing or damaged chunk raises an error that
    names the file and the byte range it could not deliver."""
    offset = 0
    for blob_id in file_content(repo, node):
        try:
            data = repo.load_blob(BlobType.DATA, blob_id)
        except RepoError as exc:
            shown = path.decode("utf-8", "backslashreplace")
            raise DamagedObject(f"{shown}: damaged from byte {offset}: {exc}") from exc
        offset += len(data)
        yield data
