#!/usr/bin/env python3
"""The peer harness's scenario on a tree of your choosing: hutch, restic and borg.

peers.py measures the two corpora the harness builds; a real tree (a home folder, a
source checkout, /usr/share) has other proportions: folders of thousands of entries,
symlinks, many small compressed files beside a few large ones. This runs the harness's
own steps (`bench_one`: copy, init, three backups with the `src` mutation before the
third, full restore verified against the source, one-file dump, forget and prune) on a
copy of TREE for each tool in turn, REPS times, and prints each step's median wall
seconds, hutch's ratio to the faster peer, hutch's peak RSS and the repository sizes.

    python3 benchmarks/tree_bench.py /usr/share --work /tmp/tb [--reps 1]

hutch is taken from this checkout's `.venv-e2e` (made by `make test`), else from PATH;
the harness from `../shared/bench` beside this checkout, or --harness.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(HERE)
TOOLS = ("restic", "borg", "hutch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tree")
    parser.add_argument("--work", required=True, help="copies, repositories and restores go here")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--harness", default=os.path.join(CHECKOUT, "..", "shared", "bench"))
    args = parser.parse_args()
    hutch_bin = os.path.join(CHECKOUT, ".venv-e2e", "bin")
    if os.path.exists(os.path.join(hutch_bin, "hutch")):
        os.environ["PATH"] = f"{hutch_bin}:{os.environ['PATH']}"
    sys.path.insert(0, os.path.abspath(args.harness))
    import peers  # noqa: PLC0415 - the harness is found only at run time

    tools = [t for t in TOOLS if shutil.which(t)]
    if "hutch" not in tools:
        sys.exit("no hutch: run `make test`")
    work = os.path.abspath(args.work)
    # The harness copies its pristine corpus before each tool's run; a copy of the
    # tree is that corpus, made once, so every tool reads the same bytes.
    pristine = os.path.join(work, "corpus", os.path.basename(os.path.normpath(args.tree)))
    if not os.path.isdir(pristine):
        peers.copy_tree_sorted(args.tree, pristine)
    name = os.path.basename(pristine)
    steps: dict[tuple[str, str], list[dict[str, object]]] = {}
    for _rep in range(args.reps):
        for tool in tools:
            adapter = peers.ADAPTERS[tool]()
            record = peers.bench_one(adapter, name, pristine, work, "src")
            peers.rm(os.path.join(work, "run", tool, name))
            for step in record["steps"]:
                steps.setdefault((step["step"], tool), []).append(step)
    peers_here = [t for t in tools if t != "hutch"]
    print(f"| step | {' | '.join(f'{t} s' for t in tools)} | hutch / faster peer "
          "| hutch peak RSS MiB | repo MiB (hutch / restic) | verified |")
    print("|---|" + "--:|" * len(tools) + "--:|--:|--:|---|")
    for step in peers.STEPS:
        runs = {t: steps.get((step, t), []) for t in tools}
        wall = {t: statistics.median(float(s["wall_s"]) for s in r) for t, r in runs.items() if r}
        best = min((wall[t] for t in peers_here if t in wall), default=0.0)
        ratio = f"{wall['hutch'] / best:.2f}" if best and "hutch" in wall else ""
        rss = max(int(s["maxrss_kib"] or 0) for s in runs["hutch"]) // 1024
        size = {t: float(r[-1].get("repo_bytes", 0)) / 2**20 for t, r in runs.items() if r}
        sizes = f"{size.get('hutch', 0):.1f} / {size.get('restic', 0):.1f}"
        verified = all(
            bool(s.get("verify", {"ok": True})["ok"]) for r in runs.values() for s in r  # type: ignore[index]
        )
        cells = " | ".join(f"{wall[t]:.2f}" if t in wall else "" for t in tools)
        print(f"| {step} | {cells} | {ratio} | {rss} | {sizes} | {verified} |")


if __name__ == "__main__":
    main()
