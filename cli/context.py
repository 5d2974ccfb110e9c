"""Global options, the password, and opening the repository for a command."""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
from contextlib import AbstractContextManager
from dataclasses import dataclass

from cli.early import strip_newline
from cli.errors import CliError
from cli.output import warn
from crypto import KeyInfo, MasterKey
from repo.allocator import use_one_arena
from repo.backend import Backend, BackendOptions, open_backend
from repo.backend.local import LocalBackend
from repo.cache import Cache, default_cache_root
from repo.lock import Lock, hostname, locked
from repo.repository import Repository


@dataclass(slots=True)
class Globals:
    """The options every command shares."""

    repo: str | None = None
    password_file: str | None = None
    password_command: str | None = None
    is_json: bool = False
    is_quiet: bool = False
    cache_dir: str | None = None
    is_debug: bool = False
    retry_lock: str | None = None
    is_no_cache: bool = False
    connections: int = 5
    limit_upload: int = 0
    limit_download: int = 0
    cacert: str | None = None
    is_insecure_tls: bool = False
    verbose: int = 0
    damaged_snapshots: int = 0
    unlocked: tuple[str, MasterKey] | None = None

    def location(self) -> str:
        if not self.repo:
            raise CliError("no repository given: use -r/--repo or HUTCH_REPOSITORY")
        return self.repo

    def backend(self, *, create: bool = False) -> Backend:
        options = BackendOptions(
            connections=max(1, self.connections),
            limit_upload=self.limit_upload,
            limit_download=self.limit_download,
            cacert=self.cacert,
            is_insecure_tls=self.is_insecure_tls,
        )
        return open_backend(self.location(), create=create, options=options)

    def open(self) -> Repository:
        """Open the repository; remote ones get the local cache unless --no-cache."""
        # Before the first thread: a network backend's, Argon2id's (which cli/early.py
        # may have started already, calling this first), the command's own. A thread
        # that allocates before it keeps an arena of its own, which the command's
        # threads then share: 6 MiB more at the end of a 1 GiB backup.
        use_one_arena()
        backend = self.backend()
        if self.unlocked is None:
            repo = Repository.open(backend, self.password())
            self.unlocked = (repo.key_name or "", repo.master)
        else:
            repo = Repository.open_with_key(backend, *self.unlocked)
        repo.on_damaged_snapshot = self._damaged_snapshot
        if not isinstance(backend, LocalBackend):
            repo.upload_threads = self.connections
            if not self.is_no_cache:
                repo.cache = Cache(self.cache_dir or default_cache_root(), repo.config.repo_id)
        return repo

    def _damaged_snapshot(self, message: str) -> None:
        self.damaged_snapshots += 1
        warn(f"error: {message}")

    def password(self, *, is_new: bool = False) -> bytes:
        """The password from file, command, environment, or an interactive prompt."""
        if self.password_file:
            return read_password_file(self.password_file)
        if self.password_command:
            return _run_password_command(self.password_command)
        env = os.environ.get("HUTCH_PASSWORD")
        if env is not None:
            return os.fsencode(env)
        if sys.stdin.isatty():
            return prompt_password("password for repository", is_twice=is_new)
        raise CliError(
            "no password given: use --password-file, --password-command or HUTCH_PASSWORD"
        )

    def lock(self, repo: Repository, *, is_exclusive: bool) -> AbstractContextManager[Lock]:
        """Hold the repository lock, waiting up to --retry-lock for a conflicting one."""
        wait = parse_duration(self.retry_lock) if self.retry_lock else 0.0
        return locked(repo, is_exclusive=is_exclusive, retry_for=wait)

    @property
    def shows_progress(self) -> bool:
        return not (self.is_quiet or self.is_json) and sys.stderr.isatty()


_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(text: str) -> float:
    """`30s`, `5m`, `1h30m` or plain seconds."""
    if text.isdigit():
        return float(text)
    match = _DURATION.fullmatch(text)
    if not text or not match:
        raise CliError(f"invalid duration {text!r}: use e.g. 30s, 5m or 1h30m", 2)
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return hours * 3600.0 + minutes * 60.0 + seconds


def read_password_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return strip_newline(f.read())
    except OSError as exc:
        raise CliError(f"cannot read password file {path}: {exc.strerror}") from exc


def _run_password_command(command: str) -> bytes:
    import subprocess  # noqa: PLC0415 - only with --password-command: 3 ms of start-up

    try:
        done = subprocess.run(  # noqa: S602 - the user's own command line, as restic runs it
            command, shell=True, stdout=subprocess.PIPE, check=False
        )
    except OSError as exc:
        raise CliError(f"password command failed: {exc.strerror}") from exc
    if done.returncode != 0:
        raise CliError(f"password command exited with status {done.returncode}")
    return strip_newline(done.stdout)


def key_info() -> KeyInfo:
    """Who creates a key file, and when (sealed inside it)."""
    import getpass  # noqa: PLC0415 - only where a key file is made

    return KeyInfo(
        hostname=hostname(),
        username=getpass.getuser(),
        created=dt.datetime.now(dt.UTC).astimezone().isoformat(),
    )


def prompt_password(label: str, *, is_twice: bool) -> bytes:
    """Ask on the terminal, twice where a new password is being set."""
    import getpass  # noqa: PLC0415 - only at a terminal

    try:
        first = getpass.getpass(f"enter {label}: ")
        if is_twice and getpass.getpass(f"enter {label} again: ") != first:
            raise CliError("passwords do not match")
    except EOFError as exc:
        raise CliError("no password given") from exc
    return os.fsencode(first)
