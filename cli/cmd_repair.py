"""hutch repair index|snapshots|packs: rebuild the index, drop lost data, salvage packs."""

from __future__ import annotations

import os
from collections.abc import Callable

import click

from cli.context import Globals
from cli.errors import EXIT_USAGE, CliError
from cli.options import filter_options, global_options
from cli.output import emit_json, say, warn
from repo.repack import Salvage, find_pack, salvage_packs
from repo.repair import SnapshotRepairer, repair_index
from repo.snapshot import SnapshotFilter, select_snapshots


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
            snaps = select_snapshots(repo.list_snapshots(), refs, flt)
            repairer = SnapshotRepairer(repo, warn, is_dry_run=is_dry_run)
            changed = []
            for snap in snaps:
                new = repairer.snapshot(snap)
                if new is None:
                    continue
                changed.append((snap, new))
                if not is_dry_run:
                    repo.replace_snapshot(snap, new, is_forget=is_forget)
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
@global_options
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


def _copier(copy_dir: str) -> Callable[[str, bytes], None]:
    def keep_copy(name: str, data: bytes) -> None:
        path = os.path.join(copy_dir, f"pack-{name}")
        with open(path, "wb") as f:
            f.write(data)
        warn(f"saved a copy of pack {name[:8]} as {path}")

    return keep_copy


def run_repair_packs(g: Globals, refs: tuple[str, ...], copy_dir: str | None) -> Salvage:
    """Salvage the readable blobs of damaged packs, then remove the packs (restic's
    repair packs); copies of the packs go to copy_dir first."""
    if copy_dir is not None and not os.path.isdir(copy_dir):
        raise CliError(f"--copy-dir {copy_dir}: not a directory", EXIT_USAGE)
    repo = g.open()
    try:
        with g.lock(repo, is_exclusive=True):
            indexed = repo.index.pack_ids
            names = list(dict.fromkeys(find_pack(repo, ref, indexed) for ref in refs))
            keep = _copier(copy_dir) if copy_dir is not None else None
            result = salvage_packs(repo, names, warn, keep)
    finally:
        repo.close()
    if g.is_json:
        emit_json(
            {
                "message_type": "summary",
                "packs_removed": result.packs_removed,
                "blobs_saved": result.saved,
                "blobs_lost": len(result.lost),
                "lost": [{"type": t.name.lower(), "id": b.hex()} for t, b in result.lost],
                "packs_written": result.packs_written,
                "index_files_replaced": result.index_files_replaced,
            }
        )
        return result
    say(
        f"salvaged {result.saved} blobs of {len(names)} packs into {result.packs_written} "
        f"new packs; {len(result.lost)} blobs lost",
        is_quiet=g.is_quiet,
    )
    if result.lost:
        say("run `hutch repair snapshots --forget` to drop the lost data from snapshots")
    return result


@repair.command("packs")
@global_options
@click.argument("packs", nargs=-1, required=True, metavar="PACK...")
@click.option(
    "--copy-dir",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="save a copy of each damaged pack here first, as pack-ID",
)
@click.option("--no-copy", is_flag=True, help="do not save copies of the damaged packs")
@click.pass_obj
def packs(g: Globals, packs: tuple[str, ...], copy_dir: str, no_copy: bool) -> None:
    """Copy the blobs of damaged packs that still verify into new packs, then remove the
    damaged packs; `repair snapshots` then drops the files whose data was lost."""
    run_repair_packs(g, packs, None if no_copy else copy_dir)
