"""Options shared by several commands, and resolving a snapshot argument."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from repo.repository import Repository
from repo.snapshot import Snapshot, SnapshotFilter, find_snapshot

F = TypeVar("F", bound=Callable[..., Any])


def filter_options(func: F) -> F:
    """--host, --path and --tag, as restic's snapshot filters."""
    func = click.option(
        "--tag", "tags", multiple=True, help="only snapshots with this tag (a,b = both)"
    )(func)
    func = click.option(
        "--path", "paths", multiple=True, help="only snapshots of exactly this path"
    )(func)
    return click.option("--host", "hosts", multiple=True, help="only snapshots of this host")(func)


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
