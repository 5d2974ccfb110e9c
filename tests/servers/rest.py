"""The rest server for backend tests: `rclone serve restic` on 127.0.0.1, started per session."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from repo.backend import Backend, open_backend
from repo.backend.rclone import RcloneServer, start_rclone
from servers import unavailable

USER = "hutch-test"
PASSWORD = "p@ss:w/rd"  # characters that must be percent-encoded in a URL
_fresh = itertools.count()


@dataclass(frozen=True)
class RestServer:
    """A running rest server: its URL (without login), the folder it serves, the login."""

    url: str
    root: Path
    user: str = USER
    password: str = PASSWORD

    def location(self, path: str, *, password: str | None = None) -> str:
        """A `rest:` location for PATH on this server, with the login in the URL."""
        secret = self.password if password is None else password
        login = f"{quote(self.user, safe='')}:{quote(secret, safe='')}"
        return f"rest:{self.url.replace('://', f'://{login}@', 1)}{path}"


def _serve(root: Path, *extra: str) -> Iterator[RestServer]:
    if shutil.which("rclone") is None:
        unavailable("rclone is not installed")
    server: RcloneServer = start_rclone(str(root), user=USER, password=PASSWORD, extra_args=extra)
    try:
        yield RestServer(server.url, root)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def rest_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestServer]:
    """`rclone serve restic` over a session folder, with a login: our rest server."""
    yield from _serve(tmp_path_factory.mktemp("rest-server"))


@pytest.fixture(scope="session")
def append_only_server(rest_server: RestServer) -> Iterator[RestServer]:
    """A second server over the same folder with `--append-only`."""
    yield from _serve(rest_server.root, "--append-only")


@pytest.fixture
def rest_backend(rest_server: RestServer) -> Iterator[Backend]:
    """An empty repository location on the rest server, opened as a backend."""
    backend = open_backend(rest_server.location(f"repo-{next(_fresh)}/"), create=True)
    yield backend
    backend.close()


@pytest.fixture
def rclone_backend(tmp_path: Path) -> Iterator[Backend]:
    """An empty repository reached through `rclone serve restic` as a child process."""
    if shutil.which("rclone") is None:
        unavailable("rclone is not installed")
    backend = open_backend(f"rclone:{tmp_path / 'rclone-repo'}", create=True)
    yield backend
    backend.close()
