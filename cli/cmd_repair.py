"""hutch repair index|snapshots: rebuild the index, rewrite snapshots around lost data."""

from __future__ import annotations

import click

from cli.context import Globals
from cli.options import filter_options, global_options, select_snapshot
from cli.output import emit_json, say, warn
from repo.repair import SnapshotRepairer, repair_index
from repo.snapshot import SnapshotFilter, sort_snapshots


def run_repair_index(g: Globals) -> None:
    repo = g.open()
    try:
        with g.lock(repo, is_exclusive=True):
            result = repair_index(repo, warn)
    finally:
        repo.close()
    if g.is_json:
        emit_json(
            {
                "message_type": "summary",
                "packs": result.packs,
                "blobs": result.blobs,
                "damaged_packs": result.damaged,
                "index_files_replaced": result.replaced,
            }
        )
        return
    say(
        f"indexed {result.blobs} blobs in {result.packs} packs, replacing "
        f"{result.replaced} index files; {len(result.damaged)} packs unreadable",
        is_quiet=g.is_quiet,
    )


def run_repair_snapshots(
    g: Globals, refs: tuple[str, ...], flt: SnapshotFilter, is_forget: bool, is_dry_run: bool
) -> None:
    repo = g.open()
    try:
        with g.lock(repo, is_exclusive=True):
            snaps = sort_snapshots(s for s in repo.list_snapshots() if flt.matches(s))
            if refs:
                snaps = [select_snapshot(repo, r, (), (), ()) for r in refs]
            repairer = SnapshotRepairer(repo, warn, is_dry_run=is_dry_run)
            changed = []
            for snap in snaps:
                new = repairer.snapshot(snap)
                if new is None:
                    continue
                changed.append((snap, new))
                if not is_dry_run:
                    repo.flush()
                    repo.save_snapshot(new)
                    if is_forget:
                        repo.delete_snapshot(snap.id)
    finally:
        repo.close()
    if g.is_json:
        emit_json(
            {
                "message_type": "summary",
                "dry_run": is_dry_run,
                "repaired": [{"original": old.id, "new": new.id or None} for old, new in changed],
            }
        )
        return
    for old, new in changed:
        verb = "would rewrite" if is_dry_run else "rewrote"
        say(
            f"{verb} snapshot {old.short_id}" + (f" as {new.short_id}" if new.id else ""),
            is_quiet=g.is_quiet,
        )
    if not changed:
        say("no snapshot needed repairing", is_quiet=g.is_quiet)


@click.group("repair")
def repair() -> None:
    """Repair the index or snapshots after damage."""


@repair.command("index")
@global_options
@click.pass_obj
def index(g: Globals) -> None:
    """Rebuild the index from the headers of all packs."""
    run_repair_index(g)


@repair.command("snapshots")
@global_options
@click.argument("snapshots", nargs=-1)
@filter_options
@click.option("--forget", is_flag=True, help="remove the original snapshots")
@click.option("--dry-run", "-n", is_flag=True, help="only show what would change")
@click.pass_obj
def snapshots(
    g: Globals,
    snapshots: tuple[str, ...],
    hosts: tuple[str, ...],
    paths: tuple[str, ...],
    tags: tuple[str, ...],
    forget: bool,
    dry_run: bool,
) -> None:
    """Rewrite snapshots whose trees reference missing data, dropping only the lost files."""
    run_repair_snapshots(g, snapshots, SnapshotFilter(hosts, tags, paths), forget, dry_run)
