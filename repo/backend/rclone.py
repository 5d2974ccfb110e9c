"""The rclone backend (not available yet)."""

from __future__ import annotations

from repo.backend import Backend, BackendOptions
from repo.errors import BackendError


def open_rclone(location: str, options: BackendOptions, *, create: bool = False) -> Backend:
    raise BackendError(f"rclone:{location}: the rclone backend is not available yet")
