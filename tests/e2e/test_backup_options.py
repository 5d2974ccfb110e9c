"""End-to-end tests of backup's source options: excludes by tag file, size and case,
--one-file-system, --files-from lists and --stdin-from-command."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Hutch, backup, json_lines, last_line, snapshots

SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"


def _write(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def _stored(hutch: Hutch, src: Path) -> set[str]:
    """The paths below src in the latest snapshot, relative to src."""
    docs = json_lines(hutch.run("--json", "ls", "latest").stdout)
    prefix = f"{src}/"
    return {
        d["path"][len(prefix) :]
        for d in docs
        if d.get("struct_type") == "node" and d["path"].startswith(prefix)
    }


def test_excludes_by_tag_size_and_case(hutch: Hutch, tmp_path: Path) -> None:
    """--exclude-caches, --exclude-if-present, --exclude-larger-than, --iexclude and
    --iexclude-file in one backup (with --read-concurrency): a tagged folder keeps only its
    tag, a CACHEDIR.TAG with a wrong signature excludes nothing, a file of exactly the
    limit is kept."""
    src = _write(
        tmp_path / "src",
        {
            "cache/CACHEDIR.TAG": SIGNATURE + b"\n",
            "cache/blob": b"x",
            "fake/CACHEDIR.TAG": b"Signature: not the right one at all, no no no",
            "fake/blob": b"x",
            "private/.nobackup": b"",
            "private/secret": b"x",
            "maybe/.tag": b"KEEP OUT and more",
            "maybe/data": b"x",
            "other/.tag": b"welcome",
            "other/data": b"x",
            "big": b"b" * 1025,
            "limit": b"l" * 1024,
            "Debug.LOG": b"x",
            "notes.Tmp": b"x",
            "keep.txt": b"x",
        },
    )
    patterns = tmp_path / "ipatterns"
    patterns.write_text("# case-insensitive\n*.TMP\n")
    backup(
        hutch,
        "--exclude-caches",
        "--exclude-if-present",
        ".nobackup",
        "--exclude-if-present",
        ".tag:KEEP OUT",
        "--exclude-larger-than",
        "1k",
        "--iexclude",
        "*.log",
        "--iexclude-file",
        patterns,
        "--read-concurrency",
        "3",
        src,
    )
    assert _stored(hutch, src) == {
        "cache",
        "cache/CACHEDIR.TAG",
        "fake",
        "fake/CACHEDIR.TAG",
        "fake/blob",
        "private",
        "private/.nobackup",
        "maybe",
        "maybe/.tag",
        "other",
        "other/.tag",
        "other/data",
        "limit",
        "keep.txt",
    }


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Path]:
    """A source folder with a tmpfs mounted at src/mnt."""
    mnt = tmp_path / "src" / "mnt"
    mnt.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "tmpfs", str(mnt)], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def test_one_file_system_stops_at_a_mount_point(hutch: Hutch, mounted: Path) -> None:
    """With -x the mount point is stored as an empty folder and nothing below it is;
    without, the mounted files are stored."""
    src = mounted.parent
    _write(src, {"here": b"x", "sub/there": b"y"})
    _write(mounted, {"inside": b"z", "deeper/file": b"w"})
    backup(hutch, "--one-file-system", src)
    assert _stored(hutch, src) == {"here", "sub", "sub/there", "mnt"}
    backup(hutch, src)
    assert {"mnt/inside", "mnt/deeper/file"} <= _stored(hutch, src)


def test_stdin_from_command(hutch: Hutch) -> None:
    """A failing command is exit 1 with one line naming its status and writes no snapshot;
    a succeeding one stores its output under --stdin-filename."""
    done = hutch.run(
        "backup",
        "--stdin-from-command",
        "--stdin-filename",
        "db.sql",
        "--",
        "sh",
        "-c",
        "echo hi; exit 3",
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "status 3" in last_line(done.stderr)
    assert snapshots(hutch) == []
    summary = backup(
        hutch, "--stdin-from-command", "--stdin-filename", "db.sql", "--", "sh", "-c", "echo hi"
    )
    assert summary["files_new"] == 1
    assert hutch.run("dump", "latest", "/db.sql").stdout == b"hi\n"


def test_files_from_stdin_and_raw(hutch: Hutch, tmp_path: Path) -> None:
    """--files-from - reads a list from standard input (comments and blank lines skipped),
    --files-from-raw a NUL-separated one taken verbatim; both add to the PATHs."""
    src = _write(
        tmp_path / "src",
        {"a": b"1", "b": b"2", "# not a comment": b"3", "new\nline": b"4", "arg": b"5", "no": b""},
    )
    listing = f"# the list\n\n  {src / 'a'}  \n{src / 'b'}\n".encode()
    raw = tmp_path / "raw"
    raw.write_bytes(f"{src / '# not a comment'}\0{src / 'new'}\nline\0".encode())
    backup(hutch, "--files-from", "-", "--files-from-raw", raw, src / "arg", input=listing)
    (snap,) = snapshots(hutch)
    assert sorted(snap["paths"]) == sorted(
        str(src / name) for name in ("a", "b", "# not a comment", "new\nline", "arg")
    )


@pytest.mark.parametrize(
    "args",
    [
        ("--stdin-from-command",),
        ("--stdin", "--files-from", "list"),
        ("--exclude-larger-than", "lots", "."),
        ("--read-concurrency", "0", "."),
        ("--exclude-if-present", ":header", "."),
    ],
    ids=["no-command", "stdin-and-files-from", "bad-size", "zero-readers", "no-tag-name"],
)
def test_usage_errors(hutch: Hutch, args: tuple[str, ...]) -> None:
    """Contradictory or malformed options are usage errors (exit 2), checked before the
    repository is opened."""
    done = hutch.run("backup", *args, check=False, env={"HUTCH_PASSWORD": ""})
    assert done.returncode == 2, done.stderr
