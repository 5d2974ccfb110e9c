"""Several hutch processes on one repository: shared and exclusive locks, waiting with
--retry-lock, and stale locks of dead processes (docs/design.md, Locks)."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import Hutch, backup, restored_path, snapshots

TIMEOUT = 120


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _random_file(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))


def _lock_files(repo: Path) -> list[Path]:
    folder = repo / "locks"
    return [p for p in folder.iterdir() if ".tmp-" not in p.name] if folder.exists() else []


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _err(done: subprocess.CompletedProcess[bytes]) -> str:
    return done.stderr.decode(errors="replace")


class _Procs:
    """Popen'ed hutch processes of one test, always reaped at its end."""

    def __init__(self, hutch: Hutch) -> None:
        self.hutch = hutch
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str | Path, stdin: int | None = None) -> subprocess.Popen[bytes]:
        argv = [self.hutch.bin, "-r", str(self.hutch.repo), *[str(a) for a in args]]
        proc = subprocess.Popen(
            argv,
            env=self.hutch.env,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.procs.append(proc)
        return proc

    def start_stdin_backup(self, name: str, first: bytes) -> subprocess.Popen[bytes]:
        """A `backup --stdin` that has written its lock and waits for more input."""
        before = set(_lock_files(self.hutch.repo))
        proc = self.start("backup", "--stdin", "--stdin-filename", name, stdin=subprocess.PIPE)
        assert proc.stdin is not None
        proc.stdin.write(first)
        proc.stdin.flush()

        def locked() -> bool:
            assert proc.poll() is None, proc.communicate()
            return bool(set(_lock_files(self.hutch.repo)) - before)

        _wait_for(locked, "the backup to take its lock")
        return proc

    @staticmethod
    def end_input(proc: subprocess.Popen[bytes], data: bytes = b"") -> None:
        """Write the rest of a stdin backup's input and close it: the backup goes on."""
        assert proc.stdin is not None
        proc.stdin.write(data)
        proc.stdin.close()
        proc.stdin = None  # communicate() must not flush it again

    def finish(self, proc: subprocess.Popen[bytes]) -> tuple[int, bytes, bytes]:
        out, err = proc.communicate(timeout=TIMEOUT)
        assert b"Traceback" not in err, err.decode(errors="replace")
        return proc.returncode, out, err

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


@pytest.fixture
def procs(hutch: Hutch) -> Iterator[_Procs]:
    p = _Procs(hutch)
    try:
        yield p
    finally:
        p.close()


def test_three_backups_at_once(hutch: Hutch, procs: _Procs, tmp_path: Path) -> None:
    """Three backups of different folders started together all succeed; three snapshots,
    check --read-data passes, and each restores byte for byte."""
    sources = [tmp_path / f"src{i}" for i in range(3)]
    for i, src in enumerate(sources):
        _random_file(src / "big.bin", (12 << 20) + i)
        for j in range(20):
            _random_file(src / "small" / f"{j}.bin", 1000 + j)
        (src / "shared.txt").write_bytes(b"the same in every source\n" * 5000)
    running = [procs.start("backup", src) for src in sources]
    for proc in running:
        code, _out, err = procs.finish(proc)
        assert code == 0, err.decode(errors="replace")
    snaps = snapshots(hutch)
    assert sorted(p for s in snaps for p in s["paths"]) == sorted(map(str, sources))
    assert _lock_files(hutch.repo) == []
    hutch.run("check", "--read-data")
    for snap in snaps:
        src = Path(snap["paths"][0])
        target = tmp_path / "out" / snap["short_id"]
        hutch.run("restore", snap["id"], "--target", target)
        assert _digest(restored_path(target, src)) == _digest(src)


def test_check_during_a_backup_finds_nothing(hutch: Hutch, procs: _Procs, tmp_path: Path) -> None:
    """check run again and again while a backup writes packs, index files and its
    snapshot never reports a problem (it lists snapshots before it loads the index)."""
    src = tmp_path / "src"
    for i in range(6):
        _random_file(src / f"part{i}.bin", 12 << 20)
    running = procs.start("backup", src)
    checks = 0
    while running.poll() is None or checks == 0:
        done = hutch.run("check", check=False)
        assert done.returncode == 0, (done.stdout, done.stderr)
        checks += 1
    code, _out, err = procs.finish(running)
    assert code == 0, err
    hutch.run("check", "--read-data")


def test_prune_refuses_then_waits_for_a_running_backup(
    hutch: Hutch, procs: _Procs, tmp_path: Path
) -> None:
    """While a backup holds its lock, prune exits 11 naming the holder's pid and host;
    with --retry-lock it waits until the backup ends, then succeeds."""
    first, rest = os.urandom(5000), os.urandom(300_000)
    running = procs.start_stdin_backup("stream.bin", first)

    done = hutch.run("prune", check=False)
    assert done.returncode == 11, _err(done)
    lines = _err(done).splitlines()
    assert len(lines) == 1, _err(done)
    assert f"pid {running.pid}" in lines[0], _err(done)
    assert socket.gethostname() in lines[0], _err(done)

    waiting = procs.start("--retry-lock", "30s", "prune")
    # prune is running and finding the lock taken: it must still be waiting after a while.
    time.sleep(2.0)
    assert waiting.poll() is None, procs.finish(waiting)
    procs.end_input(running, rest)
    code, _out, err = procs.finish(running)
    assert code == 0, err
    code, _out, err = procs.finish(waiting)
    assert code == 0, err
    assert _lock_files(hutch.repo) == []
    assert hutch.run("dump", "latest", "/stream.bin").stdout == first + rest
    hutch.run("check", "--read-data")


def test_repair_refuses_while_a_backup_runs(hutch: Hutch, procs: _Procs, tmp_path: Path) -> None:
    """`repair index` (exclusive) meets a running backup's lock: exit 11 naming it, and
    the index is left alone; once the backup is done, repair runs."""
    holder = procs.start_stdin_backup("a.bin", b"a" * 1000)
    before = sorted((hutch.repo / "index").glob("*")) if (hutch.repo / "index").exists() else []
    done = hutch.run("repair", "index", check=False)
    assert done.returncode == 11, _err(done)
    assert f"pid {holder.pid}" in _err(done)
    after = sorted((hutch.repo / "index").glob("*")) if (hutch.repo / "index").exists() else []
    assert after == before
    procs.end_input(holder)
    assert procs.finish(holder)[0] == 0
    hutch.run("repair", "index")
    assert hutch.run("dump", "latest", "/a.bin").stdout == b"a" * 1000
    hutch.run("check", "--read-data")


def test_killed_backup_leaves_a_stale_lock_that_is_skipped(
    hutch: Hutch, procs: _Procs, tmp_path: Path
) -> None:
    """A backup SIGKILLed while it holds its lock leaves that lock behind; the lock of a
    dead process on this host is skipped right away (backup, prune), and `unlock` removes
    it, naming its pid."""
    src = tmp_path / "src"
    _random_file(src / "f", 100_000)
    backup(hutch, src)
    victim = procs.start_stdin_backup("x", b"partial")
    victim.send_signal(signal.SIGKILL)
    procs.finish(victim)
    (stale,) = _lock_files(hutch.repo)

    _random_file(src / "g", 100_000)
    backup(hutch, src)  # no --retry-lock and no unlock needed
    hutch.run("prune")  # exclusive: the dead shared lock does not count either
    hutch.run("check", "--read-data")

    is_left = stale.exists()  # no command is bound to clean it up, but one may
    out = hutch.run("unlock").stdout.decode()
    if is_left:
        assert f"pid {victim.pid}" in out, out
        assert "1 locks removed" in out, out
    else:
        assert "0 locks removed" in out, out
    assert _lock_files(hutch.repo) == []


def test_unlock_remove_all_removes_a_live_lock(hutch: Hutch, procs: _Procs, tmp_path: Path) -> None:
    """`unlock` leaves a live lock alone; `unlock --remove-all` removes it, and the backup
    that held it then refuses to write its snapshot (its lock is gone)."""
    running = procs.start_stdin_backup("y", b"some data")
    (live,) = _lock_files(hutch.repo)
    assert "0 locks removed" in hutch.run("unlock").stdout.decode()
    assert live.exists()
    done = hutch.run("unlock", "--remove-all")
    assert f"pid {running.pid}" in done.stdout.decode()
    assert not live.exists()
    procs.end_input(running, os.urandom(50_000))
    code, _out, err = procs.finish(running)
    assert code == 1, err
    assert b"lock" in err, err
    assert snapshots(hutch) == []
    assert _lock_files(hutch.repo) == []
    hutch.run("check", "--read-data")


def test_backups_and_prune_started_together_all_finish(
    hutch: Hutch, procs: _Procs, tmp_path: Path
) -> None:
    """Two backups and a prune started at the same moment with --retry-lock: the exclusive
    and shared lockers take turns, all exit 0, and the repository is valid."""
    old = tmp_path / "old"
    _random_file(old / "gone.bin", 2 << 20)
    first = backup(hutch, old)["snapshot_id"]
    (hutch.repo / "snapshots" / first).unlink()  # its data is now unused: prune has work
    sources = [tmp_path / f"src{i}" for i in range(2)]
    for i, src in enumerate(sources):
        _random_file(src / "f.bin", (8 << 20) + i)
    running = [procs.start("--retry-lock", "60s", "backup", src) for src in sources]
    running.append(procs.start("--retry-lock", "60s", "prune", "--max-unused", "0"))
    for proc in running:
        code, _out, err = procs.finish(proc)
        assert code == 0, err.decode(errors="replace")
    snaps = snapshots(hutch)
    assert sorted(p for s in snaps for p in s["paths"]) == sorted(map(str, sources))
    hutch.run("check", "--read-data")
    for snap in snaps:
        src = Path(snap["paths"][0])
        target = tmp_path / "out" / snap["short_id"]
        hutch.run("restore", snap["id"], "--target", target)
        assert _digest(restored_path(target, src)) == _digest(src)
