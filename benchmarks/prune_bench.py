#!/usr/bin/env python3
"""Prune benchmark: time and peak memory of `forget --keep-last 1 --prune` on a
repository of many blobs, hutch against restic (when installed), side by side.

The corpus is FILES small files of distinct content (each one data blob), spread over
folders of 100; a second backup follows after a third of the files were replaced, so
prune has whole packs to delete and partly used packs to repack.

    python3 benchmarks/prune_bench.py [--files 100000] [--reps 3] [--work DIR]

Prints one Markdown table: wall and CPU seconds, peak RSS, repository size before and
after, and hutch's ratio to restic. Needs GNU time (/usr/bin/time) for CPU and RSS.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

PASSWORD = "bench-password"


def build_corpus(root: str, files: int, generation: int) -> None:
    """Deterministic files of 512-4096 bytes; `generation` changes a third of them."""
    for i in range(files):
        folder = os.path.join(root, f"d{i // 100:05d}")
        os.makedirs(folder, exist_ok=True)
        gen = generation if i % 3 == 0 else 0
        seed = hashlib.sha256(f"{i}:{gen}".encode()).digest()
        size = 512 + seed[0] * 14
        data = hashlib.shake_128(seed).digest(size)
        with open(os.path.join(folder, f"f{i:06d}"), "wb") as f:
            f.write(data)


def dir_size(path: str) -> int:
    total = 0
    for dirpath, _dirs, names in os.walk(path):
        for name in names:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def timed(argv: list[str], env: dict[str, str], cwd: str | None = None) -> dict[str, float]:
    """Run one command; wall from here, CPU and peak RSS from GNU time."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        full = ["/usr/bin/time", "-q", "-o", tf.name, "-f", "%U %S %M", *argv]
        start = time.perf_counter()
        done = subprocess.run(full, env=env, cwd=cwd, capture_output=True, check=False)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
        user, system, rss = tf.read().split()
    return {"wall": wall, "cpu": float(user) + float(system), "rss_mib": int(rss) / 1024}


TOOLS = {
    "hutch": {
        "env": {"HUTCH_PASSWORD": PASSWORD},
        "init": ["hutch", "-r", "{repo}", "init"],
        "backup": ["hutch", "-r", "{repo}", "-q", "backup", "{src}"],
        "prune": ["hutch", "-r", "{repo}", "-q", "forget", "--keep-last", "1", "--prune"],
    },
    "restic": {
        "env": {"RESTIC_PASSWORD": PASSWORD},
        "init": ["restic", "-r", "{repo}", "init"],
        "backup": ["restic", "-r", "{repo}", "-q", "backup", "{src}"],
        "prune": ["restic", "-r", "{repo}", "-q", "forget", "--keep-last", "1", "--prune"],
    },
}


def run_tool(tool: str, work: str, src: str, files: int, cache: str) -> dict[str, float]:
    spec = TOOLS[tool]
    env = {**os.environ, **spec["env"], "HUTCH_CACHE_DIR": cache, "RESTIC_CACHE_DIR": cache}
    repo = os.path.join(work, f"repo-{tool}")
    shutil.rmtree(repo, ignore_errors=True)

    def argv(step: str) -> list[str]:
        return [a.format(repo=repo, src=src) for a in spec[step]]

    timed(argv("init"), env)
    build_corpus(src, files, generation=0)
    timed(argv("backup"), env)
    build_corpus(src, files, generation=1)
    timed(argv("backup"), env)
    before = dir_size(repo)
    result = timed(argv("prune"), env)
    result["repo_before_mib"] = before / 2**20
    result["repo_after_mib"] = dir_size(repo) / 2**20
    shutil.rmtree(repo)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--work", default=None)
    args = parser.parse_args()
    tools = [t for t in TOOLS if shutil.which(t)]
    if "hutch" not in tools:
        sys.exit("hutch is not on PATH")
    work = args.work or tempfile.mkdtemp(prefix="hutch-prune-bench-")
    os.makedirs(work, exist_ok=True)
    results: dict[str, list[dict[str, float]]] = {t: [] for t in tools}
    try:
        for rep in range(args.reps):
            for tool in tools:  # interleaved, so both meet the same machine state
                src = os.path.join(work, f"src-{tool}")
                shutil.rmtree(src, ignore_errors=True)
                results[tool].append(run_tool(tool, work, src, args.files, os.path.join(work, "cache")))
                print(f"rep {rep + 1} {tool}: {results[tool][-1]}", file=sys.stderr)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    med = {t: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for t, rs in results.items()}
    print(f"prune of {args.files} one-blob files, a third replaced; medians of {args.reps}\n")
    print("| tool | wall s | CPU s | peak RSS MiB | repo before MiB | repo after MiB |")
    print("|---|--:|--:|--:|--:|--:|")
    for tool, m in med.items():
        print(f"| {tool} | {m['wall']:.2f} | {m['cpu']:.2f} | {m['rss_mib']:.0f} "
              f"| {m['repo_before_mib']:.1f} | {m['repo_after_mib']:.1f} |")
    if "restic" in med:
        h, r = med["hutch"], med["restic"]
        print(f"\nhutch / restic: wall {h['wall'] / r['wall']:.2f}, CPU {h['cpu'] / r['cpu']:.2f}, "
              f"peak RSS {h['rss_mib'] / r['rss_mib']:.2f}")


if __name__ == "__main__":
    main()
