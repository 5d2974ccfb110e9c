"""hutch unlock: remove stale locks (or all locks)."""

from __future__ import annotations

import click

from cli.context import Globals
from cli.options import global_options
from cli.output import emit_json, say
from repo.lock import remove_locks


def run_unlock(g: Globals, is_all: bool) -> None:
    repo = g.open()
    try:
        removed = remove_locks(repo, is_all=is_all)
    finally:
        repo.close()
    if g.is_json:
        emit_json({"message_type": "summary", "removed": [info.name for info in removed]})
        return
    for info in removed:
        say(f"removed {info.describe()}", is_quiet=g.is_quiet)
    say(f"{len(removed)} locks removed", is_quiet=g.is_quiet)


@click.command("unlock")
@global_options
@click.option("--remove-all", is_flag=True, help="remove every lock, not only stale ones")
@click.pass_obj
def unlock(g: Globals, remove_all: bool) -> None:
    """Remove stale locks left by processes that are gone."""
    run_unlock(g, remove_all)
