"""The s3 backend (not available yet)."""

from __future__ import annotations

from repo.backend import Backend, BackendOptions
from repo.errors import BackendError


def open_s3(location: str, options: BackendOptions, *, create: bool = False) -> Backend:
    raise BackendError(f"s3:{location}: the s3 backend is not available yet")
