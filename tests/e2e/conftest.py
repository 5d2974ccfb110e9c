"""Fixtures for end-to-end tests: the installed hutch command and a fresh repository."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import PASSWORD, Hutch, hutch_bin_path


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path / "home"),
        "HUTCH_PASSWORD": PASSWORD,
        "HUTCH_CACHE_DIR": str(tmp_path / "cache"),
        "LANG": "C.UTF-8",
    }


@pytest.fixture
def hutch_bin() -> str:
    return hutch_bin_path()


@pytest.fixture
def hutch(tmp_path: Path, hutch_bin: str) -> Hutch:
    """A hutch bound to a new, initialised repository under tmp_path."""
    h = Hutch(hutch_bin, tmp_path / "repo", _env(tmp_path))
    h.run("init")
    return h


@pytest.fixture
def make_hutch(tmp_path: Path, hutch_bin: str) -> Callable[[Path], Hutch]:
    """A hutch for a repository path of the test's choosing, not initialised."""
    return lambda repo: Hutch(hutch_bin, repo, _env(tmp_path))
