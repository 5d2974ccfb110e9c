"""Error paths: each gives its exit code and a one-line message, never a traceback."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import PASSWORD, Hutch, backup, repo_files, restored_path, snapshots

NOBODY = 65534


def assert_fails(
    done: subprocess.CompletedProcess[bytes], code: int, *words: str, one_line: bool = True
) -> None:
    """The command exited `code`, its stderr is `error:` lines (by default exactly one),
    and the last one names every word."""
    err = done.stderr.decode(errors="replace")
    assert done.returncode == code, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert lines, "nothing on stderr"
    assert len(lines) == 1 or not one_line, err
    assert all(line.startswith("error: ") for line in lines), err
    for word in words:
        assert word in lines[-1], err


def assert_usage_error(done: subprocess.CompletedProcess[bytes], *words: str) -> None:
    """Exit 2, and the last stderr line is click's `Error: ...` naming every word."""
    err = done.stderr.decode(errors="replace")
    assert done.returncode == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("Error: "), err
    for word in words:
        assert word in last, err


def _without_password(hutch: Hutch, **env: str) -> Hutch:
    base = {k: v for k, v in hutch.env.items() if k != "HUTCH_PASSWORD"}
    return dataclasses.replace(hutch, env={**base, **env})


def test_wrong_password_is_exit_12(hutch: Hutch) -> None:
    """A password no key file opens with is exit 12."""
    done = hutch.run("snapshots", env={"HUTCH_PASSWORD": "not the password"}, check=False)
    assert_fails(done, 12, "password")


def test_missing_repository_is_exit_10(make_hutch: Callable[[Path], Hutch], tmp_path: Path) -> None:
    """A location without a repository is exit 10, and nothing is created there."""
    missing = tmp_path / "nonexistent"
    done = make_hutch(missing).run("snapshots", check=False)
    assert_fails(done, 10, str(missing))
    assert not missing.exists()


def test_init_refuses_an_existing_repository(hutch: Hutch) -> None:
    """init on an existing repository is exit 1 and leaves its key files alone."""
    keys = sorted((hutch.repo / "keys").iterdir())
    assert_fails(hutch.run("init", check=False), 1, "already exists")
    assert sorted((hutch.repo / "keys").iterdir()) == keys


def test_unknown_snapshot_and_path(hutch: Hutch, tmp_path: Path) -> None:
    """Unknown snapshot ids, `latest` of nothing and unknown paths are exit 1 with empty stdout."""
    assert_fails(hutch.run("ls", "latest", check=False), 1)
    src = tmp_path / "src"
    src.mkdir()
    (src / "file.txt").write_bytes(b"content\n")
    snap_id = backup(hutch, src)["snapshot_id"]
    unknown = "0123abcd" if not snap_id.startswith("0123abcd") else "fedc4321"
    assert_fails(hutch.run("ls", unknown, check=False), 1, unknown)
    assert_fails(hutch.run("ls", "latest", "--host", "no-such-host", check=False), 1)
    done = hutch.run("dump", "latest", src / "missing.txt", check=False)
    assert_fails(done, 1, "missing.txt")
    assert done.stdout == b""
    assert_fails(hutch.run("ls", "latest", src / "nope", check=False), 1, "nope")
    done = hutch.run("restore", f"latest:{src}/file.txt", "--target", tmp_path / "o", check=False)
    assert_fails(done, 1, "file.txt")


def test_usage_errors_are_exit_2(hutch: Hutch, tmp_path: Path) -> None:
    """Unknown options, missing --target, a bad --time and misused --stdin are exit 2."""
    src = tmp_path / "src"
    src.mkdir()
    assert_usage_error(hutch.run("backup", "--no-such-option", src, check=False), "no-such-option")
    assert_usage_error(hutch.run("restore", "latest", check=False), "--target")
    assert hutch.run("backup", "--time", "yesterday", src, check=False).returncode == 2
    assert hutch.run("backup", "--stdin", src, check=False, input=b"x").returncode == 2
    assert hutch.run("backup", check=False).returncode == 2
    assert snapshots(hutch) == []


def test_missing_source_path_is_exit_3_with_snapshot(hutch: Hutch, tmp_path: Path) -> None:
    """A missing path next to an existing one is reported, exit 3, and the snapshot is written."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "kept.txt").write_bytes(b"kept\n")
    missing = tmp_path / "missing"
    done = hutch.run("backup", src, missing, check=False)
    assert done.returncode == 3, done.stderr
    assert str(missing) in done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()
    (snap,) = snapshots(hutch)
    assert hutch.run("dump", snap["id"], src / "kept.txt").stdout == b"kept\n"
    # The missing path is reported first, then the fatal error.
    before = repo_files(hutch.repo)
    only_missing = hutch.run("backup", missing, check=False)
    assert_fails(only_missing, 1, "nothing to back up", one_line=False)
    assert repo_files(hutch.repo) == before


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A folder owned by the unprivileged user nobody (pytest's tmp_path is root-only)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run hutch as an unprivileged user")
    path = Path(tempfile.mkdtemp(prefix="hutch-e2e-"))
    os.chown(path, NOBODY, NOBODY)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_unreadable_file_is_exit_3(hutch: Hutch, nobody_dir: Path) -> None:
    """Run unprivileged, a file and a folder it cannot read are reported and left out, exit 3."""
    src = nobody_dir / "src"
    (src / "locked-dir").mkdir(parents=True)
    (src / "readable.txt").write_bytes(b"readable\n")
    (src / "secret.txt").write_bytes(b"secret\n")
    (src / "locked-dir" / "inside.txt").write_bytes(b"inside\n")
    os.chmod(src / "secret.txt", 0)
    os.chmod(src / "locked-dir", 0)
    repo = nobody_dir / "repo"
    shutil.copytree(hutch.repo, repo)
    for path in [nobody_dir, *nobody_dir.rglob("*")]:
        os.lchown(path, NOBODY, NOBODY)
    wrapper = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")
    nobody = dataclasses.replace(
        hutch, repo=repo, wrapper=wrapper, env={**hutch.env, "HOME": str(nobody_dir)}
    )
    done = nobody.run("backup", src, check=False)
    err = done.stderr.decode(errors="replace")
    assert done.returncode == 3, err
    assert "Traceback" not in err
    assert str(src / "secret.txt") in err
    assert str(src / "locked-dir") in err
    names = nobody.run("ls", "latest", src).stdout.decode().split()
    assert str(src / "readable.txt") in names
    assert str(src / "secret.txt") not in names
    assert str(src / "locked-dir" / "inside.txt") not in names


def test_password_sources(hutch: Hutch, tmp_path: Path) -> None:
    """--password-file, HUTCH_PASSWORD_FILE and --password-command give the password."""
    pw_file = tmp_path / "pw"
    pw_file.write_bytes(PASSWORD.encode() + b"\n")
    bare = _without_password(hutch)
    bare.run("--password-file", pw_file, "snapshots")
    bare.run("snapshots", env={"HUTCH_PASSWORD_FILE": str(pw_file)})
    bare.run("--password-command", f"cat {pw_file}", "snapshots")
    bare.run("snapshots", env={"HUTCH_PASSWORD_COMMAND": f"echo '{PASSWORD}'"})
    wrong = bare.run("--password-command", "echo wrong", "snapshots", check=False)
    assert_fails(wrong, 12)
    failing = bare.run("--password-command", "exit 7", "snapshots", check=False)
    assert_fails(failing, 1)
    missing = bare.run("--password-file", tmp_path / "no-such-file", "snapshots", check=False)
    assert_fails(missing, 1, "no-such-file")


def test_no_password_without_terminal_is_exit_1(hutch: Hutch) -> None:
    """Without any password source and with stdin not a terminal, a command fails with exit 1."""
    done = _without_password(hutch).run("snapshots", input=b"", check=False)
    assert_fails(done, 1, "password")


def _packs(repo: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in (repo / "data").rglob("*") if p.is_file()}


def test_corrupted_pack_is_found_and_restore_saves_the_rest(hutch: Hutch, tmp_path: Path) -> None:
    """A flipped byte in a pack fails check --read-data, and restore reports only that file."""
    src = tmp_path / "src"
    src.mkdir()
    good = os.urandom(200_000)
    (src / "good.bin").write_bytes(good)
    backup(hutch, src)
    before = _packs(hutch.repo)
    (src / "bad.bin").write_bytes(os.urandom(200_000))
    backup(hutch, src)
    new = {k: v for k, v in _packs(hutch.repo).items() if k not in before}
    pack_name = max(new, key=lambda name: new[name])  # the data pack holding bad.bin
    hutch.run("check", "--read-data")
    pack = next((hutch.repo / "data").rglob(pack_name))
    os.chmod(pack, 0o600)
    with open(pack, "r+b") as f:
        f.seek(new[pack_name] // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x40]))
    done = hutch.run("check", "--read-data", check=False)
    assert done.returncode == 1
    assert pack_name[:8] in done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()
    target = tmp_path / "out"
    done = hutch.run("restore", "latest", "--target", target, check=False)
    assert done.returncode == 1
    err = done.stderr.decode(errors="replace")
    assert "bad.bin" in err
    assert "good.bin" not in err
    assert (restored_path(target, src) / "good.bin").read_bytes() == good
    assert hutch.run("dump", "latest", src / "bad.bin", check=False).returncode == 1


def _lock_files(repo: Path) -> list[Path]:
    locks = repo / "locks"
    return list(locks.iterdir()) if locks.exists() else []


def test_locks_are_released(hutch: Hutch, tmp_path: Path) -> None:
    """Two sequential backups both succeed and leave no lock behind."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"a")
    backup(hutch, src)
    assert _lock_files(hutch.repo) == []
    (src / "b").write_bytes(b"b")
    second = backup(hutch, src)
    assert second["files_new"] == 1
    assert _lock_files(hutch.repo) == []


def test_locked_then_sigterm_is_exit_130_and_releases_the_lock(hutch: Hutch) -> None:
    """A running backup makes prune exit 11; SIGTERM then ends it with 130 and no lock left."""
    argv = [hutch.bin, "-r", str(hutch.repo), "backup", "--stdin", "--stdin-filename", "x"]
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stderr=subprocess.PIPE, stdout=subprocess.PIPE, env=hutch.env
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"some bytes" * 1000)
        proc.stdin.flush()
        deadline = time.monotonic() + 20
        while not _lock_files(hutch.repo):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "backup never took its lock"
            time.sleep(0.02)
        # An exclusive lock (prune) cannot be taken meanwhile: exit 11 naming the holder.
        locked = hutch.run("prune", check=False)
        assert_fails(locked, 11, "locked", str(proc.pid))
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert err.decode().strip() == "interrupted"
    assert _lock_files(hutch.repo) == []
    assert snapshots(hutch) == []


def test_bad_retry_lock_is_a_usage_error(hutch: Hutch) -> None:
    """An invalid --retry-lock is exit 2 for every command, even one that takes no lock."""
    done = hutch.run("--retry-lock", "5x", "snapshots", check=False)
    assert done.returncode == 2
    assert b"5x" in done.stderr


def test_dry_run_restore_into_a_missing_folder(hutch: Hutch, tmp_path: Path) -> None:
    """restore --dry-run into a folder that does not exist lists files and creates nothing."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "listed.txt").write_bytes(b"x")
    hutch.run("backup", src)
    target = tmp_path / "not-there"
    done = hutch.run("restore", "latest", "--target", target, "--dry-run")
    assert b"would restore" in done.stdout
    assert b"listed.txt" in done.stdout
    assert not target.exists()


def test_restore_lists_files_when_verbose_or_dry_run_only(hutch: Hutch, tmp_path: Path) -> None:
    """restore -v names each file it restores, and --dry-run into an existing folder
    each it would; a plain restore names none."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "listed.txt").write_bytes(b"x")
    hutch.run("backup", src)
    plain = hutch.run("restore", "latest", "--target", tmp_path / "plain")
    assert b"listed.txt" not in plain.stdout + plain.stderr
    verbose = hutch.run("restore", "latest", "--target", tmp_path / "verbose", "-v")
    assert b"restore " in verbose.stdout
    assert b"listed.txt" in verbose.stdout
    (tmp_path / "empty").mkdir()
    dry = hutch.run("restore", "latest", "--target", tmp_path / "empty", "--dry-run")
    assert b"would restore" in dry.stdout
    assert b"listed.txt" in dry.stdout
    assert list((tmp_path / "empty").iterdir()) == []
