"""hutch ls: list the entries of a snapshot."""

from __future__ import annotations

import datetime as dt
import os
import stat
from typing import Any

import click

from cli.context import Globals
from cli.options import filter_options, global_options, select_snapshot, snapshot_json
from cli.output import emit_json, say, show_path, warn
from repo.tree import Node
from repo.walk import find_node, walk

_MODE_BITS = {
    "file": stat.S_IFREG,
    "dir": stat.S_IFDIR,
    "symlink": stat.S_IFLNK,
    "fifo": stat.S_IFIFO,
    "socket": stat.S_IFSOCK,
    "chardev": stat.S_IFCHR,
    "blockdev": stat.S_IFBLK,
}


def _time(ns: int) -> str:
    when = dt.datetime.fromtimestamp(ns // 1_000_000_000).astimezone()
    base = when.isoformat()
    return f"{base[:19]}.{ns % 1_000_000_000:09d}{base[19:]}"


def node_json(path: bytes, node: Node) -> dict[str, Any]:
    mode = _MODE_BITS[node.type] | node.mode
    doc: dict[str, Any] = {
        "name": show_path(node.name),
        "type": node.type,
        "path": show_path(path),
        "uid": node.uid,
        "gid": node.gid,
        "user": node.user,
        "group": node.group,
        "size": node.size,
        "mode": mode,
        "permissions": stat.filemode(mode),
        "mtime": _time(node.mtime_ns),
        "ctime": _time(node.ctime_ns),
        "inode": node.inode,
        "struct_type": "node",
        "message_type": "node",
    }
    if node.atime_ns is not None:
        doc["atime"] = _time(node.atime_ns)
    if node.type == "symlink":
        doc["link_target"] = show_path(node.target or b"")
    return doc


def run_ls(
    g: Globals,
    ref: str,
    path: str | None,
    hosts: tuple[str, ...],
    paths: tuple[str, ...],
    tags: tuple[str, ...],
) -> None:
    repo = g.open()
    try:
        snap = select_snapshot(repo, ref, hosts, paths, tags)
        top = os.fsencode(path or "/")
        node = find_node(repo, snap.tree, top)
        entries: list[tuple[bytes, Node]] = []
        norm = b"/" + b"/".join(p for p in top.split(b"/") if p)
        if norm != b"/":
            entries.append((norm, node))
        if node.type == "dir" and node.subtree is not None:
            entries.extend(walk(repo, node.subtree, norm))
    finally:
        repo.close()
    if g.is_json:
        doc = snapshot_json(snap)
        doc.update(struct_type="snapshot", message_type="snapshot")
        emit_json(doc)
        for p, n in entries:
            emit_json(node_json(p, n))
        return
    if not g.is_quiet:
        warn(
            f"snapshot {snap.short_id} of {snap.str_paths()} at {snap.datetime:%Y-%m-%d %H:%M:%S}:"
        )
    for p, _n in entries:
        say(show_path(p))


@click.command("ls")
@global_options
@click.argument("snapshot")
@click.argument("path", required=False)
@filter_options
@click.pass_obj
def ls(
    g: Globals,
    snapshot: str,
    path: str | None,
    hosts: tuple[str, ...],
    paths: tuple[str, ...],
    tags: tuple[str, ...],
) -> None:
    """List the entries of SNAPSHOT (all, or those at and below PATH)."""
    run_ls(g, snapshot, path, hosts, paths, tags)
