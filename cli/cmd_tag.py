"""hutch tag: add, remove or set the tags of snapshots."""

from __future__ import annotations

import click

from cli.context import Globals
from cli.errors import EXIT_USAGE, CliError
from cli.options import filter_options, global_options
from cli.output import emit_json, say
from repo.rewrite import change_tags, rewritten
from repo.snapshot import SnapshotFilter, select_snapshots


def _split(values: tuple[str, ...]) -> list[str]:
    """Each value is a comma-separated list, as in restic; empty names are dropped."""
    return [t for v in values for t in v.split(",") if t]


def run_tag(
    g: Globals,
    refs: tuple[str, ...],
    flt: SnapshotFilter,
    add: tuple[str, ...],
    remove: tuple[str, ...],
    set_to: tuple[str, ...],
) -> int:
    """Rewrite each chosen snapshot whose tags change; returns how many changed."""
    if not (add or remove or set_to):
        raise CliError("nothing to do: give --add, --remove or --set", EXIT_USAGE)
    if set_to and (add or remove):
        raise CliError("--set and --add/--remove cannot be given together", EXIT_USAGE)
    new_set = _split(set_to) if set_to else None
    changed = 0
    repo = g.open()
    try:
        with g.lock(repo, is_exclusive=True):
            for snap in select_snapshots(repo.list_snapshots(), refs, flt):
                tags = change_tags(
                    snap.tags, add=_split(add), remove=_split(remove), set_to=new_set
                )
                if tags == snap.tags:
                    continue
                new_id = repo.save_snapshot(rewritten(snap, tags=tags))
                repo.delete_snapshot(snap.id)
                changed += 1
                if g.is_json:
                    emit_json(
                        {
                            "message_type": "changed",
                            "old_snapshot_id": snap.id,
                            "new_snapshot_id": new_id,
                        }
                    )
    finally:
        repo.close()
    if g.is_json:
        emit_json({"message_type": "summary", "changed_snapshots": changed})
    elif changed:
        say(f"modified tags on {changed} snapshots", is_quiet=g.is_quiet)
    else:
        say("no snapshots were modified", is_quiet=g.is_quiet)
    return changed


@click.command("tag")
@global_options
@click.argument("snapshots", nargs=-1, metavar="[SNAPSHOT]...")
@click.option("--add", multiple=True, metavar="TAGS", help="add these tags (a,b = both)")
@click.option("--remove", multiple=True, metavar="TAGS", help="remove these tags")
@click.option("--set", "set_to", multiple=True, metavar="TAGS", help="replace all tags by these")
@filter_options
@click.pass_obj
def tag(
    g: Globals,
    snapshots: tuple[str, ...],
    add: tuple[str, ...],
    remove: tuple[str, ...],
    set_to: tuple[str, ...],
    hosts: tuple[str, ...],
    paths: tuple[str, ...],
    tags: tuple[str, ...],
) -> None:
    """Change the tags of the given snapshots (default: all that the filters keep).

    Each changed snapshot is stored anew, naming the first snapshot of its line as its
    original, and the old one is removed."""
    run_tag(g, snapshots, SnapshotFilter(hosts, tags, paths), add, remove, set_to)
