"""Running the installed hutch command from end-to-end tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

PASSWORD = "correct horse battery staple"


def hutch_bin_path() -> str:
    path = os.environ.get("HUTCH_BIN") or shutil.which("hutch")
    if not path:
        if os.environ.get("CI") == "true":
            pytest.fail("HUTCH_BIN is not set: CI must test the hutch installed from the wheel")
        pytest.skip("no hutch command: set HUTCH_BIN or run `make e2e`")
    return path


@dataclass
class Hutch:
    """Runs the installed hutch against one repository."""

    bin: str
    repo: Path
    env: dict[str, str]

    def run(
        self,
        *args: str | os.PathLike[str] | bytes,
        input: bytes | None = None,
        check: bool = True,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        argv = [
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
