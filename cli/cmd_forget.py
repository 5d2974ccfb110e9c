"""hutch forget: remove snapshots by id or by a retention policy, optionally then prune."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from cli.cmd_prune import run_prune
from cli.context import Globals
from cli.errors import EXIT_USAGE, CliError
from cli.options import filter_options, global_options, snapshot_json
from cli.output import emit_json, say, show_path, snapshot_table
from repo.forget import (
    UNLIMITED,
    Duration,
    GroupBy,
    GroupKey,
    Policy,
    PolicyResult,
    apply_policy,
    group_snapshots,
    parse_duration,
    parse_group_by,
)
from repo.lock import Lock
from repo.prune import UnusedLimit, parse_size
from repo.snapshot import Snapshot, SnapshotFilter, find_snapshot

F = TypeVar("F", bound=Callable[..., Any])

NO_POLICY = "no policy was specified, no snapshots will be removed"


def _count(ctx: click.Context, param: click.Parameter, value: str) -> int:
    """A --keep-<bucket> count: N >= 0, or -1 / `unlimited` for no limit (restic 0.15+)."""
    if value == "unlimited":
        return UNLIMITED
    try:
        count = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number") from None
    if count < UNLIMITED:
        raise click.BadParameter(f"{count}: negative values other than -1 are not allowed")
    return count


@dataclass(frozen=True, slots=True)
class ForgetRequest:
    """What to forget: explicit snapshot ids, or a policy over the filtered, grouped snapshots."""

    ids: tuple[str, ...]
    policy: Policy
    flt: SnapshotFilter
    group_by: GroupBy
    is_dry_run: bool = False


@dataclass(frozen=True, slots=True)
class _Group:
    key: GroupKey
    result: PolicyResult


# -- output --------------------------------------------------------------------------


def _group_json(key: GroupKey, result: PolicyResult) -> dict[str, Any]:
    """One group as restic's `forget --json` prints it; empty lists are null, as in Go."""
    return {
        "tags": list(key.tags) if key.tags is not None else None,
        "host": key.hostname,
        "paths": [p.decode("utf-8", "surrogateescape") for p in key.paths]
        if key.paths is not None
        else None,
        "keep": [snapshot_json(s) for s in result.keep] or None,
        "remove": [snapshot_json(s) for s in result.remove] or None,
        "reasons": [
            {"snapshot": snapshot_json(r.snapshot), "matches": list(r.matches)}
            for r in result.reasons
        ]
        or None,
    }


def _group_header(key: GroupKey) -> str:
    parts = [f"host [{key.hostname}]"] if key.hostname else []
    if key.tags is not None:
        parts.append(f"tags [{', '.join(key.tags)}]")
    if key.paths is not None:
        parts.append(f"paths [{', '.join(show_path(p) for p in key.paths)}]")
    return f"snapshots for ({', '.join(parts)}):" if parts else "snapshots:"


def _print_group(group: _Group) -> None:
    result = group.result
    say(_group_header(group.key))
    if result.keep:
        say(f"keep {len(result.keep)} snapshots:")
        reasons = {r.snapshot.id: r.matches for r in result.reasons}
        for line in snapshot_table(result.keep, reasons):
            say(line)
    if result.remove:
        say(f"remove {len(result.remove)} snapshots:")
        for line in snapshot_table(result.remove, None):
            say(line)


# -- forgetting ----------------------------------------------------------------------


def _by_ids(snaps: list[Snapshot], req: ForgetRequest) -> list[_Group]:
    """The snapshots named on the command line (all resolved before any is removed)."""
    chosen: dict[str, Snapshot] = {}
    for ref in req.ids:
        snap = find_snapshot(snaps, ref, req.flt)
        chosen[snap.id] = snap
    ordered = tuple(sorted(chosen.values(), key=lambda s: (s.time_ns, s.id), reverse=True))
    return [_Group(GroupKey(), PolicyResult((), ordered, ()))]


def _by_policy(snaps: list[Snapshot], req: ForgetRequest) -> list[_Group]:
    considered = [s for s in snaps if req.flt.matches(s)]
    return [
        _Group(key, apply_policy(members, req.policy))
        for key, members in group_snapshots(considered, req.group_by)
    ]


def _remove(g: Globals, lock: Lock, snaps: list[Snapshot], is_dry_run: bool) -> None:
    verb = "would remove" if is_dry_run else "removed"
    for snap in sorted(snaps, key=lambda s: (s.time_ns, s.id)):
        if not is_dry_run:
            lock.repo.delete_snapshot(snap.id)
        say(f"{verb} snapshot {snap.short_id}", is_quiet=g.is_quiet or g.is_json)


def _forget_locked(g: Globals, lock: Lock, req: ForgetRequest) -> list[Snapshot]:
    """Choose, report and remove snapshots under the exclusive lock; returns those removed."""
    snaps = lock.repo.list_snapshots()
    groups = _by_ids(snaps, req) if req.ids else _by_policy(snaps, req)
    if g.is_json:
        emit_json([_group_json(gr.key, gr.result) for gr in groups])
    elif not g.is_quiet and not req.ids:
        say(f"Applying Policy: {req.policy.describe()}")
        for group in groups:
            _print_group(group)
    removed = [s for group in groups for s in group.result.remove]
    _remove(g, lock, removed, req.is_dry_run)
    return removed


def run_forget(g: Globals, req: ForgetRequest) -> list[Snapshot]:
    """Forget what req asks for and return the snapshots removed (or, dry, to remove)."""
    if req.ids and not req.policy.is_empty:
        raise CliError("--keep-* options and snapshot IDs cannot be used together", EXIT_USAGE)
    repo = g.open()
    try:
        if not req.ids and req.policy.is_empty:
            if g.is_json:
                emit_json([])
            say(NO_POLICY, is_quiet=g.is_quiet or g.is_json)
            return []
        with g.lock(repo, is_exclusive=True) as lock:
            return _forget_locked(g, lock, req)
    finally:
        repo.close()


def _policy(counts: dict[str, int], within: str | None, keep_tags: tuple[str, ...]) -> Policy:
    try:
        duration = parse_duration(within) if within is not None else Duration()
        return Policy(**counts, within=duration, tags=keep_tags)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc


def _check_prune_options(max_unused: str, max_repack_size: str | None) -> None:
    """Reject bad prune limits before anything is forgotten, as restic does."""
    try:
        UnusedLimit.parse(max_unused)
        if max_repack_size:
            parse_size(max_repack_size)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc


def _count_option(name: str, short: str, what: str) -> Callable[[F], F]:
    return click.option(
        f"--keep-{name}",
        f"-{short}",
        name,
        default="0",
        callback=_count,
        metavar="N",
        help=f"keep the {what} (-1 or 'unlimited': all)",
    )


@click.command("forget")
@global_options
@click.argument("snapshot_ids", nargs=-1, metavar="[SNAPSHOT]...")
@_count_option("last", "l", "N newest snapshots")
@_count_option("hourly", "H", "newest snapshot of each of the last N hours")
@_count_option("daily", "d", "newest snapshot of each of the last N days")
@_count_option("weekly", "w", "newest snapshot of each of the last N ISO weeks")
@_count_option("monthly", "m", "newest snapshot of each of the last N months")
@_count_option("yearly", "y", "newest snapshot of each of the last N years")
@click.option(
    "--keep-within",
    metavar="DURATION",
    help="keep snapshots this close to the newest one (e.g. 1y2m3d4h)",
)
@click.option(
    "--keep-tag", multiple=True, metavar="T", help="keep snapshots with this tag (a,b = both)"
)
@filter_options
@click.option(
    "--group-by",
    "-g",
    default="host,paths",
    show_default=True,
    help="apply the policy per group of these fields: host, paths, tags ('' = one group)",
)
@click.option("--dry-run", "-n", is_flag=True, help="only show what would be removed")
@click.option("--prune", "is_prune", is_flag=True, help="run prune when snapshots were removed")
@click.option(
    "--max-unused", default="5%", show_default=True, help="for --prune: unused space to tolerate"
)
@click.option("--max-repack-size", metavar="SIZE", help="for --prune: repack at most this much")
@click.pass_obj
def forget(
    g: Globals,
    snapshot_ids: tuple[str, ...],
    last: int,
    hourly: int,
    daily: int,
    weekly: int,
    monthly: int,
    yearly: int,
    keep_within: str | None,
    keep_tag: tuple[str, ...],
    hosts: tuple[str, ...],
    paths: tuple[str, ...],
    tags: tuple[str, ...],
    group_by: str,
    dry_run: bool,
    is_prune: bool,
    max_unused: str,
    max_repack_size: str | None,
) -> None:
    """Remove snapshots: the given ones, or those the --keep-* policy does not keep."""
    counts = {
        "last": last,
        "hourly": hourly,
        "daily": daily,
        "weekly": weekly,
        "monthly": monthly,
        "yearly": yearly,
    }
    policy = _policy(counts, keep_within, keep_tag)
    try:
        grouping = parse_group_by(group_by)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    if is_prune:
        _check_prune_options(max_unused, max_repack_size)
    req = ForgetRequest(snapshot_ids, policy, SnapshotFilter(hosts, tags, paths), grouping, dry_run)
    removed = run_forget(g, req)
    if not (is_prune and removed):
        return
    done = (
        "would be removed, running prune dry run" if dry_run else "have been removed, running prune"
    )
    say(f"{len(removed)} snapshots {done}", is_quiet=g.is_quiet or g.is_json)
    ignore = frozenset(s.id for s in removed) if dry_run else frozenset()
    code = run_prune(g, max_unused, max_repack_size, dry_run, ignore_snapshots=ignore)
    if code:
        raise SystemExit(code)
