"""hutch key: add, list, remove and passwd through the installed command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness import PASSWORD, Hutch, backup, repo_files, restored_path

NEW_PASSWORD = "tr0ub4dor&3"
THIRD_PASSWORD = "another one"


def _password_file(tmp_path: Path, password: str) -> Path:
    path = tmp_path / f"password-{len(password)}"
    path.write_text(password + "\n")
    return path


def _keys(hutch: Hutch, password: str) -> list[dict[str, Any]]:
    done = hutch.run("key", "list", "--json", env={"HUTCH_PASSWORD": password})
    docs: list[dict[str, Any]] = json.loads(done.stdout)
    return docs


def test_add_list_remove(hutch: Hutch, tmp_path: Path) -> None:
    """An added key opens the repository; list marks the key in use; only others can go."""
    added = json.loads(
        hutch.run(
            "--json", "key", "add", "--new-password-file", _password_file(tmp_path, NEW_PASSWORD)
        ).stdout
    )
    by_new = _keys(hutch, NEW_PASSWORD)
    assert len(by_new) == 2
    for key in by_new:
        assert set(key) == {"id", "current", "username", "hostname", "created"}
        assert len(key["id"]) == 64
    (current,) = [k for k in by_new if k["current"]]
    assert current["id"] == added["id"]
    assert current["hostname"] and current["username"] and current["created"]
    # The other key file is sealed under the first password: nothing of it shows.
    (other,) = [k for k in by_new if not k["current"]]
    assert other["username"] is other["hostname"] is other["created"] is None

    table = hutch.run("key", "list").stdout.decode()
    assert f"*{other['id'][:8]}" in table
    assert f" {added['id'][:8]}" in table

    refused = hutch.run("key", "remove", other["id"][:8], check=False)
    assert refused.returncode == 1
    assert b"opened the repository" in refused.stderr
    hutch.run("key", "remove", added["id"][:10])
    gone = hutch.run("snapshots", env={"HUTCH_PASSWORD": NEW_PASSWORD}, check=False)
    assert gone.returncode == 12
    assert [k["id"] for k in _keys(hutch, PASSWORD)] == [other["id"]]


def test_add_without_new_password_fails(hutch: Hutch) -> None:
    """With no --new-password-file and no terminal, key add exits 1 and adds nothing."""
    done = hutch.run("key", "add", input=b"", check=False)
    assert done.returncode == 1
    assert b"no new password given" in done.stderr
    assert len(list((hutch.repo / "keys").iterdir())) == 1


def test_passwd_keeps_data(hutch: Hutch, tmp_path: Path) -> None:
    """passwd retires the old password, rewrites only keys/, and the data still restores."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "file.txt").write_bytes(b"key material\n" * 100)
    backup(hutch, src)
    before = _data_files(hutch.repo)

    done = hutch.run(
        "--json", "key", "passwd", "--new-password-file", _password_file(tmp_path, THIRD_PASSWORD)
    )
    changed = json.loads(done.stdout)
    assert _data_files(hutch.repo) == before
    assert [p.name for p in (hutch.repo / "keys").iterdir()] == [changed["id"]]

    assert hutch.run("snapshots", check=False).returncode == 12
    third = {"HUTCH_PASSWORD": THIRD_PASSWORD}
    hutch.run("restore", "latest", "--target", tmp_path / "out", env=third)
    restored = restored_path(tmp_path / "out", src) / "file.txt"
    assert restored.read_bytes() == (src / "file.txt").read_bytes()


def _data_files(repo: Path) -> dict[str, bytes]:
    """Every file of the repository outside keys/ and locks/."""
    return {k: v for k, v in repo_files(repo).items() if not k.startswith(("keys/", "locks/"))}
