"""The main job end to end: init, backup, incremental backup, restore, dump, check."""

from __future__ import annotations

from pathlib import Path

from harness import Hutch, backup, backup_twice


def test_round_trip_and_incremental(hutch: Hutch, tmp_path: Path) -> None:
    """A second backup of unchanged data adds nothing and a restore gives the files back."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"hello\n" * 1000)
    (src / "sub" / "b.bin").write_bytes(bytes(range(256)) * 4096)
    first = backup(hutch, src)
    assert first["files_new"] == 2
    # backup_twice: a file created in /tmp meanwhile would change the root tree.
    _, second, _ = backup_twice(hutch, src, sources=[src])
    assert second["files_unmodified"] == 2
    assert second["data_added"] == 0
    hutch.run("restore", "latest", "--target", tmp_path / "out")
    restored = tmp_path / "out" / str(src).lstrip("/")
    assert (restored / "a.txt").read_bytes() == (src / "a.txt").read_bytes()
    assert (restored / "sub" / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()
    dumped = hutch.run("dump", "latest", src / "sub" / "b.bin").stdout
    assert dumped == (src / "sub" / "b.bin").read_bytes()
    hutch.run("check", "--read-data")
