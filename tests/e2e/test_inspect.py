"""diff, find, stats, cat, tag, rewrite and repair packs through the installed command."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from harness import PASSWORD, Hutch, backup, json_lines, snapshots


def _tree(hutch: Hutch, ref: str) -> dict[str, dict[str, Any]]:
    """The entries of `cat tree REF` by name."""
    doc = json.loads(hutch.run("cat", "tree", ref).stdout)
    return {n["name"]: n for n in doc["nodes"]}


def _stats(hutch: Hutch, mode: str, *args: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(hutch.run("--json", "stats", "--mode", mode, *args).stdout)
    return doc


def _source(tmp_path: Path) -> Path:
    rng = random.Random(11)
    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "a.txt").write_bytes(b"alpha\n")
    (src / "docs" / "b.txt").write_bytes(b"bravo\n")
    (src / "big.bin").write_bytes(rng.randbytes(50_000))
    data = rng.randbytes(30_000)
    (src / "dup1").write_bytes(data)
    (src / "dup2").write_bytes(data)
    return src


def test_diff_find_stats_cat(hutch: Hutch, tmp_path: Path) -> None:
    """Two snapshots: a rename, a chmod and new content show as -/+, U and M; find and
    stats see both; cat shows the objects and never the master key."""
    src = _source(tmp_path)
    first = backup(hutch, src)["snapshot_id"]
    (src / "docs" / "a.txt").rename(src / "docs" / "c.txt")
    (src / "docs" / "b.txt").chmod(0o600)
    (src / "big.bin").write_bytes(b"new content")
    second = backup(hutch, src)["snapshot_id"]

    lines = json_lines(hutch.run("--json", "diff", first[:8], second).stdout)
    changes = {d["path"]: d["modifier"] for d in lines if d["message_type"] == "change"}
    assert changes[f"{src}/docs/a.txt"] == "-"
    assert changes[f"{src}/docs/c.txt"] == "+"
    assert changes[f"{src}/docs/b.txt"] == "U"
    assert changes[f"{src}/big.bin"] == "M"
    assert f"{src}/dup1" not in changes
    stat = lines[-1]
    assert stat["message_type"] == "statistics"
    assert stat["changed_files"] == 1
    assert (stat["added"]["files"], stat["removed"]["files"]) == (1, 1)
    assert stat["added"]["bytes"] >= len(b"new content")
    assert stat["removed"]["data_blobs"] >= 1
    human = hutch.run("diff", first, second).stdout.decode().splitlines()
    assert human[0] == f"comparing snapshot {first[:8]} to {second[:8]}:"
    assert f"-    {src}/docs/a.txt" in human
    assert f"+    {src}/docs/c.txt" in human
    assert f"M    {src}/big.bin" in human
    assert "Files:           1 new,     1 removed,     1 changed" in human

    by_name = json.loads(hutch.run("--json", "find", "a.txt", "*.nothing").stdout)
    assert [(f["snapshot"], [m["path"] for m in f["matches"]]) for f in by_name] == [
        (first, [f"{src}/docs/a.txt"])
    ]
    by_path = json.loads(hutch.run("--json", "find", f"{src}/docs/*").stdout)
    found = {
        f["snapshot"]: sorted(m["path"].rsplit("/", 1)[1] for m in f["matches"]) for f in by_path
    }
    assert found == {first: ["a.txt", "b.txt"], second: ["b.txt", "c.txt"]}
    (match,) = [m for m in by_path[0]["matches"] if m["path"].endswith("a.txt")]
    assert (match["type"], match["size"]) == ("file", 6)
    assert match["mtime"]

    restore = _stats(hutch, "restore-size", second)
    assert restore["snapshots_count"] == 1
    assert restore["total_size"] >= 6 + 6 + 11 + 2 * 30_000
    by_contents = _stats(hutch, "files-by-contents", second)
    assert by_contents["total_size"] == restore["total_size"] - 30_000
    raw = _stats(hutch, "raw-data")
    assert raw["snapshots_count"] == 2
    assert raw["total_blob_count"] > 0
    assert raw["total_size"] < 2 * (50_000 + 2 * 30_000)
    assert {"compression_ratio", "compression_space_saving", "total_uncompressed_size"} <= set(raw)

    _check_cat(hutch, src, second)


def _check_cat(hutch: Hutch, src: Path, snap_id: str) -> None:
    config = json.loads(hutch.run("cat", "config").stdout)
    assert config["compression"]["algorithm"] == "zstd"
    snap = json.loads(hutch.run("cat", "snapshot", snap_id[:10]).stdout)
    assert snap["paths"] == [str(src)]
    entries = _tree(hutch, f"{snap_id}:{src}")
    assert set(entries) == {"big.bin", "docs", "dup1", "dup2"}
    assert entries["docs"]["subtree"]
    (chunk,) = entries["big.bin"]["content"]
    assert hutch.run("cat", "blob", chunk).stdout == b"new content"

    key_file = next((hutch.repo / "keys").iterdir())
    key = json.loads(hutch.run("cat", "key", key_file.name[:6]).stdout)
    assert key["id"] == key_file.name
    assert set(key) == {
        "id",
        "is_current",
        "version",
        "kdf",
        "memory_kib",
        "iterations",
        "lanes",
        "salt",
        "sealed_length",
    }
    crypto = pytest.importorskip("crypto")
    master = crypto.open_keyfile(key_file.read_bytes(), PASSWORD.encode())[0]
    shown = json.dumps(key)
    for secret in (master.encryption, master.id_key, master.chunker):
        assert secret.hex() not in shown


def test_tag_add_remove_set(hutch: Hutch, tmp_path: Path) -> None:
    """Tags change by rewriting snapshots; `original` names the first of each line."""
    src = _source(tmp_path)
    first = backup(hutch, src)["snapshot_id"]
    (src / "new").write_bytes(b"n")
    second = backup(hutch, src)["snapshot_id"]

    assert hutch.run("tag", "--add", "keep,weekly").stdout == b"modified tags on 2 snapshots\n"
    assert len(snapshots(hutch, "--tag", "weekly")) == 2
    hutch.run("tag", "--remove", "weekly", "latest")
    done = json_lines(hutch.run("--json", "tag", "--set", "x", "--tag", "weekly").stdout)
    assert done[-1] == {"message_type": "summary", "changed_snapshots": 1}
    listed = snapshots(hutch)
    assert [s["tags"] for s in listed] == [["x"], ["keep"]]
    assert not {first, second} & {s["id"] for s in listed}
    assert done[0]["new_snapshot_id"] == listed[0]["id"]
    shown = json.loads(hutch.run("cat", "snapshot", listed[0]["id"]).stdout)
    assert shown["original"] == first

    bad = hutch.run("tag", "--set", "a", "--add", "b", check=False)
    assert bad.returncode == 2
    assert len(bad.stderr.decode().splitlines()) == 1


def test_rewrite_then_prune_reclaims(hutch: Hutch, tmp_path: Path) -> None:
    """rewrite --forget drops a file from every snapshot; prune then really removes its
    data: raw-data shrinks and its chunk is gone."""
    src = _source(tmp_path)
    backup(hutch, src)
    before = _stats(hutch, "raw-data")
    (chunk,) = _tree(hutch, f"latest:{src}")["big.bin"]["content"]
    done = json_lines(hutch.run("--json", "rewrite", "--exclude", "big.bin", "--forget").stdout)
    (rewritten,) = done[-1]["rewritten"]
    hutch.run("prune", "--max-unused", "0")
    after = _stats(hutch, "raw-data")
    assert after["snapshots_count"] == 1
    assert rewritten["new"] != rewritten["original"]
    assert after["total_size"] < before["total_size"] - 40_000
    gone = hutch.run("cat", "blob", chunk, check=False)
    assert gone.returncode == 1
    assert gone.stdout == b""
    assert b"not in index" in gone.stderr


def test_repair_packs_salvages_the_rest(hutch: Hutch, tmp_path: Path) -> None:
    """A flipped byte in one blob loses only that blob; after repair snapshots --forget,
    check --read-data passes."""
    src = _source(tmp_path)
    backup(hutch, src)
    (index_file,) = (hutch.repo / "index").iterdir()
    index = json.loads(hutch.run("cat", "index", index_file.name).stdout)
    pack = max((p for p in index["packs"] if p["type"] == "data"), key=lambda p: len(p["blobs"]))
    blob = pack["blobs"][1]
    path = hutch.repo / "data" / pack["id"][:2] / pack["id"]
    data = bytearray(path.read_bytes())
    data[blob["offset"] + blob["length"] // 2] ^= 0x01
    path.chmod(0o600)
    path.write_bytes(bytes(data))
    assert hutch.run("check", "--read-data", check=False).returncode == 1

    done = hutch.run("--json", "repair", "packs", pack["id"][:12], cwd=tmp_path)
    result = json.loads(done.stdout)
    assert result["blobs_lost"] == 1
    assert result["lost"] == [{"type": "data", "id": blob["id"]}]
    assert result["blobs_saved"] == len(pack["blobs"]) - 1
    assert (tmp_path / f"pack-{pack['id']}").read_bytes() == bytes(data)
    assert not path.exists()
    hutch.run("repair", "snapshots", "--forget")
    hutch.run("check", "--read-data")
