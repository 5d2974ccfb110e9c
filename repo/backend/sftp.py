"""The sftp backend (not available yet)."""

from __future__ import annotations

from repo.backend import Backend, BackendOptions
from repo.errors import BackendError


def open_sftp(location: str, options: BackendOptions, *, create: bool = False) -> Backend:
    raise BackendError(f"sftp:{location}: the sftp backend is not available yet")
