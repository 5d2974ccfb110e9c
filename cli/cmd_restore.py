"""hutch restore: write a snapshot, a subtree or selected paths into a folder."""

from __future__ import annotations

import os

import click

from cli.context import Globals
from cli.errors import CliError
from cli.options import filter_options, global_options, select_snapshot
from cli.output import Progress, emit_json, format_bytes, say, warn
from repo.allocator import keep_freed_memory
from repo.backend.local import LocalBackend
from repo.pattern import split_path
from repo.restore import OVERWRITE_MODES, RestoreOptions, Restorer
from repo.walk import find_node

_VERBS = {
    "create": "restore",
    "replace": "replace",
    "patch": "update",
    "skip": "skip",
    "delete": "delete",
}


class _Reporter:
    def __init__(self, progress: Progress, g: Globals, is_dry_run: bool) -> None:
        self.progress = progress
        self.g = g
        self.is_dry_run = is_dry_run
        # Each file's action is shown only by these (planned() below).
        self.lists_plan = is_dry_run or bool(g.verbose)

    def planned(self, path: str, action: str) -> None:
        """A dry run lists what would change; a real run says what it deletes."""
        if self.is_dry_run and action != "skip":
            say(f"would {_VERBS[action]} {path}", is_quiet=self.g.is_quiet or self.g.is_json)
        elif self.g.verbose and (action != "skip" or self.g.verbose >= 2):
            say(f"{_VERBS[action]} {path}", is_quiet=self.g.is_quiet or self.g.is_json)
        elif action == "delete":
            say(f"deleting {path}", is_quiet=self.g.is_quiet or self.g.is_json)

    def bytes_written(self, n: int) -> None:
        self.progress.bytes += n

    def error(self, path: str, message: str) -> None:
        self.progress.errors += 1
        warn(f"error: {path}: {message}")


def run_restore(
    g: Globals,
    ref: str,
    opts: RestoreOptions,
    hosts: tuple[str, ...],
    paths: tuple[str, ...],
    tags: tuple[str, ...],
) -> int:
    snap_ref, _, sub = ref.partition(":")
    repo = g.open()
    keep_freed_memory()  # after the key derivation: see there
    try:
        with g.lock(repo, is_exclusive=False):
            snap = select_snapshot(repo, snap_ref, hosts, paths, tags)
            sub_path = os.fsencode(sub or "/")
            root = find_node(repo, snap.tree, sub_path)
            if sub and root.type != "dir":
                raise CliError(f"{sub}: is not a directory; use dump for a single file")
            progress = Progress(is_shown=g.shows_progress, verb="restored")
            try:
                reporter = _Reporter(progress, g, opts.is_dry_run)
                if isinstance(repo.backend, LocalBackend):
                    opts.processes = True
                else:
                    opts.threads = g.connections
                result = Restorer(repo, root, split_path(sub_path), opts, reporter).run()
            finally:
                progress.close()
    finally:
        repo.close()
    if g.is_json:
        emit_json(
            {
                "message_type": "summary",
                "snapshot_id": snap.id,
                "files_restored": result.files,
                "dirs_restored": result.dirs,
                "bytes_restored": result.bytes,
                "files_skipped": result.skipped,
                "files_deleted": result.deleted,
                "dry_run": opts.is_dry_run,
                "errors": result.errors,
            }
        )
    else:
        done = "dry run of snapshot" if opts.is_dry_run else "restored snapshot"
        say(
            f"{done} {snap.short_id}: {result.files} files, {result.dirs} dirs, "
            f"{format_bytes(result.bytes)}; {result.skipped} skipped, {result.deleted} deleted",
            is_quiet=g.is_quiet,
        )
    if result.errors:
        warn(f"error: {result.errors} entries could not be restored intact")
        return 1
    return 0


@click.command("restore")
@global_options
@click.argument("snapshot")
@click.option("--target", "-t", required=True, type=click.Path(), help="folder to restore into")
@click.option("--include", "-i", multiple=True, help="restore only paths matching (repeatable)")
@click.option("--exclude", "-e", multiple=True, help="skip paths matching (repeatable)")
@click.option("--sparse", is_flag=True, help="leave holes for all-zero chunks")
@click.option("--verify", is_flag=True, help="re-read every restored file and check it")
@click.option(
    "--overwrite",
    type=click.Choice(OVERWRITE_MODES),
    default="always",
    show_default=True,
    help="what to do with files already in the target: always replace them, rewrite only "
    "the parts that changed (if-changed, also resumes an interrupted restore), replace "
    "only older ones (if-newer), or keep them (never)",
)
@click.option("--delete", is_flag=True, help="delete what the target has that the snapshot lacks")
@click.option("--dry-run", "-n", is_flag=True, help="list what would change, change nothing")
@filter_options
@click.pass_obj
def restore(
    g: Globals,
    snapshot: str,
    target: str,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    sparse: bool,
    verify: bool,
    overwrite: str,
    delete: bool,
    dry_run: bool,
    hosts: tuple[str, ...],
    paths: tuple[str, ...],
    tags: tuple[str, ...],
) -> None:
    """Restore SNAPSHOT[:PATH] into --target."""
    opts = RestoreOptions(
        os.fsencode(target),
        list(include),
        list(exclude),
        sparse,
        verify,
        overwrite=overwrite,
        is_delete=delete,
        is_dry_run=dry_run,
    )
    code = run_restore(g, snapshot, opts, hosts, paths, tags)
    if code:
        raise SystemExit(code)
