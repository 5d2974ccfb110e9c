#!/usr/bin/env python3
"""The memory of a first backup with its small-file worker, counted together.

GNU time, and so the peer harness, reports the largest single process's peak RSS. A
backup of many small files runs a second process (repo/smallfiles.py), so this samples
both every few milliseconds through /proc and prints the peaks of:

- the archiver's RSS;
- the worker's anonymous RSS, and its file-backed RSS (the interpreter and libraries,
  the same pages of the same files the archiver maps);
- their footprint: the archiver's RSS plus the worker's anonymous RSS, each physical
  page counted once;
- the plain sum of both RSS, which counts the shared library pages twice.

    python3 benchmarks/footprint.py TREE [--work DIR]

hutch is taken from this checkout's `.venv-e2e` (made by `make test`), else from PATH.
Linux only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from prune_bench import PASSWORD

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(HERE)


def _hutch() -> str:
    built = os.path.join(CHECKOUT, ".venv-e2e", "bin", "hutch")
    found = built if os.path.exists(built) else shutil.which("hutch")
    if found is None:
        sys.exit("no hutch: run `make test` or put hutch on PATH")
    return found


def _status(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon and RssFile of a process, in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(line.split()[1])
    return out


def _workers(pid: int) -> list[int]:
    """The process's children running the worker: a child not yet past its exec is a
    copy of the archiver sharing its pages, and counting them twice would mislead."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(x) for x in f.read().split()]
    except OSError:
        return []
    workers = []
    for child in children:
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if b"repo.smallfiles" in f.read():
                    workers.append(child)
        except OSError:
            continue
    return workers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tree")
    parser.add_argument("--work", help="folder for the repository (default: a temporary one)")
    args = parser.parse_args()
    hutch = _hutch()
    work = args.work or tempfile.mkdtemp(prefix="hutch-footprint-")
    repo = os.path.join(work, "repo")
    shutil.rmtree(repo, ignore_errors=True)
    env = dict(os.environ, HUTCH_PASSWORD=PASSWORD)
    subprocess.run([hutch, "-r", repo, "init", "-q"], env=env, check=True)
    peaks = dict.fromkeys(("archiver", "worker_anon", "worker_file", "footprint", "sum"), 0)
    started = time.monotonic()
    proc = subprocess.Popen([hutch, "-r", repo, "-q", "backup", args.tree], env=env)
    while proc.poll() is None:
        try:
            main_rss = _status(proc.pid)["VmRSS"]
            workers = [_status(pid) for pid in _workers(proc.pid)]
        except (OSError, KeyError):  # a process ended between two reads
            continue
        anon = sum(w.get("RssAnon", 0) for w in workers)
        files = sum(w.get("RssFile", 0) for w in workers)
        sample = {
            "archiver": main_rss,
            "worker_anon": anon,
            "worker_file": files,
            "footprint": main_rss + anon,
            "sum": main_rss + anon + files,
        }
        for key, value in sample.items():
            peaks[key] = max(peaks[key], value)
        time.sleep(0.005)
    elapsed = time.monotonic() - started
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    print(f"backup of {args.tree}: {elapsed:.2f} s, exit {proc.returncode}")
    print("| peak | MiB |")
    print("|---|--:|")
    for key, value in peaks.items():
        print(f"| {key} | {value / 1024:.1f} |")


if __name__ == "__main__":
    main()
