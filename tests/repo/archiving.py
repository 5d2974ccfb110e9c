"""Helpers of the backup tests: a reporter that keeps what it is told, and one backup."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from repo.backup import Archiver, BackupOptions
from repo.repository import Repository
from repo.snapshot import Snapshot


class Reporter:
    """Keeps what the archiver reports."""

    def __init__(self) -> None:
        self.errors: list[tuple[bytes, str]] = []
        self.warnings: list[tuple[bytes, str]] = []

    def file_done(self, path: bytes, size: int) -> None:
        return None

    def bytes_read(self, n: int) -> None:
        return None

    def error(self, path: bytes, message: str) -> None:
        self.errors.append((path, message))

    def warning(self, path: bytes, message: str) -> None:
        self.warnings.append((path, message))


def run_backup(repo: Repository, src: Path, **options: Any) -> tuple[Snapshot, Reporter]:
    """Back up src into repo with these BackupOptions; the snapshot and what was reported."""
    opts = BackupOptions(paths=[os.fsencode(src)], hostname="h", username="u", **options)
    reporter = Reporter()
    snap, _saved = Archiver(repo, opts, reporter).run()
    return snap, reporter
