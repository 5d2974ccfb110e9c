"""hutch diff: what changed between two snapshots (or folders of them)."""

from __future__ import annotations

from dataclasses import asdict

import click

from cli.context import Globals
from cli.options import filter_options, global_options
from cli.output import emit_json, format_bytes, say, show_path
from repo.diff import Differ, snapshot_tree
from repo.snapshot import SnapshotFilter


def _summary(differ: Differ) -> list[str]:
    a, r = differ.added, differ.removed
    return [
        "",
        f"Files:       {a.files:5d} new, {r.files:5d} removed, {differ.changed_files:5d} changed",
        f"Dirs:        {a.dirs:5d} new, {r.dirs:5d} removed",
        f"Others:      {a.others:5d} new, {r.others:5d} removed",
        f"Data Blobs:  {a.data_blobs:5d} new, {r.data_blobs:5d} removed",
        f"Tree Blobs:  {a.tree_blobs:5d} new, {r.tree_blobs:5d} removed",
        f"  Added:   {format_bytes(a.bytes)}",
        f"  Removed: {format_bytes(r.bytes)}",
    ]


def run_diff(g: Globals, first: str, second: str, flt: SnapshotFilter) -> None:
    repo = g.open()
    try:
        with g.lock(repo, is_exclusive=False):
            snaps = repo.list_snapshots()
            snap1, tree1 = snapshot_tree(repo, snaps, first, flt)
            snap2, tree2 = snapshot_tree(repo, snaps, second, flt)
            if not g.is_json:
                say(
                    f"comparing snapshot {snap1.short_id} to {snap2.short_id}:\n",
                    is_quiet=g.is_quiet,
                )
            differ = Differ(repo)
            for change in differ.diff(tree1, tree2):
                path = show_path(change.path)
                if g.is_json:
                    emit_json({"message_type": "change", "path": path, "modifier": change.modifier})
                else:
                    say(f"{change.modifier:<5s}{path}", is_quiet=g.is_quiet)
    finally:
        repo.close()
    if g.is_json:
        emit_json(
            {
                "message_type": "statistics",
                "source_snapshot": first,
                "target_snapshot": second,
                "changed_files": differ.changed_files,
                "added": asdict(differ.added),
                "removed": asdict(differ.removed),
            }
        )
        return
    for line in _summary(differ):
        say(line)


@click.command("diff")
@global_options
@click.argument("first", metavar="SNAPSHOT[:PATH]")
@click.argument("second", metavar="SNAPSHOT[:PATH]")
@filter_options
@click.pass_obj
def diff(
    g: Globals,
    first: str,
    second: str,
    hosts: tuple[str, ...],
    paths: tuple[str, ...],
    tags: tuple[str, ...],
) -> None:
    """Show what changed from the first snapshot to the second.

    + added, - removed, M content modified, U metadata (mode, owner, times) changed,
    T type changed, M? content changed but all metadata kept (probable bit rot)."""
    run_diff(g, first, second, SnapshotFilter(hosts, tags, paths))
