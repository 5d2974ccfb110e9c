"""hutch cat: print one repository object, decrypted, for debugging.

config, index, snapshot, tree and lock print as JSON (bytes as hex, names with
backslash escapes); blob and pack print raw bytes; key prints only the key file's
plaintext wrapper fields, never the sealed master key.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click
import msgpack

from cli.context import Globals
from cli.errors import EXIT_USAGE, CliError
from cli.options import global_options
from cli.output import say, show_path
from crypto import ObjectType, read_kdf_params
from repo.config import config_fields
from repo.diff import snapshot_tree
from repo.errors import BlobNotFound, ObjectNotFound
from repo.index import decode_index
from repo.keys import find_key
from repo.repack import find_pack
from repo.repository import Repository
from repo.snapshot import SnapshotFilter, decode_snapshot
from repo.tree import Node
from repo.types import ID_SIZE, BlobId, BlobType, Handle, Kind

TYPES = ("config", "index", "snapshot", "tree", "blob", "pack", "key", "lock")
_HEX = frozenset("0123456789abcdef")


def plain(value: object) -> object:
    """A decoded value made JSON-safe: bytes as hex, containers converted throughout."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(plain(k)): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _show(doc: object) -> None:
    say(json.dumps(doc, indent=2))


def _hex_ids(ids: list[BlobId] | None) -> list[str] | None:
    return None if ids is None else [i.hex() for i in ids]


def node_doc(node: Node) -> dict[str, Any]:
    """Every stored field of a tree entry; names and link targets with backslash escapes."""
    return {
        "name": show_path(node.name),
        "type": node.type,
        "mode": node.mode,
        "uid": node.uid,
        "gid": node.gid,
        "user": node.user,
        "group": node.group,
        "mtime_ns": node.mtime_ns,
        "ctime_ns": node.ctime_ns,
        "inode": node.inode,
        "size": node.size,
        "content": _hex_ids(node.content),
        "subtree": node.subtree.hex() if node.subtree is not None else None,
        "target": show_path(node.target) if node.target is not None else None,
        "rdev": node.rdev,
        "xattrs": [{"name": show_path(k), "value": v.hex()} for k, v in node.xattrs],
        "device": node.device,
        "nlink": node.nlink,
        "atime_ns": node.atime_ns,
        "content_lists": _hex_ids(node.content_lists),
    }


def _find_object(repo: Repository, kind: Kind, prefix: str) -> str:
    """The one object of a kind whose name starts with `prefix`."""
    prefix = prefix.lower()
    noun = kind.value.removesuffix("s")
    if not prefix or not set(prefix) <= _HEX:
        raise CliError(f"{noun} {prefix!r}: not an ID")
    found = [i.name for i in repo.backend.list(kind) if i.name.startswith(prefix)]
    if len(found) != 1:
        what = f"no such {noun}" if not found else f"prefix is ambiguous ({len(found)} match)"
        raise CliError(f"{noun} {prefix}: {what}")
    return found[0]


def _blob_id(text: str) -> BlobId:
    text = text.lower()
    if len(text) != 2 * ID_SIZE or not set(text) <= _HEX:
        raise CliError(f"blob {text!r}: a blob ID is {2 * ID_SIZE} hex digits")
    return bytes.fromhex(text)


# -- one function per object type ------------------------------------------------------


def _config(repo: Repository, ref: str) -> None:
    _show(config_fields(repo.config))


def _index(repo: Repository, ref: str) -> None:
    name = _find_object(repo, Kind.INDEX, ref)
    data = repo.read_object(Kind.INDEX, ObjectType.INDEX, name)
    packs, supersedes = decode_index(data, name=f"index {name[:8]}")
    doc = {
        "supersedes": [s.hex() for s in supersedes],
        "packs": [
            {
                "id": p.pack_id.hex(),
                "size": p.size,
                "header_length": p.header_length,
                "type": p.btype.name.lower(),
                "blobs": [
                    {"id": b.hex(), "offset": o, "length": n, "uncompressed_length": raw}
                    for b, o, n, raw in p.blobs
                ],
            }
            for p in packs
        ],
    }
    _show(doc)


def _snapshot(repo: Repository, ref: str) -> None:
    name = _find_object(repo, Kind.SNAPSHOT, ref)
    snap = decode_snapshot(repo.read_object(Kind.SNAPSHOT, ObjectType.SNAPSHOT, name), name)
    doc = {
        "time": snap.rfc3339(),
        "time_ns": snap.time_ns,
        "tz_offset": snap.tz_offset,
        "tree": snap.tree.hex(),
        "paths": [show_path(p) for p in snap.paths],
        "hostname": snap.hostname,
        "username": snap.username,
        "uid": snap.uid,
        "gid": snap.gid,
        "tags": snap.tags,
        "parent": snap.parent,
        "original": snap.original,
        "program_version": snap.program_version,
        "start_ns": snap.start_ns,
        "summary": plain(snap.summary),
    }
    _show(doc)


def _tree(repo: Repository, ref: str) -> None:
    """A tree blob by id, or the tree of SNAPSHOT[:PATH]."""
    is_id = len(ref) == 2 * ID_SIZE and set(ref.lower()) <= _HEX
    if is_id and repo.index.has(BlobType.TREE, bytes.fromhex(ref)):
        tree_id = bytes.fromhex(ref)
    else:
        tree_id = snapshot_tree(repo, repo.list_snapshots(), ref, SnapshotFilter())[1]
    _show({"id": tree_id.hex(), "nodes": [node_doc(n) for n in repo.load_tree(tree_id)]})


def _blob(repo: Repository, ref: str) -> None:
    """A data blob's bytes, or a tree blob's when no data blob has the id (restic's order)."""
    blob_id = _blob_id(ref)
    try:
        data = repo.load_blob(BlobType.DATA, blob_id)
    except BlobNotFound:
        try:
            data = repo.load_blob(BlobType.TREE, blob_id)
        except BlobNotFound:
            raise BlobNotFound(f"blob {blob_id.hex()[:16]}: not in index") from None
    sys.stdout.buffer.write(data)


def _pack(repo: Repository, ref: str) -> None:
    name = find_pack(repo, ref)
    sys.stdout.buffer.write(repo.backend.read(Handle(Kind.DATA, name)))


def _key(repo: Repository, ref: str) -> None:
    """The wrapper's plaintext fields only: the sealed part holds the master key."""
    name = find_key(repo, ref)
    data = repo.backend.read(Handle(Kind.KEY, name))
    params = read_kdf_params(data)  # validates the wrapper before we show anything
    wrapper = msgpack.unpackb(data, raw=False)
    _show(
        {
            "id": name,
            "is_current": name == repo.key_name,
            "version": wrapper["version"],
            "kdf": wrapper["kdf"],
            "memory_kib": params.memory_kib,
            "iterations": params.iterations,
            "lanes": params.lanes,
            "salt": bytes(wrapper["salt"]).hex(),
            "sealed_length": len(wrapper["sealed"]),
        }
    )


def _lock(repo: Repository, ref: str) -> None:
    name = _find_object(repo, Kind.LOCK, ref)
    _show(plain(msgpack.unpackb(repo.read_object(Kind.LOCK, ObjectType.LOCK, name), raw=False)))


_PRINTERS: dict[str, Callable[[Repository, str], None]] = {
    "config": _config,
    "index": _index,
    "snapshot": _snapshot,
    "tree": _tree,
    "blob": _blob,
    "pack": _pack,
    "key": _key,
    "lock": _lock,
}


def run_cat(g: Globals, what: str, ref: str | None) -> None:
    if (ref is None) != (what == "config"):
        need = "takes no ID" if what == "config" else "needs an ID"
        raise CliError(f"cat {what} {need}", EXIT_USAGE)
    repo = g.open()
    try:
        _PRINTERS[what](repo, ref or "")
        sys.stdout.flush()
    except ObjectNotFound as exc:
        raise CliError(f"{what} {ref}: {exc}") from exc
    finally:
        repo.close()


@click.command("cat")
@global_options
@click.argument("what", type=click.Choice(TYPES), metavar="TYPE")
@click.argument("ref", required=False, metavar="[ID]")
@click.pass_obj
def cat(g: Globals, what: str, ref: str | None) -> None:
    """Print a repository object: config, index ID, snapshot ID, tree ID|SNAPSHOT[:PATH],
    blob ID, pack ID, key ID or lock ID (IDs of files may be unique prefixes)."""
    run_cat(g, what, ref)
