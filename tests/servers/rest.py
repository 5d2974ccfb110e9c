"""The rest server for backend tests (started on 127.0.0.1 by a session fixture)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from repo.backend import Backend


@pytest.fixture
def rest_backend() -> Iterator[Backend]:
    """An empty repository location on the rest server, opened as a backend."""
    pytest.skip("rest backend not implemented yet")
    yield  # type: ignore[misc]


@pytest.fixture
def rclone_backend() -> Iterator[Backend]:
    """An empty repository reached through `rclone serve restic` as a child process."""
    pytest.skip("rclone backend not implemented yet")
    yield  # type: ignore[misc]
