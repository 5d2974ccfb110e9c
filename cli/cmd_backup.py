"""hutch backup: store a new snapshot of files, folders or standard input."""

from __future__ import annotations

import datetime as dt
import getpass
import os
import socket
import stat
import sys
import threading
import time
from dataclasses import dataclass

import click

from cli.context import Globals
from cli.errors import EXIT_PARTIAL, CliError
from cli.options import global_options
from cli.output import Progress, emit_json, format_bytes, format_duration, say, show_path, warn
from repo.backup import Archiver, BackupOptions, BackupStats
from repo.pattern import read_pattern_file
from repo.repository import Repository
from repo.snapshot import Snapshot, SnapshotFilter, find_snapshot, sort_snapshots

PROGRAM_VERSION = "hutch 0.1.0"


class _Reporter:
    """Feeds the progress counters and prints source errors on stderr."""

    def __init__(self, progress: Progress, g: Globals) -> None:
        self.progress = progress
        self.g = g

    def file_done(self, path: bytes, size: int) -> None:
        self.progress.files += 1

    def bytes_read(self, n: int) -> None:
        self.progress.bytes += n

    def error(self, path: bytes, message: str) -> None:
        self.progress.errors += 1
        warn(f"error: {show_path(path)}: {message}")

    def warning(self, path: bytes, message: str) -> None:
        warn(f"warning: {show_path(path)}: {message}")


def _parse_time(text: str) -> int:
    try:
        when = dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
    except ValueError as exc:
        raise CliError(f'invalid --time {text!r}: expected "YYYY-MM-DD HH:MM:SS"', 2) from exc
    return int(when.timestamp()) * 1_000_000_000


def _find_parent(
    repo: Repository, ref: str | None, host: str, paths: list[bytes]
) -> Snapshot | None:
    snaps = repo.list_snapshots()
    if ref is not None:
        return find_snapshot(snaps, ref, SnapshotFilter())
    same = [s for s in snaps if s.hostname == host and sorted(s.paths) == sorted(paths)]
    return sort_snapshots(same)[-1] if same else None


def _total_size(paths: list[bytes], progress: Progress) -> None:
    """Sum the sources' sizes in the background, so the progress line can show an ETA."""
    total = 0
    stack = list(paths)
    while stack:
        path = stack.pop()
        try:
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                with os.scandir(path) as it:
                    stack.extend(e.path for e in it)
            elif stat.S_ISREG(st.st_mode):
                total += st.st_size
        except OSError:
            continue
    progress.total_bytes = total


@dataclass(slots=True)
class BackupRequest:
    """What the command line asked for."""

    paths: tuple[str, ...]
    tags: tuple[str, ...] = ()
    host: str | None = None
    time: str | None = None
    parent: str | None = None
    is_force: bool = False
    excludes: tuple[str, ...] = ()
    exclude_files: tuple[str, ...] = ()
    is_stdin: bool = False
    stdin_filename: str = "stdin"
    is_dry_run: bool = False
    with_atime: bool = False

    def patterns(self) -> list[str]:
        out = list(self.excludes)
        for name in self.exclude_files:
            try:
                with open(name, encoding="utf-8", errors="surrogateescape") as f:
                    out += read_pattern_file(f.read())
            except OSError as exc:
                raise CliError(f"cannot read exclude file {name}: {exc.strerror}") from exc
        return out

    def check(self) -> None:
        if self.is_stdin and self.paths:
            raise CliError("--stdin takes no paths", 2)
        if not self.is_stdin and not self.paths:
            raise CliError("backup needs at least one path (or --stdin)", 2)
        name = self.stdin_filename.strip("/")
        if self.is_stdin and (not name or "/" in name or name in (".", "..")):
            raise CliError("--stdin-filename must be a plain file name", 2)


def _summary(stats: BackupStats, snap: Snapshot, saved: bool, seconds: float) -> dict[str, object]:
    doc: dict[str, object] = {"message_type": "summary"}
    doc.update(stats.as_dict())
    doc["total_duration"] = round(seconds, 6)
    doc["dry_run"] = not saved
    if saved:
        doc["snapshot_id"] = snap.id
    return doc


def _print_human(
    g: Globals, stats: BackupStats, snap: Snapshot, saved: bool, seconds: float
) -> None:
    lines = [
        f"Files:       {stats.files_new:6} new, {stats.files_changed:6} changed, "
        f"{stats.files_unmodified:6} unmodified",
        f"Dirs:        {stats.dirs_new:6} new, {stats.dirs_changed:6} changed, "
        f"{stats.dirs_unmodified:6} unmodified",
        f"Added to the repository: {format_bytes(stats.data_added)} "
        f"({format_bytes(stats.data_added_packed)} stored)",
        f"processed {stats.total_files_processed} files, "
        f"{format_bytes(stats.total_bytes_processed)} in {format_duration(seconds)}",
        f"snapshot {snap.short_id} saved" if saved else "dry run: no snapshot saved",
    ]
    for line in lines:
        say(line, is_quiet=g.is_quiet)


def _options(req: BackupRequest, parent: Snapshot | None, abs_paths: list[bytes]) -> BackupOptions:
    return BackupOptions(
        paths=abs_paths,
        hostname=req.host or socket.gethostname(),
        username=getpass.getuser(),
        tags=[t for tag in req.tags for t in tag.split(",") if t],
        time_ns=_parse_time(req.time) if req.time else None,
        parent=parent,
        is_force=req.is_force,
        excludes=req.patterns(),
        is_dry_run=req.is_dry_run,
        with_atime=req.with_atime,
        program_version=PROGRAM_VERSION,
    )


def _archive(g: Globals, repo: Repository, req: BackupRequest) -> tuple[Archiver, Snapshot, bool]:
    # The same source given twice (src, src/, ./src) is one source.
    abs_paths = list(dict.fromkeys(os.path.abspath(os.fsencode(p)) for p in req.paths))
    stdin_name = os.fsencode(req.stdin_filename).strip(b"/")
    snap_paths = [b"/" + stdin_name] if req.is_stdin else abs_paths
    host = req.host or socket.gethostname()
    opts = _options(req, _find_parent(repo, req.parent, host, snap_paths), abs_paths)
    progress = Progress(is_shown=g.shows_progress)
    archiver = Archiver(repo, opts, _Reporter(progress, g))
    try:
        if g.shows_progress and not req.is_stdin:
            threading.Thread(target=_total_size, args=(abs_paths, progress), daemon=True).start()
        if req.is_stdin:
            snap, saved = archiver.run_stdin(stdin_name, sys.stdin.buffer.read)
        else:
            snap, saved = archiver.run()
    except KeyboardInterrupt:
        # Index what is stored already, so the next backup reuses it (docs/design.md).
        repo.flush()
        raise
    finally:
        progress.close()
    return archiver, snap, saved


def run_backup(g: Globals, req: BackupRequest) -> int:
    req.check()
    repo = g.open()
    repo.is_dry_run = req.is_dry_run
    try:
        with g.lock(repo, is_exclusive=False):
            archiver, snap, saved = _archive(g, repo, req)
    finally:
        repo.close()
    seconds = (time.time_ns() - archiver.start_ns) / 1e9
    if g.is_json:
        emit_json(_summary(archiver.stats, snap, saved, seconds))
    else:
        _print_human(g, archiver.stats, snap, saved, seconds)
    if archiver.stats.errors:
        warn(f"warning: {archiver.stats.errors} source files could not be read")
        return EXIT_PARTIAL
    return 0


@click.command("backup")
@global_options
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--tag", multiple=True, help="add a tag to the snapshot (a,b = two tags)")
@click.option("--host", help="hostname to record (default: this machine's)")
@click.option("--time", help='snapshot time "YYYY-MM-DD HH:MM:SS" (default: now)')
@click.option("--parent", help="snapshot to compare with (default: latest of same host and paths)")
@click.option("--force", is_flag=True, help="reread every file, ignoring the parent")
@click.option("--exclude", "-e", multiple=True, help="exclude a pattern (repeatable)")
@click.option("--exclude-file", multiple=True, help="read exclude patterns from a file")
@click.option("--stdin", is_flag=True, help="back up standard input as one file")
@click.option("--stdin-filename", default="stdin", show_default=True, help="name for --stdin")
@click.option("--dry-run", "-n", is_flag=True, help="read everything, store nothing")
@click.option("--with-atime", is_flag=True, help="also store access times")
@click.pass_obj
def backup(
    g: Globals,
    paths: tuple[str, ...],
    tag: tuple[str, ...],
    host: str | None,
    time: str | None,
    parent: str | None,
    force: bool,
    exclude: tuple[str, ...],
    exclude_file: tuple[str, ...],
    stdin: bool,
    stdin_filename: str,
    dry_run: bool,
    with_atime: bool,
) -> None:
    """Back up PATHs (stored with absolute paths) into a new snapshot."""
    req = BackupRequest(
        paths,
        tag,
        host,
        time,
        parent,
        force,
        exclude,
        exclude_file,
        stdin,
        stdin_filename,
        dry_run,
        with_atime,
    )
    code = run_backup(g, req)
    if code:
        sys.exit(code)
