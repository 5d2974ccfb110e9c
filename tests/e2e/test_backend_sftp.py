"""hutch against an sftp repository: a full round trip, and failures that end in one line."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from harness import Hutch, hutch_env, restored_path, snapshots
from servers.sftp import SshServer


def _hutch(hutch_bin: str, location: str, tmp_path: Path, home: Path) -> Hutch:
    # Hutch.run passes str(repo) on the command line, so a location string serves as well.
    return Hutch(hutch_bin, cast(Path, location), {**hutch_env(tmp_path), "HOME": str(home)})


def _one_error_line(done: subprocess.CompletedProcess[bytes], *words: str) -> str:
    err = done.stderr.decode(errors="replace")
    assert done.returncode == 1, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], err
    return lines[0]


def test_sftp_round_trip(hutch_bin: str, sshd_server: SshServer, tmp_path: Path) -> None:
    """init, backup, snapshots, restore and check --read-data over sftp:// give back
    every byte, and the repository lands on the server in the usual layout."""
    folder = sshd_server.new_folder()
    hutch = _hutch(hutch_bin, sshd_server.url(folder), tmp_path, sshd_server.home)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "small.txt").write_text("hello over sftp\n")
    (src / "sub" / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    hutch.run("init")
    hutch.run("backup", src)
    assert [s["paths"] for s in snapshots(hutch)] == [[str(src)]]
    hutch.run("restore", "latest", "--target", tmp_path / "out")
    out = restored_path(tmp_path / "out", src)
    assert (out / "small.txt").read_text() == "hello over sftp\n"
    assert (out / "sub" / "big.bin").read_bytes() == (src / "sub" / "big.bin").read_bytes()
    hutch.run("check", "--read-data")
    assert (folder / "config").is_file()
    assert any((folder / "data").glob("*/*"))


def test_scp_form_with_config_alias(hutch_bin: str, sshd_server: SshServer, tmp_path: Path) -> None:
    """`sftp:ALIAS:PATH` is routed by ~/.ssh/config (the fixture's `hutch-sftp` alias)."""
    folder = sshd_server.new_folder()
    hutch = _hutch(hutch_bin, f"sftp:hutch-sftp:{folder}", tmp_path, sshd_server.home)
    hutch.run("init")
    assert (folder / "config").is_file()


def test_unreachable_server_fails_fast(
    hutch_bin: str, sshd_server: SshServer, tmp_path: Path
) -> None:
    """A closed port ends the command with exit 1 and one line, well within 30 s."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hutch = _hutch(hutch_bin, f"sftp://root@127.0.0.1:{port}/repo", tmp_path, sshd_server.home)
    start = time.monotonic()
    done = hutch.run("snapshots", check=False)
    assert time.monotonic() - start < 30
    _one_error_line(done, f"127.0.0.1 port {port}", "connection refused")


def test_unknown_host_key_fails_with_advice(
    hutch_bin: str, sshd_server: SshServer, tmp_path: Path
) -> None:
    """A server missing from known_hosts is refused (exit 1), naming the ssh command to run."""
    home = sshd_server.make_home(tmp_path / "home", known_hosts="")
    hutch = _hutch(hutch_bin, sshd_server.url(sshd_server.new_folder()), tmp_path, home)
    done = hutch.run("init", check=False)
    _one_error_line(done, "known_hosts", f"ssh -p {sshd_server.port} {sshd_server.user}@127.0.0.1")


@pytest.fixture
def hang_up_port() -> Iterator[int]:
    """A loopback port whose listener closes every connection at once (no SSH there)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    is_done = threading.Event()

    def serve() -> None:
        while not is_done.is_set():
            try:
                listener.accept()[0].close()
            except TimeoutError:
                continue

    thread = threading.Thread(target=serve)
    thread.start()
    yield listener.getsockname()[1]
    is_done.set()
    thread.join()
    listener.close()


def test_non_ssh_server_fails_in_one_line(
    hutch_bin: str, sshd_server: SshServer, tmp_path: Path, hang_up_port: int
) -> None:
    """A port that hangs up before the SSH greeting gives one line, not paramiko's log."""
    location = f"sftp://root@127.0.0.1:{hang_up_port}/repo"
    done = _hutch(hutch_bin, location, tmp_path, sshd_server.home).run("snapshots", check=False)
    _one_error_line(done, f"127.0.0.1 port {hang_up_port}")
