"""hutch against a rest server and through rclone: round trips, append-only, a server down."""

from __future__ import annotations

import filecmp
import itertools
import os
import shutil
import socket
import time
from pathlib import Path

import pytest
from harness import Hutch, backup, hutch_env, restored_path, snapshots
from servers import unavailable
from servers.rest import RestServer

_fresh = itertools.count()


def _hutch(hutch_bin: str, location: str, base: Path) -> Hutch:
    # Hutch passes its repo through str(); a URL must not go through Path, which would
    # fold the "//" after the scheme.
    return Hutch(hutch_bin, location, hutch_env(base))  # type: ignore[arg-type]


def _source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "small.txt").write_bytes(b"hello rest\n")
    (src / "sub" / "random.bin").write_bytes(os.urandom(300_000))
    (src / "sub" / "text.txt").write_bytes(b"line of text\n" * 20_000)
    return src


def _same_tree(left: Path, right: Path) -> None:
    compare = filecmp.dircmp(left, right)
    assert not (compare.left_only or compare.right_only or compare.diff_files), compare.report()
    for name in compare.common_dirs:
        _same_tree(left / name, right / name)


def test_rest_round_trip(hutch_bin: str, rest_server: RestServer, tmp_path: Path) -> None:
    """init, backup, snapshots, restore and check --read-data over rest:http://user:pass@..."""
    hutch = _hutch(hutch_bin, rest_server.location(f"e2e-{next(_fresh)}/"), tmp_path)
    hutch.run("init")
    src = _source(tmp_path)
    snap = backup(hutch, src)["snapshot_id"]
    assert [s["id"] for s in snapshots(hutch)] == [snap]
    hutch.run("restore", "latest", "--target", tmp_path / "out")
    _same_tree(src, restored_path(tmp_path / "out", src))
    hutch.run("check", "--read-data")


def test_rclone_round_trip(hutch_bin: str, tmp_path: Path) -> None:
    """init, backup and restore through rclone:/absolute/path, with no rclone left behind."""
    if shutil.which("rclone") is None:
        unavailable("rclone is not installed")
    hutch = _hutch(hutch_bin, f"rclone:{tmp_path / 'repo'}", tmp_path)
    hutch.run("init")
    src = _source(tmp_path)
    backup(hutch, src)
    hutch.run("restore", "latest", "--target", tmp_path / "out")
    _same_tree(src, restored_path(tmp_path / "out", src))
    assert (tmp_path / "repo" / "config").is_file()
    assert any((tmp_path / "repo" / "data").rglob("*"))


def test_backup_to_append_only_server(
    hutch_bin: str, rest_server: RestServer, append_only_server: RestServer, tmp_path: Path
) -> None:
    """A repository made through the normal server takes backups through an append-only one,
    which refuses every delete but of locks; a second backup deduplicates."""
    path = f"e2e-ao-{next(_fresh)}/"
    _hutch(hutch_bin, rest_server.location(path), tmp_path).run("init")
    hutch = _hutch(hutch_bin, append_only_server.location(path), tmp_path)
    src = _source(tmp_path)
    backup(hutch, src)
    (src / "new.txt").write_bytes(b"added later\n")
    second = backup(hutch, src)
    assert second["files_new"] == 1, second
    assert len(snapshots(hutch)) == 2
    assert not any((rest_server.root / path / "locks").iterdir())
    hutch.run("check")


def test_server_down_fails_fast(hutch_bin: str, tmp_path: Path) -> None:
    """A rest server that is not there is exit 1 with one line, quickly, no traceback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    hutch = _hutch(hutch_bin, f"rest:http://u:secret@127.0.0.1:{port}/repo", tmp_path)
    start = time.monotonic()
    done = hutch.run("snapshots", check=False)
    assert time.monotonic() - start < 30
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert err.count("\n") == 1, err
    assert err.startswith("error: ") and "connection refused" in err, err
    assert f"127.0.0.1:{port}" in err and "secret" not in err, err


@pytest.mark.parametrize("command", ["init"])
def test_wrong_login_is_one_line(
    hutch_bin: str, rest_server: RestServer, tmp_path: Path, command: str
) -> None:
    """A login the server refuses is exit 1 and one line saying authentication failed."""
    location = rest_server.location("e2e-auth/", password="not-it")
    done = _hutch(hutch_bin, location, tmp_path).run(command, check=False)
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert err.count("\n") == 1 and "authentication failed" in err, err
