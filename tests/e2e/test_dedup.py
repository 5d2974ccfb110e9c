"""Deduplication, compression, and not reading files that did not change."""

from __future__ import annotations

import ctypes
import os
import random
import struct
import time
from pathlib import Path

from harness import Hutch, backup, backup_twice, repo_files

MIB = 1 << 20
IN_OPEN = 0x20
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
EVENT_HEADER = struct.Struct("iIII")


def _data_bytes(repo: Path) -> int:
    return sum(p.stat().st_size for p in (repo / "data").rglob("*") if p.is_file())


def test_identical_second_backup_adds_only_a_snapshot(hutch: Hutch, tmp_path: Path) -> None:
    """Backing up unchanged files again stores no blob and adds one snapshot object only."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(random.Random(1).randbytes(3 * MIB))
    (src / "sub" / "b.txt").write_bytes(b"some text\n" * 1000)
    _, second, before = backup_twice(hutch, src, sources=[src])
    assert _data_bytes(hutch.repo) > 3 * MIB
    assert (second["data_added"], second["data_blobs"], second["tree_blobs"]) == (0, 0, 0)
    assert second["files_unmodified"] == 2
    after = repo_files(hutch.repo)
    new = set(after) - set(before)
    assert len(new) == 1
    assert new.pop().startswith("snapshots/")
    assert {k: v for k, v in after.items() if k in before} == before


def test_small_inserts_store_a_small_fraction(hutch: Hutch, tmp_path: Path) -> None:
    """After three small inserts into a 20 MiB file only the chunks around them are stored."""
    src = tmp_path / "src"
    src.mkdir()
    data = random.Random(2).randbytes(20 * MIB)
    (src / "big.bin").write_bytes(data)
    first = backup(hutch, src)
    assert first["data_added"] >= 20 * MIB
    for offset in (17 * MIB + 5, 9 * MIB + 1234, 2 * MIB + 77):
        data = data[:offset] + b"inserted bytes!" * 7 + data[offset:]
    (src / "big.bin").write_bytes(data)
    second = backup(hutch, src)
    assert second["files_changed"] == 1
    assert 0 < second["data_added"] < 0.25 * len(data)
    assert hutch.run("dump", "latest", src / "big.bin").stdout == data


def test_compressible_text_is_stored_compressed(hutch: Hutch, tmp_path: Path) -> None:
    """20 MiB of repetitive words take less than half their size in the repository."""
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(3)
    words = [rng.randbytes(rng.randint(2, 5)).hex().encode() for _ in range(500)]
    text = b" ".join(rng.choices(words, k=2_400_000))[: 20 * MIB]
    (src / "words.txt").write_bytes(text)
    summary = backup(hutch, src)
    assert summary["data_added"] >= len(text)
    assert _data_bytes(hutch.repo) < 0.5 * len(text)


def test_identical_files_are_stored_once(hutch: Hutch, tmp_path: Path) -> None:
    """Two files with the same 4 MiB of random bytes store those bytes once."""
    src = tmp_path / "src"
    (src / "deeper").mkdir(parents=True)
    data = random.Random(4).randbytes(4 * MIB)
    (src / "one.bin").write_bytes(data)
    (src / "deeper" / "two.bin").write_bytes(data)
    summary = backup(hutch, src)
    assert summary["files_new"] == 2
    assert len(data) <= summary["data_added"] < len(data) + 64 * 1024
    assert _data_bytes(hutch.repo) < 1.2 * len(data)


class _Inotify:
    """IN_OPEN events of the files in one folder, through Linux inotify."""

    def __init__(self, folder: Path) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        wd = self.libc.inotify_add_watch(self.fd, os.fsencode(folder), IN_OPEN)
        assert wd >= 0, os.strerror(ctypes.get_errno())

    def opened(self) -> list[bytes]:
        """Names opened since the last call (the folder itself shows as b"")."""
        names: list[bytes] = []
        while True:
            try:
                buf = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return names
            pos = 0
            while pos < len(buf):
                _wd, mask, _cookie, length = EVENT_HEADER.unpack_from(buf, pos)
                start = pos + EVENT_HEADER.size
                if mask & IN_OPEN:
                    names.append(buf[start : start + length].rstrip(b"\0"))
                pos = start + length

    def close(self) -> None:
        os.close(self.fd)


def test_unchanged_files_are_not_opened(hutch: Hutch, tmp_path: Path) -> None:
    """A file unchanged since the parent is not even opened, a changed one is, --force opens all."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "unchanged.bin").write_bytes(random.Random(5).randbytes(MIB))
    (src / "changed.txt").write_bytes(b"before\n")
    (src / "same-mtime.txt").write_bytes(b"version 1\n")
    # Entries changed within a second before the parent backup are read again anyway.
    time.sleep(1.1)
    backup(hutch, src)
    (src / "changed.txt").write_bytes(b"after!\n")
    # Same size and mtime as in the parent: only the ctime tells the change.
    old = os.stat(src / "same-mtime.txt")
    (src / "same-mtime.txt").write_bytes(b"version 2\n")
    os.utime(src / "same-mtime.txt", ns=(old.st_atime_ns, old.st_mtime_ns))
    watch = _Inotify(src)
    try:
        second = backup(hutch, src)
        opened = watch.opened()
        assert b"changed.txt" in opened
        assert b"same-mtime.txt" in opened
        assert b"unchanged.bin" not in opened
        assert (second["files_changed"], second["files_unmodified"]) == (2, 1)
        assert (second["dirs_changed"], second["dirs_new"]) == (1, 0)
        forced = backup(hutch, "--force", src)
        assert b"unchanged.bin" in watch.opened()
        assert forced["files_unmodified"] == 3
    finally:
        watch.close()
    assert hutch.run("dump", "latest", src / "same-mtime.txt").stdout == b"version 2\n"
