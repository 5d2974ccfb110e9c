"""Damage to a repository: check names what is wrong, repair fixes what it can, restore and
dump never hand out wrong bytes, and a full disk fails cleanly (docs/design.md, Check)."""

from __future__ import annotations

import hashlib
import os
import random
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import Hutch, backup, restored_path, snapshots

# A date no test file has by accident: a restored file's mtime shows whether its
# metadata was applied.
OLD_MTIME_NS = 978_307_200_000_000_000  # 2001-01-01


# -- helpers ---------------------------------------------------------------------------


def _write(path: Path, data: bytes, *, mtime_ns: int = OLD_MTIME_NS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def _packs(repo: Path) -> dict[str, Path]:
    """Every pack of a repository by name (temporary files left out)."""
    return {p.name: p for p in (repo / "data").rglob("*") if p.is_file() and ".tmp-" not in p.name}


def _objects(repo: Path, kind: str) -> list[Path]:
    folder = repo / kind
    return sorted(p for p in folder.iterdir() if ".tmp-" not in p.name) if folder.exists() else []


def _flip_bit(path: Path, offset: int) -> None:
    """Flip one bit at offset (negative: from the end), in place."""
    os.chmod(path, 0o600)
    size = path.stat().st_size
    offset %= size
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x10]))


def _truncate(path: Path, drop: int = 100) -> None:
    os.chmod(path, 0o600)
    os.truncate(path, path.stat().st_size - drop)


def _new_data_pack(hutch: Hutch, src: Path, before: set[str]) -> Path:
    """Back up src; return the largest pack this backup added (its data pack)."""
    backup(hutch, src)
    new = {n: p for n, p in _packs(hutch.repo).items() if n not in before}
    assert new, "the backup stored no pack"
    return max(new.values(), key=lambda p: p.stat().st_size)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree_digest(root: Path) -> dict[str, str]:
    """Every regular file below root by relative path, with its SHA-256."""
    return {str(p.relative_to(root)): _sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _err(done: subprocess.CompletedProcess[bytes]) -> str:
    return done.stderr.decode(errors="replace")


def _out(done: subprocess.CompletedProcess[bytes]) -> str:
    return done.stdout.decode(errors="replace")


def _assert_one_line_error(done: subprocess.CompletedProcess[bytes], *words: str) -> None:
    """Exit 1 and exactly one `error:` line on stderr that names every word."""
    err = _err(done)
    assert done.returncode == 1, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    for word in words:
        assert word in errors[0], err


def _restores_exactly(
    hutch: Hutch, snap_id: str, src: Path, want: dict[str, str], out: Path
) -> None:
    hutch.run("restore", snap_id, "--target", out)
    assert _tree_digest(restored_path(out, src)) == want


@pytest.fixture
def rng() -> random.Random:
    return random.Random(20240611)


# -- check reports every problem with the object it concerns ---------------------------


def test_clean_repository_checks_clean(hutch: Hutch, tmp_path: Path, rng: random.Random) -> None:
    """A repository nothing happened to: check and check --read-data exit 0."""
    src = tmp_path / "src"
    _write(src / "a", rng.randbytes(300_000))
    _write(src / "sub" / "b", rng.randbytes(50_000))
    backup(hutch, src)
    for args in (("check",), ("check", "--read-data"), ("check", "--read-data-subset", "1/2")):
        done = hutch.run(*args)
        assert "no errors were found" in _out(done)
        assert _err(done) == ""


def test_flipped_bit_in_a_pack_is_named_by_read_data(
    hutch: Hutch, tmp_path: Path, rng: random.Random
) -> None:
    """A flipped bit in a pack: check --read-data exits 1 and names the pack."""
    src = tmp_path / "src"
    _write(src / "a", rng.randbytes(2_000_000))
    pack = _new_data_pack(hutch, src, set())
    _flip_bit(pack, pack.stat().st_size // 3)
    done = hutch.run("check", "--read-data", check=False)
    assert done.returncode == 1, _err(done)
    assert pack.name[:8] in _err(done)
    # Of two halves read by --read-data-subset, exactly the one holding the pack fails.
    halves = [hutch.run("check", "--read-data-subset", f"{n}/2", check=False) for n in (1, 2)]
    assert sorted(h.returncode for h in halves) == [0, 1], [h.stderr for h in halves]
    assert all((pack.name[:8] in _err(h)) == (h.returncode == 1) for h in halves)


def test_every_damaged_pack_is_named(hutch: Hutch, tmp_path: Path, rng: random.Random) -> None:
    """check keeps going after the first problem: a flipped pack and two truncated ones
    (one of them flipped in its header too) are all named by check --read-data, the two
    truncated ones by a plain check, and an intact pack is not blamed."""
    src = tmp_path / "src"
    packs = []
    for name in ("one", "two", "three", "four"):
        _write(src / name, rng.randbytes(1_000_000))
        packs.append(_new_data_pack(hutch, src, set(_packs(hutch.repo))))
    flipped, truncated, both, intact = packs
    _flip_bit(flipped, 1000)
    _truncate(truncated)
    _flip_bit(both, -200)  # in the header
    _truncate(both, 1)
    done = hutch.run("check", check=False)
    assert done.returncode == 1, _err(done)
    assert truncated.name[:8] in _err(done)
    assert both.name[:8] in _err(done)
    done = hutch.run("check", "--read-data", check=False)
    assert done.returncode == 1, _err(done)
    for pack in (flipped, truncated, both):
        assert pack.name[:8] in _err(done)
    assert intact.name[:8] not in _out(done) + _err(done)


def test_truncated_pack_is_named_by_plain_check(
    hutch: Hutch, tmp_path: Path, rng: random.Random
) -> None:
    """A truncated pack: a plain check (no data read) exits 1 and names the pack."""
    src = tmp_path / "src"
    _write(src / "a", rng.randbytes(500_000))
    pack = _new_data_pack(hutch, src, set())
    _truncate(pack)
    done = hutch.run("check", check=False)
    assert done.returncode == 1, _err(done)
    assert pack.name[:8] in _err(done)


def test_deleted_pack_is_named(hutch: Hutch, tmp_path: Path, rng: random.Random) -> None:
    """A deleted pack: check exits 1 and names the pack."""
    src = tmp_path / "src"
    _write(src / "a", rng.randbytes(500_000))
    pack = _new_data_pack(hutch, src, set())
    pack.unlink()
    done = hutch.run("check", check=False)
    assert done.returncode == 1, _err(done)
    assert pack.name[:8] in _err(done)


def test_deleted_index_is_repaired(hutch: Hutch, tmp_path: Path, rng: random.Random) -> None:
    """Without its index files, check fails and names the unreferenced packs; `repair
    index` rebuilds the index from pack headers, then check passes and all restores."""
    src = tmp_path / "src"
    _write(src / "a", rng.randbytes(700_000))
    first = backup(hutch, src)["snapshot_id"]
    want_first = _tree_digest(src)
    _write(src / "b", rng.randbytes(300_000))
    second = backup(hutch, src)["snapshot_id"]
    want_second = _tree_digest(src)
    packs = _packs(hutch.repo)
    index_files = _objects(hutch.repo, "index")
    assert index_files
    for path in index_files:
        path.unlink()

    done = hutch.run("check", check=False)
    assert done.returncode == 1, _out(done) + _err(done)
    report = _out(done) + _err(done)
    for name in packs:
        assert re.search(rf"pack {name[:8]}\b.*not referenced", report), report

    hutch.run("repair", "index")
    done = hutch.run("check", "--read-data")
    assert "not referenced" not in _out(done) + _err(done)
    _restores_exactly(hutch, first, src, want_first, tmp_path / "out1")
    _restores_exactly(hutch, second, src, want_second, tmp_path / "out2")


@pytest.fixture
def corrupted_index(hutch: Hutch, tmp_path: Path, rng: random.Random) -> tuple[Path, str, Path]:
    """A snapshot of src whose only index file has one flipped bit: (src, snapshot, file)."""
    src = tmp_path / "src"
    _write(src / "a", rng.randbytes(400_000))
    snap = backup(hutch, src)["snapshot_id"]
    (index_file,) = _objects(hutch.repo, "index")
    _flip_bit(index_file, index_file.stat().st_size // 2)
    return src, snap, index_file


def test_corrupted_index_file(
    hutch: Hutch, tmp_path: Path, corrupted_index: tuple[Path, str, Path]
) -> None:
    """A flipped bit in an index file: commands that need the index fail naming that file
    (exit 1, no traceback; ls and dump in one line); `repair index` copes and fixes it."""
    src, snap, index_file = corrupted_index
    want = _tree_digest(src)
    name = index_file.name[:8]
    done = hutch.run("check", check=False)
    assert done.returncode == 1, _err(done)
    assert name in _err(done)
    _assert_one_line_error(hutch.run("ls", snap, check=False), name)
    _assert_one_line_error(hutch.run("dump", snap, src / "a", check=False), name)

    done = hutch.run("repair", "index")
    assert not index_file.exists()
    hutch.run("check", "--read-data")
    _restores_exactly(hutch, snap, src, want, tmp_path / "out")


def test_corrupted_index_backup_fails_in_one_line(
    hutch: Hutch, tmp_path: Path, corrupted_index: tuple[Path, str, Path]
) -> None:
    """A backup meeting a damaged index file fails with exactly one line naming it."""
    src, _snap, index_file = corrupted_index
    _write(src / "changed", b"new data\n" * 1000)
    done = hutch.run("backup", src, check=False)
    _assert_one_line_error(done, index_file.name[:8])
    assert len(_err(done).splitlines()) == 1, _err(done)


def test_corrupted_index_restore_fails_in_one_line(
    hutch: Hutch, tmp_path: Path, corrupted_index: tuple[Path, str, Path]
) -> None:
    """A restore meeting a damaged index file fails with exactly one line naming it."""
    _src, snap, index_file = corrupted_index
    done = hutch.run("restore", snap, "--target", tmp_path / "out", check=False)
    _assert_one_line_error(done, index_file.name[:8])
    assert len(_err(done).splitlines()) == 1, _err(done)


def test_check_reports_a_corrupted_index_and_keeps_going(
    hutch: Hutch, tmp_path: Path, rng: random.Random
) -> None:
    """A damaged index file and a truncated pack listed in another index file: check
    names both (it keeps going after the first problem)."""
    src = tmp_path / "src"
    _write(src / "a", rng.randbytes(400_000))
    backup(hutch, src)
    (first_index,) = _objects(hutch.repo, "index")
    _write(src / "b", rng.randbytes(400_000))
    pack = _new_data_pack(hutch, src, set(_packs(hutch.repo)))
    _flip_bit(first_index, first_index.stat().st_size // 2)
    _truncate(pack)
    done = hutch.run("check", check=False)
    assert done.returncode == 1, _err(done)
    assert first_index.name[:8] in _err(done)
    assert pack.name[:8] in _err(done)


def test_tampered_snapshot_is_named(hutch: Hutch, tmp_path: Path, rng: random.Random) -> None:
    """A flipped bit in a snapshot: `snapshots` and `check` exit 1 naming it; check still
    checks the other snapshot and does not blame it."""
    src = tmp_path / "src"
    _write(src / "a", rng.randbytes(100_000))
    good = backup(hutch, src)["snapshot_id"]
    _write(src / "b", rng.randbytes(100_000))
    bad = backup(hutch, src)["snapshot_id"]
    _flip_bit(hutch.repo / "snapshots" / bad, 40)

    done = hutch.run("snapshots", check=False)
    assert done.returncode == 1, _err(done)
    assert bad[:8] in _err(done)
    done = hutch.run("check", check=False)
    assert done.returncode == 1, _err(done)
    assert bad[:8] in _err(done)
    assert good[:8] not in _err(done)
    assert "checked 1 snapshots" in _out(done)


def test_tampered_key_file_is_damaged_not_wrong_password(
    hutch: Hutch, tmp_path: Path, rng: random.Random
) -> None:
    """A flipped bit in the only key file: opening reports that key file as damaged (exit
    1), not a wrong password (exit 12)."""
    src = tmp_path / "src"
    _write(src / "a", rng.randbytes(10_000))
    backup(hutch, src)
    (key,) = _objects(hutch.repo, "keys")
    _flip_bit(key, 30)
    for args in (("snapshots",), ("check",), ("restore", "latest", "--target", tmp_path / "o")):
        done = hutch.run(*args, check=False)
        _assert_one_line_error(done, key.name[:8], "damaged")


def test_damaged_second_key_file_is_reported_by_check(
    hutch: Hutch, tmp_path: Path, rng: random.Random
) -> None:
    """With two key files and one damaged, the other still opens the repository, check
    names the damaged one, and its password gives `damaged`, not `wrong password`."""
    src = tmp_path / "src"
    _write(src / "a", rng.randbytes(10_000))
    backup(hutch, src)
    (old,) = _objects(hutch.repo, "keys")
    pw_file = tmp_path / "new-password"
    pw_file.write_text("second password\n")
    hutch.run("key", "add", "--new-password-file", pw_file)
    _flip_bit(old, 30)
    other = {"HUTCH_PASSWORD": "second password"}
    assert hutch.run("snapshots", env=other).returncode == 0
    done = hutch.run("check", env=other, check=False)
    assert done.returncode == 1, _err(done)
    assert old.name[:8] in _err(done)
    done = hutch.run("snapshots", check=False)  # the damaged key's own password
    assert done.returncode == 1, _err(done)
    assert old.name[:8] in _err(done)
    assert "damaged" in _err(done)


def test_damaged_config_is_named_not_wrong_password(hutch: Hutch) -> None:
    """A flipped bit in the config: exit 1 naming `config`, not exit 12."""
    _flip_bit(hutch.repo / "config", 40)
    _assert_one_line_error(hutch.run("snapshots", check=False), "config")


# -- restore and dump meeting damage ---------------------------------------------------


@pytest.fixture
def damaged_file(hutch: Hutch, tmp_path: Path, rng: random.Random) -> tuple[Path, bytes]:
    """A snapshot of several good files and one multi-chunk file `bad.bin` whose pack
    has one flipped bit in the middle. Returns (source folder, bad.bin's true bytes)."""
    src = tmp_path / "src"
    for i in range(4):
        _write(src / f"good{i}.bin", rng.randbytes(300_000 + i))
    _write(src / "sub" / "good.txt", b"intact\n" * 1000)
    backup(hutch, src)
    before = set(_packs(hutch.repo))
    bad = rng.randbytes(6_000_000)  # about six chunks of ~1 MiB
    _write(src / "bad.bin", bad)
    pack = _new_data_pack(hutch, src, before)
    _flip_bit(pack, pack.stat().st_size // 2)
    return src, bad


def test_restore_reports_the_damaged_file_and_restores_the_rest(
    hutch: Hutch, tmp_path: Path, damaged_file: tuple[Path, bytes]
) -> None:
    """The damaged file is named with a byte range, gets no metadata; every other file
    is restored intact with its metadata; exit 1."""
    src, _bad = damaged_file
    target = tmp_path / "out"
    done = hutch.run("restore", "latest", "--target", target, check=False)
    assert done.returncode == 1, _err(done)
    err = _err(done)
    bad_lines = [line for line in err.splitlines() if "bad.bin" in line]
    assert bad_lines, err
    assert any(re.search(r"\d+\s*-\s*\d+", line) for line in bad_lines), err
    assert "good" not in err
    out = restored_path(target, src)
    for path in src.rglob("*"):
        if path.is_file() and path.name != "bad.bin":
            restored = out / path.relative_to(src)
            assert restored.read_bytes() == path.read_bytes()
            assert restored.stat().st_mtime_ns == OLD_MTIME_NS
            assert restored.stat().st_mode == path.stat().st_mode
    assert (out / "bad.bin").exists()
    assert (out / "bad.bin").stat().st_mtime_ns != OLD_MTIME_NS


def test_dump_of_a_damaged_file_fails_without_wrong_bytes(
    hutch: Hutch, damaged_file: tuple[Path, bytes]
) -> None:
    """dump of the damaged file exits 1; what it wrote before failing is a prefix of the
    true content. A good file of the same snapshot still dumps."""
    src, bad = damaged_file
    done = hutch.run("dump", "latest", src / "bad.bin", check=False)
    assert done.returncode == 1, _err(done)
    assert "bad.bin" in _err(done)
    assert len(done.stdout) < len(bad)
    assert bad.startswith(done.stdout)
    good = hutch.run("dump", "latest", src / "good1.bin").stdout
    assert good == (src / "good1.bin").read_bytes()
    done = hutch.run("dump", "latest", src, check=False)  # as tar: fails too
    assert done.returncode == 1, _err(done)


# -- a full disk -----------------------------------------------------------------------


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs mounted under tmp_path (root only; CI must be able to)."""
    mnt = tmp_path / "disk"
    if not _mount_tmpfs(mnt, "8m"):
        if os.environ.get("CI") == "true":
            pytest.fail("cannot mount a tmpfs: CI must run the full-disk test (as root)")
        pytest.skip("cannot mount a tmpfs (not root?)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


def test_full_disk_during_backup(
    make_hutch: Callable[[Path], Hutch], small_disk: Path, tmp_path: Path, rng: random.Random
) -> None:
    """20 MiB into an 8 MiB file system: exit 1, one `no space left` line, no traceback;
    the repository still passes check --read-data and the earlier snapshot restores."""
    repo = small_disk / "repo"
    small = make_hutch(repo)
    small.run("init")
    src = tmp_path / "src"
    _write(src / "small", rng.randbytes(200_000))
    first = backup(small, src)["snapshot_id"]
    want = _tree_digest(src)
    big = tmp_path / "big"
    _write(big / "random", rng.randbytes(20 << 20))
    done = small.run("backup", big, check=False)
    _assert_one_line_error(done, "no space left")
    assert len(_err(done).splitlines()) == 1, _err(done)
    assert list((repo / "locks").iterdir()) == []
    assert [p for p in repo.rglob("*") if ".tmp-" in p.name] == []
    assert [s["id"] for s in snapshots(small)] == [first]
    small.run("check", "--read-data")
    _restores_exactly(small, first, src, want, tmp_path / "out")
