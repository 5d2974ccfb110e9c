"""hutch snapshots: list snapshots."""

from __future__ import annotations

import click

from cli.context import Globals
from cli.options import filter_options, global_options, snapshot_json
from cli.output import emit_json, say
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
        return
    rows = [
        (
            s.short_id,
            s.datetime.strftime("%Y-%m-%d %H:%M:%S"),
            s.hostname,
            ",".join(s.tags),
            ", ".join(s.str_paths()),
        )
        for s in snaps
    ]
    header = ("ID", "Time", "Host", "Tags", "Paths")
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths)
    say(fmt.format(*header).rstrip())
    say("-" * (sum(widths) + 2 * (len(widths) - 1)))
    for row in rows:
        say(fmt.format(*row).rstrip())
    say("-" * (sum(widths) + 2 * (len(widths) - 1)))
    say(f"{len(rows)} snapshots")


@click.command("snapshots")
@global_options
@filter_options
@click.pass_obj
def snapshots(
    g: Globals, hosts: tuple[str, ...], paths: tuple[str, ...], tags: tuple[str, ...]
) -> None:
    """List snapshots, oldest first."""
    run_snapshots(g, hosts, paths, tags)
