"""Running the installed hutch command from end-to-end tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PASSWORD = "correct horse battery staple"


def hutch_bin_path() -> str:
    path = os.environ.get("HUTCH_BIN") or shutil.which("hutch")
    if not path:
        if os.environ.get("CI") == "true":
            pytest.fail("HUTCH_BIN is not set: CI must test the hutch installed from the wheel")
        pytest.skip("no hutch command: set HUTCH_BIN or run `make e2e`")
    return path


def hutch_env(base: Path) -> dict[str, str]:
    """The environment hutch runs in: the test password, and HOME and cache under base."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(base / "home"),
        "HUTCH_PASSWORD": PASSWORD,
        "HUTCH_CACHE_DIR": str(base / "cache"),
        "LANG": "C.UTF-8",
        "TZ": "UTC",
    }


@dataclass
class Hutch:
    """Runs the installed hutch against one repository."""

    bin: str
    repo: Path
    env: dict[str, str]
    # Commands hutch runs under, such as setpriv to drop root.
    wrapper: tuple[str, ...] = ()

    def run(
        self,
        *args: str | os.PathLike[str] | bytes,
        input: bytes | None = None,
        check: bool = True,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        argv = [
            *self.wrapper,
            self.bin,
            "-r",
            str(self.repo),
            *[a if isinstance(a, bytes) else str(a) for a in args],
        ]
        done = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            env={**self.env, **(env or {})},
            cwd=cwd,
            timeout=300,
            check=False,
        )
        assert b"Traceback" not in done.stderr, done.stderr.decode(errors="replace")
        if check and done.returncode != 0:
            raise AssertionError(
                f"hutch {args} exited {done.returncode}: {done.stderr.decode(errors='replace')}"
            )
        return done


def json_lines(out: bytes) -> list[dict[str, Any]]:
    """Every non-empty line of a --json output, parsed."""
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def summary(done: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    """The summary object that ends a `backup --json` output."""
    doc = json_lines(done.stdout)[-1]
    assert doc["message_type"] == "summary", doc
    return doc


def backup(hutch: Hutch, *args: str | os.PathLike[str] | bytes, **kw: Any) -> dict[str, Any]:
    """Run `backup --json ARGS` and return its summary."""
    return summary(hutch.run("--json", "backup", *args, **kw))


def snapshots(hutch: Hutch, *args: str) -> list[dict[str, Any]]:
    """`snapshots --json ARGS`, parsed."""
    docs: list[dict[str, Any]] = json.loads(hutch.run("--json", "snapshots", *args).stdout)
    return docs


def repo_files(repo: Path) -> dict[str, bytes]:
    """Every file of a repository folder by relative path, with its bytes."""
    return {
        str(p.relative_to(repo)): p.read_bytes() for p in sorted(repo.rglob("*")) if p.is_file()
    }


def restored_path(target: Path, source: Path) -> Path:
    """Where a restore without :PATH puts an absolute source path."""
    return target / str(source).lstrip("/")


def last_line(data: bytes) -> str:
    """The last non-empty line of an output, decoded."""
    lines = [line for line in data.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _ancestors(paths: Sequence[Path]) -> list[tuple[int, int, int]]:
    out = []
    for path in paths:
        for parent in Path(path).absolute().parents:
            if parent != Path("/"):
                st = os.lstat(parent)
                out.append((st.st_ino, st.st_mtime_ns, st.st_ctime_ns))
    return out


def backup_twice(
    hutch: Hutch, *args: str | os.PathLike[str] | bytes, sources: Sequence[Path]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, bytes]]:
    """Back up ARGS twice in a row while the folders above the sources stay untouched.

    A snapshot records the metadata of every folder above its sources, so a file
    created in /tmp by anything else on the machine changes the root tree. Until two
    runs see the same ancestors, this backs up again. Returns both summaries and the
    repository's files just before the second run.
    """
    start = _ancestors(sources)
    first = backup(hutch, *args)
    for _ in range(5):
        middle = _ancestors(sources)
        before = repo_files(hutch.repo)
        second = backup(hutch, *args)
        if _ancestors(sources) == start:
            return first, second, before
        start, first = middle, second
    raise AssertionError("the folders above the sources keep changing")
