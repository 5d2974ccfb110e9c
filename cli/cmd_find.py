"""hutch find: which snapshots hold paths matching a pattern."""

from __future__ import annotations

import datetime as dt
import stat
from typing import Any

import click

from cli.cmd_ls import node_json
from cli.context import Globals
from cli.options import filter_options, global_options
from cli.output import emit_json, say, show_path
from repo.find import Finder, Match
from repo.snapshot import Snapshot, SnapshotFilter, select_snapshots
from repo.tree import Node

_TYPE_CHAR = {"dir": "d", "symlink": "l", "fifo": "p", "socket": "s", "chardev": "c"}


def _long(path: bytes, node: Node) -> str:
    """restic's long listing: mode, owner, size, modification time, path."""
    mode = stat.filemode(node.mode)[1:]
    kind = _TYPE_CHAR.get(node.type, "b" if node.type == "blockdev" else "-")
    when = dt.datetime.fromtimestamp(node.mtime_ns / 1e9).astimezone()
    owner = f"{node.user or node.uid:<8} {node.group or node.gid:<8}"
    return f"{kind}{mode} {owner} {node.size:>12} {when:%Y-%m-%d %H:%M:%S} {show_path(path)}"


def _json(snap: Snapshot, matches: list[Match]) -> dict[str, Any]:
    return {
        "snapshot": snap.id,
        "hits": len(matches),
        "matches": [node_json(path, node) for path, node in matches],
    }


def run_find(
    g: Globals,
    patterns: tuple[str, ...],
    refs: tuple[str, ...],
    flt: SnapshotFilter,
    is_ignore_case: bool,
) -> None:
    repo = g.open()
    found: list[tuple[Snapshot, list[Match]]] = []
    try:
        with g.lock(repo, is_exclusive=False):
            finder = Finder(repo, patterns, is_ignore_case=is_ignore_case)
            for snap in select_snapshots(repo.list_snapshots(), refs, flt):
                matches = finder.find(snap.tree)
                if matches:
                    found.append((snap, matches))
    finally:
        repo.close()
    if g.is_json:
        emit_json([_json(snap, matches) for snap, matches in found])
        return
    for n, (snap, matches) in enumerate(found):
        if n:
            say("", is_quiet=g.is_quiet)
        when = f"{snap.datetime:%Y-%m-%d %H:%M:%S}"
        say(f"Found matching entries in snapshot {snap.short_id} from {when}", is_quiet=g.is_quiet)
        for path, node in matches:
            say(_long(path, node))


@click.command("find")
@global_options
@click.argument("patterns", nargs=-1, required=True, metavar="PATTERN...")
@click.option(
    "--snapshot",
    "-s",
    "refs",
    multiple=True,
    metavar="ID",
    help="search only this snapshot (can be given more than once)",
)
@click.option("--ignore-case", "-i", is_flag=True, help="ignore case in the patterns")
@filter_options
@click.pass_obj
def find(
    g: Globals,
    patterns: tuple[str, ...],
    refs: tuple[str, ...],
    ignore_case: bool,
    hosts: tuple[str, ...],
    paths: tuple[str, ...],
    tags: tuple[str, ...],
) -> None:
    """Find files and folders whose name (PATTERN without /) or path matches a pattern.

    Patterns use restic's syntax: *, ?, [...], ** for any number of folders; one
    starting with / matches from the snapshot's root."""
    run_find(g, patterns, refs, SnapshotFilter(hosts, tags, paths), ignore_case)
