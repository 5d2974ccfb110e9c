"""Fixtures for end-to-end tests: the installed hutch command and a fresh repository."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from harness import Hutch, hutch_bin_path, hutch_env


@pytest.fixture
def hutch_bin() -> str:
    return hutch_bin_path()


@pytest.fixture
def hutch(tmp_path: Path, hutch_bin: str) -> Hutch:
    """A hutch bound to a new, initialised repository under tmp_path."""
    h = Hutch(hutch_bin, tmp_path / "repo", hutch_env(tmp_path))
    h.run("init")
    return h


@pytest.fixture
def make_hutch(tmp_path: Path, hutch_bin: str) -> Callable[[Path], Hutch]:
    """A hutch for a repository path of the test's choosing, not initialised."""
    return lambda repo: Hutch(hutch_bin, repo, hutch_env(tmp_path))
