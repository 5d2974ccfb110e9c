"""SIGKILL at random moments: backup and prune leave a repository that passes check
--read-data, whose completed snapshots restore byte for byte, and whose dead local
locks are skipped without `unlock` (docs/design.md, Locks and Prune)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from harness import Hutch, backup, restored_path

ITERATIONS = 8
SEED = 20240612


def _digest(root: Path) -> dict[str, str]:
    """Every regular file below root by relative path, with its SHA-256."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                out[str(path.relative_to(root))] = hashlib.file_digest(f, "sha256").hexdigest()
    return out


def _random_file(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))
        f.write(os.urandom(size & ((1 << 20) - 1)))


def _lock_files(repo: Path) -> list[Path]:
    folder = repo / "locks"
    return [p for p in folder.iterdir() if ".tmp-" not in p.name] if folder.exists() else []


def _kill_after(hutch: Hutch, delay: float, *args: str | Path) -> int | None:
    """Start `hutch -r REPO ARGS`, SIGKILL it after `delay` seconds, reap it; returns its
    exit code when it had finished before the kill, else None."""
    argv = [hutch.bin, "-r", str(hutch.repo), *[str(a) for a in args]]
    proc = subprocess.Popen(argv, env=hutch.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(delay)  # the moment of the kill is what varies: a fixed wait is the point
        finished = proc.poll()
        proc.kill()
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert b"Traceback" not in err, err.decode(errors="replace")
    if finished is not None:
        assert finished == 0, err.decode(errors="replace")
    return finished


def _run_together(hutch: Hutch, *commands: tuple[str | Path, ...]) -> list[bytes]:
    """Run several hutch commands at once (readers share the lock); each must exit 0.
    Returns their standard outputs."""
    procs = [
        subprocess.Popen(
            [hutch.bin, "-r", str(hutch.repo), *[str(a) for a in args]],
            env=hutch.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for args in commands
    ]
    results = [
        (args, *proc.communicate(timeout=300), proc.returncode)
        for args, proc in zip(commands, procs, strict=True)
    ]
    for args, out, err, code in results:
        assert b"Traceback" not in err, err.decode(errors="replace")
        assert code == 0, (args, out.decode(errors="replace"), err.decode(errors="replace"))
    return [out for _args, out, _err, _code in results]


def _snapshot_ids(repo: Path) -> list[str]:
    folder = repo / "snapshots"
    return sorted(p.name for p in folder.iterdir() if ".tmp-" not in p.name)


def _assert_restored(target: Path, expected: dict[Path, dict[str, str]]) -> None:
    """target holds the restore of exactly one of the expected sources, byte for byte."""
    found = [src for src in expected if restored_path(target, src).exists()]
    assert len(found) == 1, (target, found)
    assert _digest(restored_path(target, found[0])) == expected[found[0]]
    shutil.rmtree(target)


def _check_and_restore(
    hutch: Hutch, snap_ids: list[str], expected: dict[Path, dict[str, str]], out: Path
) -> None:
    """check --read-data and a restore of every given snapshot, all at once; then compare."""
    targets = [out / snap_id[:8] for snap_id in snap_ids]
    _run_together(
        hutch,
        ("check", "--read-data"),
        *[
            ("restore", snap_id, "--target", t)
            for snap_id, t in zip(snap_ids, targets, strict=True)
        ],
    )
    for target in targets:
        _assert_restored(target, expected)


def _fresh_copy(hutch: Hutch, template: Path, repo: Path) -> Hutch:
    """A copy of the template repository made of hard links: hutch never modifies an
    object in place (it writes a temporary file and renames it), so the template stays
    intact whatever the copy goes through."""
    if repo.exists():
        shutil.rmtree(repo)
    shutil.copytree(template, repo, copy_function=os.link)
    return dataclasses.replace(hutch, repo=repo)


def _kill_delays(seed: int) -> list[float]:
    """ITERATIONS random delays in 0.05-1.0 s, one in each of ITERATIONS equal slices of
    that span (in random order), so the kills cover the whole run whatever the seed."""
    rng = random.Random(seed)
    width = (1.0 - 0.05) / ITERATIONS
    delays = [0.05 + width * (i + rng.random()) for i in range(ITERATIONS)]
    rng.shuffle(delays)
    return delays


@pytest.mark.slow
def test_backup_killed_at_random_moments(hutch: Hutch, tmp_path: Path) -> None:
    """A backup of 100 MiB killed after 0.05-1 s, eight times: check --read-data passes
    right away, every completed snapshot restores byte for byte, prune takes its exclusive
    lock without `unlock`, and (every fourth time) the next backup completes and restores."""
    src = tmp_path / "src"
    for i in range(4):
        _random_file(src / f"part{i}.bin", (25 << 20) + i * 4099)
    _random_file(src / "sub" / "small.bin", 70_000)
    early = tmp_path / "early"
    _random_file(early / "first.bin", 300_000)
    backup(hutch, early)
    expected = {early: _digest(early), src: _digest(src)}
    template = tmp_path / "template"
    shutil.copytree(hutch.repo, template)
    out = tmp_path / "out"
    killed_mid_run = left_locks = 0
    for i, delay in enumerate(_kill_delays(SEED)):
        victim = _fresh_copy(hutch, template, tmp_path / "repo-k")
        finished = _kill_after(victim, delay, "backup", src)
        killed_mid_run += finished is None
        left_locks += bool(_lock_files(victim.repo))
        completed = _snapshot_ids(victim.repo)
        # A kill between writing the snapshot and exiting leaves a completed snapshot too.
        assert len(completed) in ((2,) if finished is not None else (1, 2)), (i, delay)
        # The killed backup's shared lock is skipped by readers and by prune (exclusive)
        # right away: no --retry-lock, no unlock.
        _check_and_restore(victim, completed, expected, out)
        victim.run("prune", "--max-unused", "unlimited")
        if i % 4 == 3:
            # The next backup completes, reusing whatever the killed one indexed.
            new = backup(victim, src)["snapshot_id"]
            _check_and_restore(victim, [new], expected, out)
    assert killed_mid_run >= ITERATIONS // 4
    assert left_locks >= 1, "no kill hit the backup while it held its lock"


@pytest.mark.slow
def test_prune_killed_at_random_moments(hutch: Hutch, tmp_path: Path) -> None:
    """prune --max-unused 0 (repacking partly used packs) killed after 0.05-1 s, eight
    times: check --read-data passes right away without `unlock`, the kept snapshot restores
    byte for byte, and (alternately) a backup works right away, or the next prune
    finishes the job."""
    src = tmp_path / "src"
    for i in range(24):
        _random_file(src / f"f{i:02}", (4 << 20) + i)
    first = backup(hutch, src)["snapshot_id"]
    for i in range(0, 24, 2):
        (src / f"f{i:02}").unlink()  # every other file: each pack becomes partly used
    _random_file(src / "new", 3 << 20)
    kept = backup(hutch, src)["snapshot_id"]
    (hutch.repo / "snapshots" / first).unlink()  # forget the first snapshot
    other = tmp_path / "other"
    _random_file(other / "o.bin", 50_000)
    expected = {src: _digest(src), other: _digest(other)}
    template = tmp_path / "template"
    shutil.copytree(hutch.repo, template)
    plan = hutch.run("--json", "prune", "--dry-run", "--max-unused", "0").stdout
    assert b'"packs_to_repack":0,' not in plan, plan
    out = tmp_path / "out"
    killed_mid_run = left_locks = 0
    for i, delay in enumerate(_kill_delays(SEED + 1)):
        victim = _fresh_copy(hutch, template, tmp_path / "repo-k")
        finished = _kill_after(victim, delay, "prune", "--max-unused", "0")
        killed_mid_run += finished is None
        left_locks += bool(_lock_files(victim.repo))
        restore = [kept]
        if i % 2 == 0:
            # The dead prune's exclusive lock is skipped by a backup right away.
            restore.append(backup(victim, other)["snapshot_id"])
        _check_and_restore(victim, restore, expected, out)
        if i % 2 == 1:
            # The next prune finishes from wherever the killed one stopped.
            done = victim.run("--json", "prune", "--max-unused", "0")
            assert b'"unused_bytes_after":0,' in done.stdout, done.stdout
    assert killed_mid_run >= ITERATIONS // 4
    assert left_locks >= 1, "no kill hit prune while it held its lock"
