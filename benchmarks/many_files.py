#!/usr/bin/env python3
"""Many small files: first backup, no-change backup, full restore and a one-file dump of
a tree of FILES small files, hutch against restic and borg (whichever are installed),
side by side in interleaved repetitions.

The corpus is FILES text-like files of 100-2,000 bytes, 250 to a folder, built
deterministically. Per-file costs decide these figures, where the `src` and `big`
corpora of peers.py are decided by bytes.

    python3 benchmarks/many_files.py [--files 100000] [--reps 1] [--work DIR]

hutch is taken from this checkout's `.venv-e2e` (made by `make test`), else from PATH.
Prints one Markdown table: medians of wall and CPU seconds, peak RSS, and hutch's ratio
to the faster peer. Needs GNU time (/usr/bin/time) for CPU and RSS. Restores go to a
fresh folder each time; on ext4 without a journal the kernel's time to create files
depends on how recently files were deleted nearby, so compare within one run only.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile

from prune_bench import PASSWORD, timed

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(HERE)
WORDS = b"alpha beta gamma delta backup restore chunk index pack tree snapshot blob".split()
STEPS = ("first backup", "no-change backup", "full restore", "one-file dump")


def build_corpus(root: str, files: int) -> str:
    """FILES deterministic files; returns the path of the one the dump step reads."""
    for i in range(files):
        folder = os.path.join(root, f"d{i // 250:04d}")
        if i % 250 == 0:
            os.makedirs(folder, exist_ok=True)
        seed = hashlib.sha256(b"%d" % i).digest()
        size = 100 + int.from_bytes(seed[:2], "little") % 1900
        words = [WORDS[b % len(WORDS)] for b in hashlib.shake_128(seed).digest(size // 6)]
        with open(os.path.join(folder, f"file_{i:06d}.txt"), "wb") as f:
            f.write(b" ".join(words)[:size])
    last = files - 1
    return os.path.join(root, f"d{last // 250:04d}", f"file_{last:06d}.txt")


def commands(tool: str, repo: str, src: str, target: str, one: str) -> dict[str, list[str]]:
    if tool in ("hutch", "restic"):  # hutch takes restic's command line for these
        return {
            "init": [tool, "-r", repo, "init"],
            "backup1": [tool, "-r", repo, "-q", "backup", src],
            "backup2": [tool, "-r", repo, "-q", "backup", src],
            "restore": [tool, "-r", repo, "-q", "restore", "latest", "--target", target],
            "dump": [tool, "-r", repo, "dump", "latest", one],
        }
    return {
        "init": ["borg", "init", "-e", "repokey-blake2", repo],
        "backup1": ["borg", "create", f"{repo}::first", src],
        "backup2": ["borg", "create", f"{repo}::second", src],
        "restore": ["borg", "extract", f"{repo}::second"],
        "dump": ["borg", "extract", "--stdout", f"{repo}::second", one.lstrip("/")],
    }


def run_tool(tool: str, work: str, src: str, one: str) -> dict[str, dict[str, float]]:
    base = os.path.join(work, tool)
    shutil.rmtree(base, ignore_errors=True)
    repo, target, cache = (os.path.join(base, d) for d in ("repo", "restore", "cache"))
    os.makedirs(target)
    env = dict(os.environ, LC_ALL="C.UTF-8", XDG_CACHE_HOME=cache, HUTCH_CACHE_DIR=cache)
    env.update(
        HUTCH_PASSWORD=PASSWORD, RESTIC_PASSWORD=PASSWORD, BORG_PASSPHRASE=PASSWORD,
        RESTIC_CACHE_DIR=cache, BORG_BASE_DIR=cache,
    )  # fmt: skip
    cmd = commands(tool, repo, src, target, one)
    timed(cmd["init"], env)
    out = {
        "first backup": timed(cmd["backup1"], env),
        "no-change backup": timed(cmd["backup2"], env),
        "full restore": timed(cmd["restore"], env, cwd=target),
        "one-file dump": timed(cmd["dump"], env),
    }
    shutil.rmtree(base, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "hutch-many-files"))
    args = parser.parse_args()
    hutch = os.path.join(CHECKOUT, ".venv-e2e", "bin", "hutch")
    if os.path.exists(hutch):
        os.environ["PATH"] = f"{os.path.dirname(hutch)}:{os.environ['PATH']}"
    tools = [t for t in ("hutch", "restic", "borg") if shutil.which(t)]
    if "hutch" not in tools:
        sys.exit("no hutch: run `make test` or put hutch on PATH")
    src = os.path.join(args.work, "corpus")
    shutil.rmtree(src, ignore_errors=True)
    one = build_corpus(src, args.files)
    runs: dict[str, list[dict[str, dict[str, float]]]] = {t: [] for t in tools}
    for _ in range(args.reps):
        for tool in tools:
            runs[tool].append(run_tool(tool, args.work, src, one))
    print(f"{args.files} files, medians of {args.reps}\n")
    print("| step | tool | wall s | CPU s | peak RSS MiB | hutch / faster peer |")
    print("|---|---|--:|--:|--:|--:|")
    for step in STEPS:
        walls = {t: statistics.median(r[step]["wall"] for r in runs[t]) for t in tools}
        peers = [walls[t] for t in tools if t != "hutch"]
        for tool in tools:
            cpu = statistics.median(r[step]["cpu"] for r in runs[tool])
            rss = max(r[step]["rss_mib"] for r in runs[tool])
            ratio = f"{walls['hutch'] / min(peers):.2f}" if tool == "hutch" and peers else ""
            print(f"| {step} | {tool} | {walls[tool]:.2f} | {cpu:.2f} | {rss:.0f} | {ratio} |")


if __name__ == "__main__":
    main()
