"""Command-line output and options: --json documents, filters, --time, --dry-run, --stdin, -q."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import re
import shutil
import stat
import subprocess
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import Hutch, backup, hutch_bin_path, hutch_env, json_lines, repo_files, snapshots

HEX64 = re.compile(r"[0-9a-f]{64}")
SUMMARY_COUNTS = (
    "files_new",
    "files_changed",
    "files_unmodified",
    "dirs_new",
    "dirs_changed",
    "dirs_unmodified",
    "data_blobs",
    "tree_blobs",
    "data_added",
    "total_files_processed",
    "total_bytes_processed",
)


def parse_time(text: str) -> dt.datetime:
    """An RFC 3339 time with up to nanoseconds, as an aware datetime (to microseconds)."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    assert match, text
    stamp, frac, zone = match.groups()
    micro = f".{(frac or '0')[:6]:0<6}"
    return dt.datetime.fromisoformat(stamp + micro + ("+00:00" if zone == "Z" else zone))


@dataclass
class History:
    """One repository with ten snapshots of two folders, two hosts, tags and an old --time."""

    hutch: Hutch
    base: Path
    src: Path
    other: Path
    ids: list[str]  # in the order they were taken
    summaries: list[dict[str, Any]]
    docs: list[dict[str, Any]]  # snapshots --json
    started: dt.datetime
    finished: dt.datetime


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory, initialised_repo: Path) -> History:
    """Snapshots shared by the read-only tests of this module (each backup costs a KDF run)."""
    base = tmp_path_factory.mktemp("history")
    shutil.copytree(initialised_repo, base / "repo")
    h = Hutch(hutch_bin_path(), base / "repo", hutch_env(base))
    src, other = base / "src", base / "other"
    (src / "sub").mkdir(parents=True)
    other.mkdir()
    (src / "file.txt").write_bytes(b"twelve bytes")
    (src / "sub" / "deep.bin").write_bytes(b"\0" * 100)
    os.symlink("file.txt", src / "link")
    os.chmod(src / "file.txt", 0o640)
    os.utime(src / "file.txt", ns=(1_500_000_000_123_456_789, 1_500_000_000_123_456_789))
    (other / "g.txt").write_bytes(b"other")
    f = src / "f.txt"
    started = dt.datetime.now(dt.UTC)
    runs: list[dict[str, Any]] = []
    f.write_bytes(b"from h1")
    runs.append(backup(h, "--tag", "daily", "--tag", "x,y", "--host", "h1", src))
    runs.append(backup(h, "--host", "h1", src))
    f.write_bytes(b"from h2")
    runs.append(backup(h, "--host", "h2", src))
    runs.append(backup(h, "--host", "h2", other))
    f.write_bytes(b"old")
    runs.append(backup(h, "--host", "h2", "--time", "2021-03-04 05:06:07", src))
    f.write_bytes(b"newest h1")
    runs.append(backup(h, "--host", "h1", "--parent", runs[3]["snapshot_id"][:8], src))
    runs.append(backup(h, "--host", "h1", other, src))
    runs.append(backup(h, "--host", "h1", src, other))
    runs.append(backup(h, "--host", "h1", src, f"{src}/"))
    runs.append(backup(h, "--host", "h1", src))
    finished = dt.datetime.now(dt.UTC)
    ids = [r["snapshot_id"] for r in runs]
    return History(h, base, src, other, ids, runs, snapshots(h), started, finished)


def test_backup_summary_fields(history: History) -> None:
    """backup --json ends with a summary carrying restic's counters as numbers."""
    first, second = history.summaries[:2]
    for field in SUMMARY_COUNTS:
        assert isinstance(first[field], int), field
    assert isinstance(first["total_duration"], float)
    assert first["snapshot_id"] == history.ids[0]
    assert (first["files_new"], first["dirs_new"], first["total_files_processed"]) == (3, 2, 3)
    assert first["total_bytes_processed"] == 12 + 100 + 7
    assert first["data_blobs"] == 3
    assert (second["files_unmodified"], second["dirs_unmodified"]) == (3, 2)
    assert (second["files_new"], second["data_blobs"]) == (0, 0)


def test_snapshots_json_fields(history: History) -> None:
    """snapshots --json gives one object per snapshot, oldest first, with the documented fields."""
    docs = history.docs
    assert sorted(d["id"] for d in docs) == sorted(history.ids)
    for doc in docs:
        assert HEX64.fullmatch(doc["id"])
        assert doc["short_id"] == doc["id"][:8]
        assert HEX64.fullmatch(doc["tree"])
        assert doc["username"] == getpass.getuser()
        assert doc["hostname"] in ("h1", "h2")
        if doc["id"] != history.ids[4]:
            started = history.started - dt.timedelta(seconds=1)
            assert started <= parse_time(doc["time"]) <= history.finished
    by_id = {d["id"]: d for d in docs}
    first = by_id[history.ids[0]]
    assert (first["hostname"], first["paths"]) == ("h1", [str(history.src)])
    assert first["tags"] == ["daily", "x", "y"]
    assert by_id[history.ids[1]]["tags"] == []
    assert by_id[history.ids[7]]["paths"] == sorted([str(history.src), str(history.other)])
    times = [parse_time(d["time"]) for d in docs]
    assert times == sorted(times)
    tagged = snapshots(history.hutch, "--tag", "x,daily")
    assert [d["id"] for d in tagged] == [history.ids[0]]
    assert snapshots(history.hutch, "--tag", "daily,nope") == []


def test_parent_is_same_host_and_paths_or_given(history: History) -> None:
    """The parent is the latest snapshot of the same host and set of paths, or --parent's."""
    parents = {d["id"]: d["parent"] for d in history.docs}
    ids = history.ids
    expected = [None, ids[0], None, None, ids[2], ids[3], None, ids[6]]
    assert [parents[i] for i in ids[:8]] == expected


def test_parent_compares_paths_as_a_set(history: History) -> None:
    """`backup src src/` has the paths of `backup src`, so each is the other's parent."""
    parents = {d["id"]: d["parent"] for d in history.docs}
    ids = history.ids
    assert (parents[ids[8]], parents[ids[9]]) == (ids[5], ids[8])


def test_time_option_sets_the_snapshot_time(history: History) -> None:
    """--time sets the snapshot time, so that snapshot sorts first and is not `latest`."""
    old = history.docs[0]
    assert old["id"] == history.ids[4]
    assert parse_time(old["time"]) == dt.datetime(2021, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
    assert old["time"] == "2021-03-04T05:06:07.000000000+00:00"


def test_ls_json_lines(history: History) -> None:
    """ls --json prints the snapshot, then one node per entry with path, type, size, mode, owner."""
    src = history.src
    lines = json_lines(history.hutch.run("--json", "ls", history.ids[0][:12]).stdout)
    assert lines[0]["struct_type"] == "snapshot"
    assert lines[0]["id"] == history.ids[0]
    nodes: dict[str, dict[str, Any]] = {}
    for doc in lines[1:]:
        assert doc["struct_type"] == "node"
        nodes[doc["path"]] = doc
    file_doc = nodes[f"{src}/file.txt"]
    st = os.lstat(src / "file.txt")
    assert file_doc["name"] == "file.txt"
    assert file_doc["type"] == "file"
    assert file_doc["size"] == 12
    assert file_doc["mode"] == st.st_mode
    assert stat.S_ISREG(file_doc["mode"])
    assert (file_doc["uid"], file_doc["gid"]) == (st.st_uid, st.st_gid)
    assert parse_time(file_doc["mtime"]) == dt.datetime(2017, 7, 14, 2, 40, 0, 123456, dt.UTC)
    assert file_doc["mtime"].split(".")[1].startswith("123456789")
    assert nodes[f"{src}/sub"]["type"] == "dir"
    assert nodes[f"{src}/sub/deep.bin"]["size"] == 100
    assert nodes[f"{src}/link"]["type"] == "symlink"
    assert str(history.base) in nodes
    below = json_lines(history.hutch.run("--json", "ls", "latest", src / "sub").stdout)
    assert [d["path"] for d in below[1:]] == [f"{src}/sub", f"{src}/sub/deep.bin"]


def test_latest_honours_host_tag_and_path(history: History) -> None:
    """`latest` is the newest snapshot (by time) among those --host, --tag and --path keep."""
    h, f = history.hutch, history.src / "f.txt"
    assert h.run("dump", "latest", f).stdout == b"newest h1"
    assert h.run("dump", "latest", f, "--tag", "daily").stdout == b"from h1"
    src_h2 = ("--host", "h2", "--path", str(history.src))
    assert h.run("dump", "latest", f, *src_h2).stdout == b"from h2"
    other_h2 = snapshots(h, "--host", "h2", "--path", str(history.other))
    assert [s["id"] for s in other_h2] == [history.ids[3]]
    restored = history.base / "restored-h1"
    h.run("restore", "latest", "--tag", "daily", "--target", restored)
    assert (restored / str(f).lstrip("/")).read_bytes() == b"from h1"


def test_time_option_keeps_the_given_wall_clock(hutch: Hutch, tmp_path: Path) -> None:
    """A --time across a DST change is still shown as the local wall-clock time given."""
    try:
        zone = zoneinfo.ZoneInfo("Europe/Berlin")
    except zoneinfo.ZoneInfoNotFoundError:
        pytest.skip("no time zone data")
    src = tmp_path / "src"
    src.mkdir()
    other_half = "2021-01-15 12:00:00" if dt.datetime.now(zone).dst() else "2021-07-15 12:00:00"
    backup(hutch, "--time", other_half, src, env={"TZ": "Europe/Berlin"})
    (snap,) = snapshots(hutch)
    given = dt.datetime.fromisoformat(other_half).replace(tzinfo=zone)
    assert parse_time(snap["time"]) == given
    assert snap["time"] == given.isoformat().replace("+", ".000000000+", 1)


def test_dry_run_writes_nothing(hutch: Hutch, tmp_path: Path) -> None:
    """backup --dry-run reads everything but leaves the repository byte for byte as it was."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(100_000))
    before = repo_files(hutch.repo)
    summary = backup(hutch, "--dry-run", src)
    assert summary["files_new"] == 1
    assert summary["data_added"] >= 100_000
    assert "snapshot_id" not in summary
    assert repo_files(hutch.repo) == before
    assert snapshots(hutch) == []


def test_stdin_backup_and_dump(hutch: Hutch) -> None:
    """backup --stdin --stdin-filename NAME stores stdin as /NAME, and dump gives it back."""
    data = os.urandom(300_000) + b"end of stream"
    summary = backup(hutch, "--stdin", "--stdin-filename", "db.sql", input=data)
    assert summary["files_new"] == 1
    (snap,) = snapshots(hutch)
    assert snap["paths"] == ["/db.sql"]
    assert hutch.run("dump", "latest", "/db.sql").stdout == data


def test_quiet_and_json_output(hutch: Hutch, tmp_path: Path) -> None:
    """-q prints nothing, a relative path is stored absolute, and HUTCH_REPOSITORY replaces -r."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data")
    quiet = hutch.run("-q", "backup", "src", cwd=tmp_path)
    assert quiet.stdout == b""
    assert quiet.stderr == b""
    assert hutch.run("-q", "restore", "latest", "--target", tmp_path / "out").stdout == b""
    loud = hutch.run("backup", src)
    assert b"snapshot" in loud.stdout
    done = subprocess.run(
        [hutch.bin, "--cache-dir", tmp_path / "cache-dir", "--json", "snapshots"],
        env={**hutch.env, "HUTCH_REPOSITORY": str(hutch.repo)},
        capture_output=True,
        check=True,
    )
    assert [d["paths"] for d in json.loads(done.stdout)] == [[str(src)], [str(src)]]


def test_exclude_patterns(hutch: Hutch, tmp_path: Path) -> None:
    """backup --exclude and --exclude-file leave out what restic's pattern syntax matches."""
    src = tmp_path / "src"
    for folder in ("a/cache", "b/cache", "a/keep", "node_modules/pkg"):
        (src / folder).mkdir(parents=True)
    names = [
        "top.log",
        "a/deep.log",
        "a/cache/x.tmp",
        "b/cache/y.tmp",
        "a/keep/z.tmp",
        "node_modules/pkg/index.js",
        "file1.dat",
        "file10.dat",
        "ab.txt",
        "cb.txt",
        "a/keep/kept.txt",
    ]
    for name in names:
        (src / name).write_bytes(name.encode())
    excludes = tmp_path / "excludes"
    excludes.write_text("# comment\n\n  node_modules  \n")
    backup(
        hutch,
        src,
        "--exclude",
        "*.log",
        "--exclude",
        f"{src}/a/**/*.tmp",
        "--exclude",
        "b/cache",
        "--exclude",
        "file?.dat",
        "--exclude",
        "[a]b.txt",
        "--exclude-file",
        excludes,
    )
    listed = hutch.run("ls", "latest", src).stdout.decode().split()
    kept = {os.path.relpath(p, src) for p in listed if p.startswith(f"{src}/")}
    assert kept == {"a", "a/cache", "a/keep", "a/keep/kept.txt", "b", "file10.dat", "cb.txt"}
