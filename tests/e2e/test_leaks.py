"""Nothing about the backed-up files, or who backed them up, is readable in the repository."""

from __future__ import annotations

import getpass
import os
from pathlib import Path

from harness import PASSWORD, Hutch, backup, repo_files


def test_repository_bytes_reveal_nothing(hutch: Hutch, tmp_path: Path) -> None:
    """No file name, content, tag, host, user, password or source path appears in any object."""
    src = tmp_path / "leakcheck-source-dir-q9z"
    (src / "leakcheck-subdir-m3v").mkdir(parents=True)
    content = b"leakcheck distinctive content zq81 " * 200
    (src / "leakcheck-name-kx7.txt").write_bytes(content)
    (src / "leakcheck-subdir-m3v" / "leakcheck-other-p2w.bin").write_bytes(os.urandom(5_000))
    os.symlink("leakcheck-symlink-target-r4t", src / "leakcheck-link-b8n")
    backup(hutch, "--tag", "secret-tag-xyz", "--host", "secret-host-xyz", src)
    hutch.run("backup", "--stdin", "--stdin-filename", "leakcheck-stdin-f5c", input=content)
    needles = [
        b"leakcheck",
        b"distinctive content",
        b"secret-tag-xyz",
        b"secret-host-xyz",
        getpass.getuser().encode(),
        PASSWORD.encode(),
        os.fsencode(src),
        os.fsencode(tmp_path.name),
    ]
    files = repo_files(hutch.repo)
    assert any(name.startswith("snapshots/") for name in files)
    assert any(name.startswith("data/") for name in files)
    for name, data in files.items():
        for needle in needles:
            assert needle not in name.encode(), (name, needle)
            assert needle not in data, (name, needle)
