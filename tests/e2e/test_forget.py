"""forget: a retention policy, dry run, --json groups, explicit ids, and its usage errors."""

from __future__ import annotations

import json
from pathlib import Path

from harness import Hutch, backup, repo_files, snapshots

# Buckets go by each snapshot's recorded wall clock; UTC makes --time and buckets agree.
UTC = {"TZ": "UTC"}
TIMES = [
    "2024-03-01 10:00:00",
    "2024-03-02 09:00:00",
    "2024-03-04 08:00:00",
    "2024-03-04 20:00:00",
]


def test_policy_dry_run_then_for_real_then_by_id(hutch: Hutch, tmp_path: Path) -> None:
    """--keep-daily 2 --keep-last 1 keeps 03-04 20:00 and 03-02; a dry run changes nothing."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data")
    for when in TIMES:
        backup(hutch, "--time", when, src, env=UTC)
    listed = snapshots(hutch)
    ids = {s["time"][:19].replace("T", " "): s["id"] for s in listed}
    newest, day2 = ids["2024-03-04 20:00:00"], ids["2024-03-02 09:00:00"]
    removed = {ids["2024-03-04 08:00:00"], ids["2024-03-01 10:00:00"]}

    before = repo_files(hutch.repo)
    dry = hutch.run("forget", "--keep-daily", "2", "--keep-last", "1", "--dry-run", env=UTC)
    out = dry.stdout.decode()
    assert "Applying Policy: keep 1 latest, 2 daily snapshots" in out
    assert f"snapshots for (host [{listed[0]['hostname']}], paths [{src}]):" in out
    assert "keep 2 snapshots:" in out
    assert "remove 2 snapshots:" in out
    assert "last snapshot" in out
    assert {line.split()[-1] for line in out.splitlines() if line.startswith("would remove")} == {
        i[:8] for i in removed
    }
    assert repo_files(hutch.repo) == before

    done = hutch.run("--json", "forget", "--keep-daily", "2", "--keep-last", "1", env=UTC)
    (group,) = json.loads(done.stdout)
    assert group["tags"] is None
    assert group["paths"] == [str(src)]
    assert [s["id"] for s in group["keep"]] == [newest, day2]
    assert {s["id"] for s in group["remove"]} == removed
    assert [(r["snapshot"]["id"], r["matches"]) for r in group["reasons"]] == [
        (newest, ["last snapshot", "daily snapshot"]),
        (day2, ["daily snapshot"]),
    ]
    assert {s["id"] for s in snapshots(hutch)} == {newest, day2}

    by_id = hutch.run("forget", day2[:10])
    assert by_id.stdout.decode().splitlines() == [f"removed snapshot {day2[:8]}"]
    assert [s["id"] for s in snapshots(hutch)] == [newest]


def test_no_policy_and_usage_errors(hutch: Hutch) -> None:
    """No rule removes nothing; a bad duration, -2, or ids with rules exit 2; an unknown id 1."""
    done = hutch.run("forget")
    assert "no policy was specified, no snapshots will be removed" in done.stdout.decode()
    for args, words in (
        (("--keep-within", "3x"), "invalid duration '3x'"),
        (("--keep-daily", "-2"), "--keep-daily"),
        (("--keep-last", "1", "deadbeef"), "cannot be used together"),
    ):
        bad = hutch.run("forget", *args, check=False)
        assert bad.returncode == 2, bad.stderr
        assert words in bad.stderr.decode().splitlines()[-1], bad.stderr
    unknown = hutch.run("forget", "deadbeef", check=False)
    assert unknown.returncode == 1
    assert unknown.stderr.decode().splitlines() == ["error: snapshot deadbeef: no such snapshot"]
