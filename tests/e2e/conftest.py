"""Fixtures for end-to-end tests: the installed hutch command and a fresh repository."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import Hutch, hutch_bin_path, hutch_env


@pytest.fixture
def hutch_bin() -> str:
    return hutch_bin_path()


@pytest.fixture(scope="session")
def initialised_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One repository made by `hutch init`, for tests to copy (init costs a key derivation)."""
    base = tmp_path_factory.mktemp("template")
    Hutch(hutch_bin_path(), base / "repo", hutch_env(base)).run("init")
    return base / "repo"


@pytest.fixture
def hutch(tmp_path: Path, hutch_bin: str, initialised_repo: Path) -> Hutch:
    """A hutch bound to a new, initialised repository under tmp_path (a copy of one
    fresh `hutch init`, so test repositories share their key)."""
    shutil.copytree(initialised_repo, tmp_path / "repo")
    return Hutch(hutch_bin, tmp_path / "repo", hutch_env(tmp_path))


@pytest.fixture
def make_hutch(tmp_path: Path, hutch_bin: str) -> Callable[[Path], Hutch]:
    """A hutch for a repository path of the test's choosing, not initialised."""
    return lambda repo: Hutch(hutch_bin, repo, hutch_env(tmp_path))
