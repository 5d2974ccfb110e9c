"""hutch snapshots: list snapshots."""

from __future__ import annotations

import click

from cli.context import Globals
from cli.options import filter_options, global_options, snapshot_json
from cli.output import emit_json, say, snapshot_table
from repo.snapshot import SnapshotFilter, sort_snapshots


def run_snapshots(
    g: Globals, hosts: tuple[str, ...], paths: tuple[str, ...], tags: tuple[str, ...]
) -> None:
    repo = g.open()
    try:
        flt = SnapshotFilter(hosts, tags, paths)
        snaps = sort_snapshots(s for s in repo.list_snapshots() if flt.matches(s))
    finally:
        repo.close()
    if g.is_json:
        emit_json([snapshot_json(s) for s in snaps])
    else:
        for line in snapshot_table(snaps, None)[:-1]:
            say(line)


@click.command("snapshots")
@global_options
@filter_options
@click.pass_obj
def snapshots(
    g: Globals, hosts: tuple[str, ...], paths: tuple[str, ...], tags: tuple[str, ...]
) -> None:
    """List snapshots, oldest first."""
    run_snapshots(g, hosts, paths, tags)
