"""Options shared by several commands, and resolving a snapshot argument."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from cli.context import Globals
from repo.repository import Repository
from repo.snapshot import Snapshot, SnapshotFilter, find_snapshot

F = TypeVar("F", bound=Callable[..., Any])


def filter_options(func: F) -> F:
    """--host, --path and --tag, as restic's snapshot filters."""
    func = click.option(
        "--tag", "tags", multiple=True, help="only snapshots with this tag (a,b = both)"
    )(func)
    func = click.option(
        "--path", "paths", multiple=True, help="only snapshots that include this absolute path"
    )(func)
    return click.option("--host", "hosts", multiple=True, help="only snapshots of this host")(func)


def _set_global(ctx: click.Context, param: click.Parameter, value: object) -> None:
    """Options given after the command name override those given before it."""
    if value and param.name is not None:
        setattr(ctx.find_object(Globals), param.name, value)


def global_options(func: F) -> F:
    """The global options, accepted after the command name too (as restic accepts them)."""
    specs: list[tuple[tuple[str, ...], dict[str, Any]]] = [
        (("-r", "--repo", "repo"), {}),
        (("--password-file", "password_file"), {}),
        (("--password-command", "password_command"), {}),
        (("--json", "is_json"), {"is_flag": True}),
        (("-q", "--quiet", "is_quiet"), {"is_flag": True}),
        (("--cache-dir", "cache_dir"), {}),
        (("--retry-lock", "retry_lock"), {}),
    ]
    for decls, extra in specs:
        func = click.option(*decls, expose_value=False, callback=_set_global, hidden=True, **extra)(
            func
        )
    return func


def select_snapshot(
    repo: Repository,
    ref: str,
    hosts: tuple[str, ...],
    paths: tuple[str, ...],
    tags: tuple[str, ...],
) -> Snapshot:
    """A snapshot by unique id prefix, or `latest` among those the filters keep."""
    return find_snapshot(repo.list_snapshots(), ref, SnapshotFilter(hosts, tags, paths))


def snapshot_json(snap: Snapshot) -> dict[str, Any]:
    return {
        "id": snap.id,
        "short_id": snap.short_id,
        "time": snap.rfc3339(),
        "tree": snap.tree.hex(),
        "paths": snap.str_paths(),
        "hostname": snap.hostname,
        "username": snap.username,
        "uid": snap.uid,
        "gid": snap.gid,
        "tags": list(snap.tags),
        "parent": snap.parent,
        "program_version": snap.program_version,
    }
