#!/usr/bin/env python3
"""Bytes a mutated backup adds: hutch against restic over several fresh repositories.

The peer harness's `big` corpus (`../shared/bench/corpus.py`) is backed up, then
mutated as the harness mutates it (five small inserts into the text, 1 MiB overwritten
in the VM image) and backed up again; the figure is how much the repository grew.
restic picks a random chunker polynomial for every new repository, so its figure
moves from one repository to the next: it is measured --restic-repos times. hutch's
chunker is fixed, so one repository says it all.

    python3 benchmarks/mutated_bytes.py [--restic-repos 12] [--work DIR] [--harness DIR]

hutch is taken from this checkout's `.venv-e2e` (made by `make test`), else from PATH.
Needs about 3 GiB in the work folder; some 15 s a repository.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from prune_bench import PASSWORD, dir_size

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(HERE)


def added(tool: list[str], env: dict[str, str], work: str, before: str, after: str) -> int:
    """Back up `before`, then `after` in its place (same path), in a new repository."""
    repo, data = os.path.join(work, "repo"), os.path.join(work, "data")
    shutil.rmtree(repo, ignore_errors=True)

    def run(*args: str) -> None:
        subprocess.run([*tool, "-r", repo, *args], env=env, check=True, capture_output=True)

    run("init")
    os.rename(before, data)
    try:
        run("backup", data)
        first = dir_size(repo)
    finally:
        os.rename(data, before)
    os.rename(after, data)
    try:
        run("backup", data)
    finally:
        os.rename(data, after)
    grown = dir_size(repo) - first
    shutil.rmtree(repo)
    return grown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restic-repos", type=int, default=12)
    parser.add_argument("--work", default=None)
    parser.add_argument("--harness", default=os.path.join(CHECKOUT, "..", "shared", "bench"))
    args = parser.parse_args()
    sys.path.insert(0, os.path.abspath(args.harness))
    import corpus  # noqa: PLC0415 - the harness is found only at run time

    hutch = os.path.join(CHECKOUT, ".venv-e2e", "bin", "hutch")
    if not os.path.exists(hutch):
        hutch = shutil.which("hutch") or sys.exit("no hutch: run `make test`")
    work = args.work or tempfile.mkdtemp(prefix="mutated-bytes-")
    os.makedirs(work, exist_ok=True)
    built = os.path.join(work, "corpus")
    corpus.build(built, 1.0, only="big")
    before, after = os.path.join(work, "before"), os.path.join(work, "after")
    for path in (before, after):
        shutil.rmtree(path, ignore_errors=True)
        shutil.copytree(os.path.join(built, "big"), path)
    corpus.mutate(after, "big")
    env = dict(os.environ, HUTCH_PASSWORD=PASSWORD, RESTIC_PASSWORD=PASSWORD)
    env["HUTCH_CACHE_DIR"] = os.path.join(work, "cache")
    mib = 1 << 20
    ours = added([hutch], env, work, before, after)
    print(f"hutch: {ours / mib:.2f} MiB")
    if not shutil.which("restic"):
        print("restic: not installed")
        return
    theirs = []
    for _ in range(args.restic_repos):
        theirs.append(added(["restic", "-q"], env, work, before, after))
        print(f"restic: {theirs[-1] / mib:.2f} MiB", flush=True)
    below = sum(1 for n in theirs if n < ours)
    print(
        f"restic over {len(theirs)} repositories: {min(theirs) / mib:.2f}-"
        f"{max(theirs) / mib:.2f} MiB, median {statistics.median(theirs) / mib:.2f}; "
        f"hutch {ours / mib:.2f} MiB, more than restic in {below} of them"
    )


if __name__ == "__main__":
    main()
