"""Shell completion scripts and -v output of the installed hutch."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from harness import Hutch


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_script_is_printed(hutch: Hutch, shell: str) -> None:
    """`hutch completion SHELL` prints a script that names the completion variable."""
    out = hutch.run("completion", shell).stdout.decode()
    assert "_HUTCH_COMPLETE" in out


def test_bash_completion_loads_and_completes(hutch: Hutch) -> None:
    """The bash script loads in bash and completes a command and an option."""
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    script = hutch.run("completion", "bash").stdout.decode()
    bindir = os.path.dirname(hutch.bin)
    check = f"{script}\ncomplete -p hutch"
    loaded = subprocess.run(
        ["bash", "-c", check],
        capture_output=True,
        text=True,
        check=False,
        env={**hutch.env, "PATH": f"{bindir}:{hutch.env['PATH']}"},
    )
    assert loaded.returncode == 0, loaded.stderr
    assert "_hutch_completion" in loaded.stdout
    env = {
        **hutch.env,
        "_HUTCH_COMPLETE": "bash_complete",
        "COMP_WORDS": "hutch backup --exclude-c",
        "COMP_CWORD": "2",
    }
    done = subprocess.run([hutch.bin], capture_output=True, text=True, env=env, check=False)
    assert "--exclude-caches" in done.stdout
    env["COMP_WORDS"], env["COMP_CWORD"] = "hutch rest", "1"
    done = subprocess.run([hutch.bin], capture_output=True, text=True, env=env, check=False)
    assert "restore" in done.stdout


def test_verbose_backup_lists_files(hutch: Hutch, tmp_path: Path) -> None:
    """-vv names every file backed up; without it, no file is named."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "named-file.txt").write_bytes(b"x" * 100)
    quiet = hutch.run("backup", src).stdout.decode()
    assert "named-file.txt" not in quiet
    loud = hutch.run("-vv", "backup", src, "--force").stdout.decode()
    assert "named-file.txt" in loud
