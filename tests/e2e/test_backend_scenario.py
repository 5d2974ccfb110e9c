"""The same end-to-end scenario against every server: init, two backups, restore, dump,
forget --prune, check --read-data (the servers run on 127.0.0.1, see tests/servers/)."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from harness import Hutch, backup, hutch_env, restored_path, snapshots

_fresh = itertools.count()


def _location(
    request: pytest.FixtureRequest, kind: str, tmp_path: Path
) -> tuple[str, dict[str, str]]:
    """A new repository location of a kind, and the environment hutch needs for it."""
    env = hutch_env(tmp_path)
    if kind == "sftp":
        server = request.getfixturevalue("sshd_server")
        env["HOME"] = str(server.home)
        return server.url(server.new_folder()), env
    if kind == "s3":
        return request.getfixturevalue("s3_location"), {**env, **request.getfixturevalue("s3_env")}
    if kind == "rest":
        server = request.getfixturevalue("rest_server")
        return server.location(f"scenario-{next(_fresh)}/"), env
    return f"rclone:{tmp_path / 'rclone-repo'}", env


@pytest.mark.parametrize("kind", ["sftp", "s3", "rest", "rclone"])
def test_scenario(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> None:
    """Every step works over the network and gives back every byte; prune reclaims space."""
    location, env = _location(request, kind, tmp_path)
    hutch = Hutch(os.environ.get("HUTCH_BIN") or "hutch", location, env)  # type: ignore[arg-type]
    if not (os.environ.get("HUTCH_BIN") or os.path.exists(hutch.bin)):
        pytest.skip("no hutch command: set HUTCH_BIN")
    src = tmp_path / "src"
    src.mkdir()
    (src / "kept.txt").write_bytes(b"kept line\n" * 5000)
    (src / "gone.bin").write_bytes(os.urandom(2_000_000))
    hutch.run("init")
    first = backup(hutch, src)["snapshot_id"]
    (src / "gone.bin").unlink()
    (src / "new.txt").write_bytes(b"second version\n")
    second = backup(hutch, src)["snapshot_id"]
    assert [s["id"] for s in snapshots(hutch)] == [first, second]
    dumped = hutch.run("dump", "latest", src / "kept.txt").stdout
    assert dumped == (src / "kept.txt").read_bytes()
    hutch.run("forget", "--keep-last", "1", "--prune", "--max-unused", "0")
    assert [s["id"] for s in snapshots(hutch)] == [second]
    hutch.run("check", "--read-data")
    hutch.run("restore", "latest", "--target", tmp_path / "out")
    out = restored_path(tmp_path / "out", src)
    assert sorted(p.name for p in out.iterdir()) == ["kept.txt", "new.txt"]
    assert (out / "kept.txt").read_bytes() == (src / "kept.txt").read_bytes()
    stats = hutch.run("--json", "stats", "--mode", "raw-data").stdout
    assert b"total_size" in stats
