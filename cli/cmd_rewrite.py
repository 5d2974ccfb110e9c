"""hutch rewrite: store snapshots anew without excluded files and folders."""

from __future__ import annotations

import click

from cli.context import Globals
from cli.errors import EXIT_USAGE, CliError
from cli.options import filter_options, global_options
from cli.output import emit_json, say, show_path
from repo.pattern import PatternSet, read_pattern_file
from repo.repository import Repository
from repo.rewrite import TreeRewriter
from repo.snapshot import Snapshot, SnapshotFilter, select_snapshots


def _patterns(excludes: tuple[str, ...], exclude_files: tuple[str, ...]) -> PatternSet:
    texts = list(excludes)
    for path in exclude_files:
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                texts.extend(read_pattern_file(f.read()))
        except OSError as exc:
            raise CliError(f"cannot read exclude file {path}: {exc.strerror}") from exc
    return PatternSet(texts)


def _rewrite_all(
    g: Globals, repo: Repository, snaps: list[Snapshot], rewriter: TreeRewriter, is_forget: bool
) -> list[tuple[Snapshot, Snapshot]]:
    """Rewrite each snapshot in turn; the new one is stored before the old one goes."""
    changed = []
    for snap in snaps:
        new, excluded = rewriter.snapshot(snap)
        if new is None:
            say(f"snapshot {snap.short_id} not modified", is_quiet=g.is_quiet or g.is_json)
            continue
        for path in excluded:
            say(f"excluding {show_path(path)}", is_quiet=g.is_quiet or g.is_json)
        changed.append((snap, new))
        if rewriter.is_dry_run:
            say(f"would rewrite snapshot {snap.short_id}", is_quiet=g.is_quiet or g.is_json)
            continue
        repo.replace_snapshot(snap, new, is_forget=is_forget)
        say(
            f"saved new snapshot {new.short_id} from {snap.short_id}",
            is_quiet=g.is_quiet or g.is_json,
        )
    return changed


def run_rewrite(
    g: Globals,
    refs: tuple[str, ...],
    flt: SnapshotFilter,
    excludes: PatternSet,
    is_forget: bool,
    is_dry_run: bool,
) -> list[tuple[Snapshot, Snapshot]]:
    if not excludes:
        raise CliError("nothing to do: no --exclude or --exclude-file given", EXIT_USAGE)
    repo = g.open()
    try:
        # Adding snapshots needs only a shared lock; removing the originals, an exclusive one.
        with g.lock(repo, is_exclusive=is_forget and not is_dry_run):
            snaps = select_snapshots(repo.list_snapshots(), refs, flt)
            rewriter = TreeRewriter(repo, excludes, is_dry_run=is_dry_run)
            changed = _rewrite_all(g, repo, snaps, rewriter, is_forget)
    finally:
        repo.close()
    if g.is_json:
        emit_json(
            {
                "message_type": "summary",
                "dry_run": is_dry_run,
                "rewritten": [{"original": old.id, "new": new.id or None} for old, new in changed],
                "forgotten": is_forget and not is_dry_run,
            }
        )
    elif is_dry_run:
        say(f"would rewrite {len(changed)} snapshots", is_quiet=g.is_quiet)
    else:
        say(f"rewrote {len(changed)} snapshots", is_quiet=g.is_quiet)
    return changed


@click.command("rewrite")
@global_options
@click.argument("snapshots", nargs=-1, metavar="[SNAPSHOT]...")
@click.option("--exclude", "-e", multiple=True, metavar="PATTERN", help="leave out this pattern")
@click.option(
    "--exclude-file",
    multiple=True,
    type=click.Path(),
    metavar="FILE",
    help="leave out the patterns of this file (one a line)",
)
@click.option("--forget", is_flag=True, help="remove the original snapshots afterwards")
@click.option("--dry-run", "-n", is_flag=True, help="only show what would change")
@filter_options
@click.pass_obj
def rewrite(
    g: Globals,
    snapshots: tuple[str, ...],
    exclude: tuple[str, ...],
    exclude_file: tuple[str, ...],
    forget: bool,
    dry_run: bool,
    hosts: tuple[str, ...],
    paths: tuple[str, ...],
    tags: tuple[str, ...],
) -> None:
    """Store the given snapshots (default: all that the filters keep) anew without the
    excluded files and folders; `prune` then removes data nothing uses any more."""
    patterns = _patterns(exclude, exclude_file)
    run_rewrite(g, snapshots, SnapshotFilter(hosts, tags, paths), patterns, forget, dry_run)
