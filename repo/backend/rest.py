"""The rest backend (not available yet)."""

from __future__ import annotations

from repo.backend import Backend, BackendOptions
from repo.errors import BackendError


def open_rest(location: str, options: BackendOptions, *, create: bool = False) -> Backend:
    raise BackendError(f"rest:{location}: the rest backend is not available yet")
