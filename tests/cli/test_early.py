"""cli/early.py: the key derivation the entry point starts before importing the rest."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from cli import early
from cli.options import _GLOBALS
from crypto import CHEAP, KeyInfo, argon2
from repo.backend import open_backend
from repo.config import RepoConfig
from repo.repository import Repository

PASSWORD = "early password"
INFO = KeyInfo(hostname="host", username="user", created="2026-11-26T00:00:00+00:00")


@pytest.fixture
def repo_path(tmp_path: Path) -> str:
    """A local repository with one key file made with cheap parameters."""
    path = str(tmp_path / "repo")
    config = RepoConfig(repo_id=bytes(32))
    Repository.init(open_backend(path, create=True), PASSWORD.encode(), INFO, config, kdf=CHEAP)
    return path


@pytest.fixture
def derived_in(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of each thread that runs Argon2id from now on."""
    names: list[str] = []
    derive: Callable[[argon2.Inputs], bytes] = argon2.argon2id

    def recording(inputs: argon2.Inputs) -> bytes:
        names.append(threading.current_thread().name)
        return derive(inputs)

    monkeypatch.setattr(argon2, "argon2id", recording)
    return names


def test_value_options_follow_the_declared_globals() -> None:
    """Every global option that takes a value is known to the guess, and no other."""
    declared = {
        decl
        for decls, _dest, settings in _GLOBALS
        if not settings.get("is_flag") and not settings.get("count")
        for decl in decls
    }
    assert declared == set(early.VALUE_OPTIONS)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-r", "/a", "dump", "latest", "/f"], {"repo": "/a"}),
        (["-r/a", "snapshots"], {"repo": "/a"}),
        (["--repo=/a", "snapshots"], {"repo": "/a"}),
        (["--repo", "/a", "ls", "latest", "-r", "/b"], {"repo": "/b"}),
        (["--cache-dir", "-r", "snapshots"], {}),
        (["--password-file", "/p", "-q", "--json", "check"], {"password_file": "/p"}),
        (["--password-command=echo x", "check"], {"password_command": "echo x"}),
        (["backup", "--", "-r", "/a"], {}),
        (["-r"], {}),
        (["-r", "/a", "dump", "--help"], None),
        (["--version"], None),
    ],
)
def test_global_values(args: list[str], expected: dict[str, str] | None) -> None:
    """Values are found in every spelling click accepts; the last one wins."""
    assert early.global_values(args) == expected


def test_the_command_takes_the_started_key(repo_path: str, derived_in: list[str]) -> None:
    """Opening the repository takes the key the early thread derived, not a second one."""
    environ = {"HUTCH_PASSWORD": PASSWORD}
    assert early.start_key_derivation(["-r", repo_path, "snapshots"], environ)
    Repository.open(open_backend(repo_path), PASSWORD.encode()).close()
    assert derived_in == ["argon2id"]


def test_a_wrong_guess_costs_a_second_derivation(repo_path: str, derived_in: list[str]) -> None:
    """A derivation started with another password is waited for, then not used."""
    environ = {"HUTCH_PASSWORD": "another password"}
    assert early.start_key_derivation(["-r", repo_path, "snapshots"], environ)
    Repository.open(open_backend(repo_path), PASSWORD.encode()).close()
    assert derived_in == ["argon2id", "MainThread"]


def test_the_password_file_is_read_as_the_command_reads_it(
    repo_path: str, tmp_path: Path, derived_in: list[str]
) -> None:
    """--password-file wins over HUTCH_PASSWORD, with its one trailing newline dropped."""
    password_file = tmp_path / "password"
    password_file.write_bytes(PASSWORD.encode() + b"\r\n")
    environ = {"HUTCH_PASSWORD": "not this one", "HUTCH_REPOSITORY": repo_path}
    assert early.start_key_derivation(["--password-file", str(password_file), "check"], environ)
    Repository.open(open_backend(repo_path), PASSWORD.encode()).close()
    assert derived_in == ["argon2id"]


@pytest.mark.parametrize(
    ("args", "environ"),
    [
        (["snapshots"], {"HUTCH_PASSWORD": PASSWORD}),
        (["-r", "REPO", "snapshots"], {}),
        (["-r", "REPO", "snapshots"], {"HUTCH_PASSWORD_COMMAND": "echo x"}),
        (["-r", "REPO", "--password-file", "/nonexistent", "snapshots"], {}),
        (["-r", "sftp:host:/srv/repo", "snapshots"], {"HUTCH_PASSWORD": PASSWORD}),
        (["-r", "REPO/missing", "snapshots"], {"HUTCH_PASSWORD": PASSWORD}),
        (["-r", "REPO", "snapshots", "--help"], {"HUTCH_PASSWORD": PASSWORD}),
    ],
    ids=["no-repo", "no-password", "command", "unreadable", "network", "missing", "help"],
)
def test_no_guess(
    args: list[str], environ: dict[str, str], repo_path: str, derived_in: list[str]
) -> None:
    """Without a local repository and a password at hand nothing is started."""
    args = [a.replace("REPO", repo_path) for a in args]
    assert not early.start_key_derivation(args, environ)
    assert derived_in == []


def test_out_of_limit_parameters_are_not_run(repo_path: str, derived_in: list[str]) -> None:
    """A planted key file asking for 2 GiB is left to the command to refuse."""
    keys = Path(repo_path) / "keys"
    (key,) = keys.iterdir()
    data = key.read_bytes()
    planted = data.replace(b"\xaamemory_kib\x40", b"\xaamemory_kib\xce\x00\x20\x00\x00")
    assert planted != data
    key.write_bytes(planted)
    assert not early.start_key_derivation(["-r", repo_path, "check"], {"HUTCH_PASSWORD": "x"})
    assert derived_in == []


PROBE = """
import atexit, json, sys, threading
from crypto import argon2
from repo.allocator import use_one_arena

seen = []
derive = argon2.argon2id

def recording(inputs):
    one_arena = use_one_arena.cache_info().currsize == 1
    seen.append([threading.current_thread().name, "click" in sys.modules, one_arena])
    return derive(inputs)

argon2.argon2id = recording
sys.argv = ["hutch", *{argv!r}]
atexit.register(lambda: print(json.dumps({{"seen": seen}}), file=sys.stderr))
from cli.early import main
main()
"""


def _python(script: str) -> subprocess.CompletedProcess[str]:
    """Run script in a fresh interpreter with the test password and nothing else set."""
    return subprocess.run(
        [sys.executable, "-c", script],
        env={"HUTCH_PASSWORD": PASSWORD, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_entry_point_derives_before_importing_click(repo_path: str) -> None:
    """`hutch` starts Argon2id before click and the command line are imported, once, and
    after glibc is told to keep one arena (repo/allocator.py)."""
    script = PROBE.format(argv=["-r", repo_path, "snapshots", "--json"])
    done = _python(script)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert done.returncode == 0, done.stderr
    assert report == {"seen": [["argon2id", False, True]]}
    assert json.loads(done.stdout) == []


def test_a_key_file_that_is_not_msgpack_leaves_the_error_to_the_command(
    repo_path: str,
) -> None:
    """The entry point's guess fails quietly on a garbled key file; the command then
    reports it damaged in one line, without a traceback."""
    (key,) = (Path(repo_path) / "keys").iterdir()
    key.write_bytes(b"\xc1 not msgpack")
    script = f"import sys; sys.argv = ['hutch', '-r', {repo_path!r}, 'snapshots']\n"
    script += "from cli.early import main\nmain()\n"
    done = _python(script)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.count("error:") == 1 and "damaged" in done.stderr


LEAVE = """
import atexit, os, sys, threading, time
from cli.early import leave

class Finalized:
    def __del__(self):
        os.write(2, b"finalized")

kept = Finalized()  # freed only by the interpreter's teardown
atexit.register(lambda: os.write(2, b"atexit ran;"))
sys.stdout.write("buffered output")  # still in the buffer when leave() is called
{before}
leave({code!r})
"""


@pytest.mark.parametrize(("code", "status"), [(None, 0), (0, 0), (3, 3), (True, 1)])
def test_leave_skips_the_teardown(code: object, status: int) -> None:
    """The entry point ends without the interpreter's teardown (no finalizer runs then),
    yet with atexit callbacks run and the buffered output flushed."""
    done = _python(LEAVE.format(before="", code=code))
    assert (done.returncode, done.stdout, done.stderr) == (status, "buffered output", "atexit ran;")


@pytest.mark.parametrize(
    ("before", "code", "status", "tail"),
    [
        # A thread that is not a daemon is waited for, as by a normal exit.
        (
            "threading.Thread(target=lambda: (time.sleep(0.3), print(' late'))).start()",
            0,
            0,
            " late\n",
        ),
        # A message as the code: printed and status 1, as SystemExit does.
        ("", "why", 1, ""),
    ],
)
def test_leave_falls_back_to_a_normal_exit(
    before: str, code: object, status: int, tail: str
) -> None:
    done = _python(LEAVE.format(before=before, code=code))
    assert done.returncode == status
    assert done.stdout == "buffered output" + tail
    assert "finalized" in done.stderr


def test_leave_falls_back_when_the_output_cannot_be_flushed() -> None:
    """With stdout a pipe nobody reads, the failed flush hands over to the normal exit:
    no traceback from leave(), and Python's own status for output it could not write."""
    proc = subprocess.Popen(
        [sys.executable, "-c", LEAVE.format(before="", code=0)],
        env={"PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the child writes: its flush meets a closed pipe
    with proc.stderr:
        stderr = proc.stderr.read().decode()
    assert proc.wait() == 120, stderr
    assert "Traceback" not in stderr
    assert "finalized" in stderr  # the interpreter's teardown ran
