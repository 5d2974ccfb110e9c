"""What a command has imported when Argon2id runs: its 64 MiB come on top of it.

Each check runs hutch's entry point in a fresh interpreter, so modules imported by
other tests do not hide an eager import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# Imported by nothing a command needs before its key is derived: fastcdc (chunking),
# hashlib (the system's OpenSSL, ~4 MiB), concurrent.futures (pack writers). Not ctypes:
# glibc's one-arena setting goes through it and must come before Argon2id's threads.
HEAVY = ("fastcdc", "hashlib", "concurrent.futures")

PROBE = """
import json, sys
import crypto.keyfile
from cli.main import main
from repo.allocator import use_one_arena

seen = []
one_arena = []
derive = crypto.keyfile.derive_key

def recording(*args, **kwargs):
    seen.append(sorted(m for m in {heavy!r} if m in sys.modules))
    one_arena.append(use_one_arena.cache_info().currsize == 1)
    return derive(*args, **kwargs)

crypto.keyfile.derive_key = recording
try:
    main({argv!r})
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print(json.dumps({{"code": code, "seen": seen, "one_arena": one_arena}}), file=sys.stderr)
"""


def _report(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    script = PROBE.format(heavy=HEAVY, argv=argv)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )
    report: dict[str, Any] = json.loads(done.stderr.strip().splitlines()[-1])
    return report


def _probe(argv: list[str], env: dict[str, str]) -> tuple[int, list[list[str]]]:
    report = _report(argv, env)
    return int(report["code"]), report["seen"]


def test_importing_the_command_line_loads_no_command() -> None:
    """`import cli.main` leaves every command module, and fastcdc, unimported."""
    script = (
        "import sys, cli.main\n"
        "print(sorted(m for m in sys.modules"
        " if m.startswith(('cli.cmd_', 'fastcdc', 'hashlib'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def _environment(base: Path) -> dict[str, str]:
    return dict(
        os.environ,
        HUTCH_PASSWORD="startup test",
        HUTCH_REPOSITORY=str(base / "repo"),
        HUTCH_CACHE_DIR=str(base / "cache"),
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("startup")
    (base / "src").mkdir()
    (base / "src" / "file").write_bytes(b"some data\n" * 1000)
    environment = _environment(base)
    code, _ = _probe(["init"], environment)
    assert code == 0
    code, _ = _probe(["backup", str(base / "src")], environment)
    assert code == 0
    environment["TARGET"] = str(base / "target")
    return environment


@pytest.mark.parametrize(
    "argv",
    [
        ["snapshots"],
        ["backup", "SRC"],
        ["restore", "latest", "--target", "TARGET"],
        ["dump", "latest", "FILE"],
        ["ls", "latest"],
        ["check"],
        ["forget", "--keep-last", "1", "--prune"],
    ],
    ids=lambda argv: argv[0],
)
def test_heavy_modules_load_after_the_key_is_derived(argv: list[str], env: dict[str, str]) -> None:
    """Each command derives its key (once) before fastcdc, hashlib or its thread pools load."""
    src = str(Path(env["HUTCH_REPOSITORY"]).parent / "src")
    argv = [{"SRC": src, "TARGET": env["TARGET"], "FILE": f"{src}/file"}.get(a, a) for a in argv]
    code, seen = _probe(argv, env)
    assert code == 0
    assert seen == [[]]


def test_init_derives_its_key_before_heavy_modules_load(tmp_path: Path) -> None:
    """init too: its Argon2id runs with none of the heavy modules resident."""
    environment = _environment(tmp_path)
    code, seen = _probe(["init"], environment)
    assert code == 0
    assert seen == [[]]


@pytest.mark.parametrize("argv", [["backup", "SRC"], ["restore", "latest", "--target", "TARGET"]])
def test_one_arena_is_set_before_the_key_is_derived(argv: list[str], env: dict[str, str]) -> None:
    """glibc's one-arena setting precedes Argon2id: its threads, had they allocated
    first, would keep arenas of their own for the command's threads to spread over."""
    src = str(Path(env["HUTCH_REPOSITORY"]).parent / "src")
    argv = [{"SRC": src, "TARGET": env["TARGET"] + "-arena"}.get(a, a) for a in argv]
    report = _report(argv, env)
    assert report["code"] == 0
    assert report["one_arena"] == [True]


def test_a_local_repository_needs_no_socket_module(env: dict[str, str]) -> None:
    """socket (5 ms of every start-up) is left unimported when no network is used: the
    host name comes from os.uname()."""
    script = (
        "import sys\n"
        "from cli.main import main\n"
        "try:\n"
        "    main(['snapshots', '--json'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('socket' in sys.modules, file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert done.stderr.strip().splitlines()[-1] == "False"
