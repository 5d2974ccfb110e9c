"""hutch backup: store a new snapshot of files, folders or standard input."""

from __future__ import annotations

import datetime as dt
import getpass
import glob
import os
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import click

from cli.context import Globals
from cli.errors import EXIT_PARTIAL, CliError
from cli.options import global_options
from cli.output import Progress, emit_json, format_bytes, format_duration, say, show_path, warn
from repo.allocator import keep_freed_memory
from repo.backup import (
    Archiver,
    BackupOptions,
    BackupStats,
    ExcludeTag,
    parse_files_from,
    parse_files_from_raw,
)
from repo.lock import hostname
from repo.pattern import read_pattern_file
from repo.prune import parse_size
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
        if self.g.verbose >= 2 and not self.g.is_json:
            say(f"{show_path(path)}  {format_bytes(size)}")

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
    """What the command line asked for (field names are the click destinations)."""

    paths: tuple[str, ...]
    tags: tuple[str, ...] = ()
    host: str | None = None
    time: str | None = None
    parent: str | None = None
    is_force: bool = False
    excludes: tuple[str, ...] = ()
    exclude_files: tuple[str, ...] = ()
    iexcludes: tuple[str, ...] = ()
    iexclude_files: tuple[str, ...] = ()
    exclude_if_present: tuple[str, ...] = ()
    is_excluding_caches: bool = False
    exclude_larger_than: str | None = None
    is_one_file_system: bool = False
    files_from: tuple[str, ...] = ()
    files_from_raw: tuple[str, ...] = ()
    is_stdin: bool = False
    stdin_filename: str = "stdin"
    is_stdin_from_command: bool = False
    read_concurrency: int = 2
    is_dry_run: bool = False
    with_atime: bool = False

    @property
    def is_stream(self) -> bool:
        """Whether one stream is backed up (--stdin or --stdin-from-command)."""
        return self.is_stdin or self.is_stdin_from_command

    def check(self) -> None:
        if self.is_stream and (self.files_from or self.files_from_raw):
            raise CliError("--stdin and --files-from cannot be used together", 2)
        if self.is_stdin_from_command and not self.paths:
            raise CliError("--stdin-from-command needs a command: backup [...] -- CMD ARGS", 2)
        if self.is_stdin and not self.is_stdin_from_command and self.paths:
            raise CliError("--stdin takes no paths", 2)
        if not self.is_stream and not (self.paths or self.files_from or self.files_from_raw):
            raise CliError("backup needs at least one path (or --stdin)", 2)
        name = self.stdin_filename.strip("/")
        if self.is_stream and (not name or "/" in name or name in (".", "..")):
            raise CliError("--stdin-filename must be a plain file name", 2)

    def source_paths(self) -> list[bytes]:
        """The --files-from and --files-from-raw entries, then the PATHs (restic's order)."""
        out = []
        for name in self.files_from:
            for line in parse_files_from(_read_list(name, "--files-from")):
                out += _expand(line)
        for name in self.files_from_raw:
            try:
                out += parse_files_from_raw(_read_list(name, "--files-from-raw"))
            except ValueError as exc:
                raise CliError(f"--files-from-raw {name}: {exc}") from exc
        out += [os.fsencode(p) for p in self.paths]
        if not out:
            raise CliError("nothing to back up: the --files-from lists name no files")
        return out


def _patterns(patterns: tuple[str, ...], files: tuple[str, ...]) -> list[str]:
    out = list(patterns)
    for name in files:
        try:
            with open(name, encoding="utf-8", errors="surrogateescape") as f:
                out += read_pattern_file(f.read())
        except OSError as exc:
            raise CliError(f"cannot read exclude file {name}: {exc.strerror}") from exc
    return out


def _read_list(name: str, option: str) -> bytes:
    """The bytes of a --files-from list; `-` is standard input."""
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        with open(name, "rb") as f:
            return f.read()
    except OSError as exc:
        raise CliError(f"cannot read {option} file {name}: {exc.strerror}") from exc


def _expand(line: bytes) -> list[bytes]:
    """A --files-from entry with its wildcards expanded, as restic does."""
    if not glob.has_magic(line):
        return [line]
    found = sorted(glob.glob(line, include_hidden=True))
    if not found:
        warn(f"warning: pattern {show_path(line)} does not match any files, skipping")
    return found


class _CommandOutput:
    """--stdin-from-command: the command's standard output is the file's content; the
    command failing fails the backup before a snapshot is written."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        try:
            # restic gives the command no standard input; its stderr stays ours.
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, bufsize=0
            )
        except OSError as exc:
            raise CliError(f"cannot run {argv[0]}: {exc.strerror}") from exc

    def read(self, n: int) -> bytes:
        assert self.proc.stdout is not None  # noqa: S101 - Popen was given stdout=PIPE
        data = self.proc.stdout.read(n)
        if not data:
            self._check()
        return data

    def _check(self) -> None:
        code = self.proc.wait()
        if code < 0:
            raise CliError(f"{self.argv[0]} was killed by signal {-code}; no snapshot saved")
        if code:
            raise CliError(f"{self.argv[0]} exited with status {code}; no snapshot saved")

    def close(self) -> None:
        """Stop the command if the backup ended before its output did."""
        if self.proc.poll() is None:
            self.proc.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc.wait()


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


def _options(req: BackupRequest, abs_paths: list[bytes]) -> BackupOptions:
    """The archiver's options, checked before the repository is opened; no parent yet."""
    try:
        exclude_tags = [ExcludeTag.parse(spec) for spec in req.exclude_if_present]
        limit = req.exclude_larger_than
        larger_than = parse_size(limit) if limit is not None else None
    except ValueError as exc:
        raise CliError(str(exc), 2) from exc
    return BackupOptions(
        paths=abs_paths,
        hostname=req.host or hostname(),
        username=getpass.getuser(),
        tags=[t for tag in req.tags for t in tag.split(",") if t],
        time_ns=_parse_time(req.time) if req.time else None,
        is_force=req.is_force,
        excludes=_patterns(req.excludes, req.exclude_files),
        iexcludes=_patterns(req.iexcludes, req.iexclude_files),
        exclude_tags=exclude_tags,
        is_excluding_caches=req.is_excluding_caches,
        exclude_larger_than=larger_than,
        is_one_file_system=req.is_one_file_system,
        read_concurrency=req.read_concurrency,
        is_dry_run=req.is_dry_run,
        with_atime=req.with_atime,
        program_version=PROGRAM_VERSION,
    )


def _run_stream(archiver: Archiver, req: BackupRequest, name: bytes) -> tuple[Snapshot, bool]:
    if not req.is_stdin_from_command:
        return archiver.run_stdin(name, sys.stdin.buffer.read)
    command = _CommandOutput(list(req.paths))
    try:
        return archiver.run_stdin(name, command.read)
    finally:
        command.close()


def _archive(
    g: Globals, repo: Repository, req: BackupRequest, opts: BackupOptions
) -> tuple[Archiver, Snapshot, bool]:
    stdin_name = os.fsencode(req.stdin_filename).strip(b"/")
    snap_paths = [b"/" + stdin_name] if req.is_stream else opts.paths
    opts.parent = _find_parent(repo, req.parent, opts.hostname, snap_paths)
    progress = Progress(is_shown=g.shows_progress)
    archiver = Archiver(repo, opts, _Reporter(progress, g))
    try:
        if g.shows_progress and not req.is_stream:
            threading.Thread(target=_total_size, args=(opts.paths, progress), daemon=True).start()
        if req.is_stream:
            snap, saved = _run_stream(archiver, req, stdin_name)
        else:
            snap, saved = archiver.run()
    except (KeyboardInterrupt, CliError):
        # Index what is stored already, so the next backup reuses it (docs/design.md).
        repo.flush()
        raise
    finally:
        progress.close()
    return archiver, snap, saved


def run_backup(g: Globals, req: BackupRequest) -> int:
    req.check()
    # The same source given twice (src, src/, ./src) is one source.
    sources = [] if req.is_stream else req.source_paths()
    opts = _options(req, list(dict.fromkeys(os.path.abspath(p) for p in sources)))
    repo = g.open()
    keep_freed_memory()  # after the key derivation: see there
    repo.is_dry_run = req.is_dry_run
    try:
        with g.lock(repo, is_exclusive=False):
            archiver, snap, saved = _archive(g, repo, req, opts)
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
@click.option("--tag", "tags", multiple=True, help="add a tag to the snapshot (a,b = two tags)")
@click.option("--host", help="hostname to record (default: this machine's)")
@click.option("--time", help='snapshot time "YYYY-MM-DD HH:MM:SS" (default: now)')
@click.option("--parent", help="snapshot to compare with (default: latest of same host and paths)")
@click.option("--force", "is_force", is_flag=True, help="reread every file, ignoring the parent")
@click.option("--exclude", "-e", "excludes", multiple=True, help="exclude a pattern (repeatable)")
@click.option(
    "--exclude-file", "exclude_files", multiple=True, help="read exclude patterns from a file"
)
@click.option(
    "--iexclude",
    "iexcludes",
    multiple=True,
    metavar="PATTERN",
    help="same as --exclude PATTERN but ignores the casing of filenames",
)
@click.option(
    "--iexclude-file",
    "iexclude_files",
    multiple=True,
    metavar="FILE",
    help="same as --exclude-file but ignores casing of filenames in patterns",
)
@click.option(
    "--one-file-system",
    "-x",
    "is_one_file_system",
    is_flag=True,
    help="exclude other file systems, don't cross filesystem boundaries and subvolumes",
)
@click.option(
    "--exclude-if-present",
    multiple=True,
    metavar="FILENAME[:HEADER]",
    help="takes filename[:header], exclude contents of directories containing filename "
    "(except filename itself) if header of that file is as provided "
    "(can be specified multiple times)",
)
@click.option(
    "--exclude-caches",
    "is_excluding_caches",
    is_flag=True,
    help="excludes cache directories that are marked with a CACHEDIR.TAG file. See "
    "https://bford.info/cachedir/ for the Cache Directory Tagging Standard",
)
@click.option(
    "--exclude-larger-than",
    metavar="SIZE",
    help="max size of the files to be backed up (allowed suffixes: k/K, m/M, g/G, t/T)",
)
@click.option(
    "--files-from",
    multiple=True,
    metavar="FILE",
    help="read the files to backup from FILE (can be combined with file args; "
    "can be specified multiple times)",
)
@click.option(
    "--files-from-raw",
    multiple=True,
    metavar="FILE",
    help="read the files to backup from FILE (can be combined with file args; "
    "can be specified multiple times)",
)
@click.option("--stdin", "is_stdin", is_flag=True, help="back up standard input as one file")
@click.option(
    "--stdin-filename",
    default="stdin",
    show_default=True,
    help="filename to use when reading from stdin (--stdin, --stdin-from-command)",
)
@click.option(
    "--stdin-from-command",
    "is_stdin_from_command",
    is_flag=True,
    help="interpret arguments as command to execute and store its stdout",
)
@click.option(
    "--read-concurrency",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    metavar="N",
    help="read N files concurrently",
)
@click.option("--dry-run", "-n", "is_dry_run", is_flag=True, help="read everything, store nothing")
@click.option("--with-atime", is_flag=True, help="store the atime for all files and directories")
@click.pass_obj
def backup(g: Globals, /, **options: Any) -> None:
    """Back up PATHs (stored with absolute paths) into a new snapshot.

    With --stdin-from-command, the PATHs are the command and its arguments, after
    `--`: hutch backup --stdin-from-command --stdin-filename db.sql -- pg_dump mydb
    """
    code = run_backup(g, BackupRequest(**options))
    if code:
        sys.exit(code)
