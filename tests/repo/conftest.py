"""Fixtures of the repository tests: a fresh in-memory repository with cheap key derivation."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from strategies import KEY_INFO, PASSWORD, REPO_ID

from crypto import CHEAP
from repo.backend.memory import MemoryBackend
from repo.config import RepoConfig
from repo.repository import Repository

MakeRepo = Callable[..., Repository]


@pytest.fixture
def make_repo() -> Iterator[MakeRepo]:
    """Create repositories on fresh memory backends; all are closed after the test."""
    opened: list[Repository] = []

    def make(backend: MemoryBackend | None = None, **config: object) -> Repository:
        cfg = RepoConfig(repo_id=REPO_ID, **config)  # type: ignore[arg-type]
        repo = Repository.init(backend or MemoryBackend(), PASSWORD, KEY_INFO, cfg, kdf=CHEAP)
        opened.append(repo)
        return repo

    yield make
    for repo in opened:
        repo.close()


@pytest.fixture
def repo(make_repo: MakeRepo) -> Repository:
    """A new repository on a memory backend with the default config."""
    return make_repo()
