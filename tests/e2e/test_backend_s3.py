"""hutch against an S3 repository on moto: round trip, bucket creation, dead endpoint."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest
from harness import hutch_env, restored_path
from servers.s3 import new_bucket_name, s3_client


def run(
    hutch_bin: str, location: str, env: dict[str, str], *args: str | Path, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """Run `hutch -r LOCATION ARGS` (harness.Hutch takes a path, which would fold `//`)."""
    done = subprocess.run(
        [hutch_bin, "-r", location, *map(str, args)],
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert b"Traceback" not in done.stderr, done.stderr.decode(errors="replace")
    if check and done.returncode != 0:
        raise AssertionError(f"hutch {args} exited {done.returncode}: {done.stderr.decode()}")
    return done


@pytest.fixture
def env(tmp_path: Path, s3_env: dict[str, str]) -> dict[str, str]:
    """hutch's test environment plus the AWS variables of the moto server."""
    return {**hutch_env(tmp_path), **s3_env}


def test_round_trip(hutch_bin: str, s3_location: str, env: dict[str, str], tmp_path: Path) -> None:
    """init, backup, snapshots, restore and check --read-data work on an S3 repository."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"hello\n" * 1000)
    (src / "sub" / "b.bin").write_bytes(bytes(range(256)) * 8192)
    run(hutch_bin, s3_location, env, "init")
    run(hutch_bin, s3_location, env, "backup", src)
    listed = json.loads(run(hutch_bin, s3_location, env, "--json", "snapshots").stdout)
    assert [s["paths"] for s in listed] == [[str(src)]]
    run(hutch_bin, s3_location, env, "restore", "latest", "--target", tmp_path / "out")
    restored = restored_path(tmp_path / "out", src)
    assert (restored / "a.txt").read_bytes() == (src / "a.txt").read_bytes()
    assert (restored / "sub" / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()
    run(hutch_bin, s3_location, env, "check", "--read-data")


def test_init_creates_the_bucket(hutch_bin: str, s3_server: str, env: dict[str, str]) -> None:
    """init on a bucket that does not exist yet creates it, and the repository opens."""
    bucket = new_bucket_name()
    location = f"s3:{s3_server}/{bucket}/backups"
    run(hutch_bin, location, env, "init")
    client = s3_client(s3_server)
    client.head_bucket(Bucket=bucket)
    client.close()
    assert json.loads(run(hutch_bin, location, env, "--json", "snapshots").stdout) == []


def test_unreachable_endpoint_fails_fast(hutch_bin: str, env: dict[str, str]) -> None:
    """A closed port ends init and snapshots with exit 1 and one line, well within 30 s."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        location = f"s3:http://127.0.0.1:{sock.getsockname()[1]}/bucket/prefix"
        for command in ("init", "snapshots"):
            start = time.monotonic()
            done = run(hutch_bin, location, env, command, check=False)
            assert time.monotonic() - start < 30
            assert done.returncode == 1, done.stderr
            lines = done.stderr.decode().splitlines()
            assert len(lines) == 1, lines
            assert "cannot connect" in lines[0]
