#!/usr/bin/env python3
"""First backups of a tree with the chunk worker and without it, alternated.

Files of 16 MiB or more are chunked at boundaries a second process finds
(repo/chunkworker.py). This backs TREE up into a new repository REPS times each way,
alternating, with this checkout's code: once as shipped, once with the worker's
threshold (repo.backup.CUT_APART_FROM) out of reach, so that the archiver chunks
every file itself. It prints each way's wall, user and system seconds, and the
medians' ratio.

    python3 benchmarks/chunk_worker.py /path/to/tree --work /tmp/cw [--reps 4]

The interpreter is this checkout's `.venv-e2e` (made by `make test`), else `.venv`.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(HERE)
# Runs hutch from this checkout, with the worker's threshold set from the environment.
RUN = """
import os, sys
sys.path.insert(0, {checkout!r})
from repo import backup
if os.environ.get("HUTCH_BENCH_NO_WORKER"):
    backup.CUT_APART_FROM = 1 << 62
from cli.early import main
sys.argv = ["hutch", *sys.argv[1:]]
main()
"""


def _python() -> str:
    for venv in (".venv-e2e", ".venv"):
        path = os.path.join(CHECKOUT, venv, "bin", "python")
        if os.path.exists(path):
            return path
    sys.exit("no virtual environment: run `make test`")


def _hutch(python: str, repo: str, *args: str, no_worker: bool = False) -> tuple[float, ...]:
    """Run one hutch command; its wall, user and system seconds (children included)."""
    env = dict(os.environ, HUTCH_PASSWORD="bench", HUTCH_REPOSITORY=repo)  # noqa: S106 - a throwaway repository
    if no_worker:
        env["HUTCH_BENCH_NO_WORKER"] = "1"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    code = RUN.format(checkout=CHECKOUT)
    subprocess.run([python, "-c", code, *args], env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tree")
    parser.add_argument("--work", required=True, help="the repositories go here")
    parser.add_argument("--reps", type=int, default=4)
    args = parser.parse_args()
    python = _python()
    repo = os.path.join(os.path.abspath(args.work), "repo")
    times: dict[str, list[tuple[float, ...]]] = {"worker": [], "no worker": []}
    for _rep in range(args.reps):
        for way, runs in times.items():
            shutil.rmtree(repo, ignore_errors=True)
            os.makedirs(os.path.dirname(repo), exist_ok=True)
            _hutch(python, repo, "init")
            os.sync()  # the last repository's writes are not this backup's
            time.sleep(1)
            runs.append(_hutch(python, repo, "backup", args.tree, no_worker=way != "worker"))
    shutil.rmtree(repo, ignore_errors=True)
    print("| way | wall s | user s | system s |")
    print("|---|---|---|---|")
    for way, runs in times.items():
        cells = [", ".join(f"{run[i]:.2f}" for run in runs) for i in range(3)]
        print(f"| {way} | {' | '.join(cells)} |")
    worker, alone = (statistics.median(r[0] for r in times[w]) for w in times)
    print(f"\nmedian wall, with the worker over without: {worker / alone:.2f}")


if __name__ == "__main__":
    main()
