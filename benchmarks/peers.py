#!/usr/bin/env python3
"""Side by side with restic and borg: hutch through the peer harness, one table.

Runs the shared harness (`../shared/bench/peers.py` beside this checkout, or --harness)
with hutch, restic and borg, whichever are installed, on its two corpora (`src`: the
CPython standard library; `big`: 1 GiB of random, text, VM-image and duplicate data),
in interleaved repetitions, and prints wall time, CPU time, peak RSS and repository size
per step with hutch's ratio to each peer. hutch is taken from --hutch-bin, else from
this checkout's `.venv-e2e` (made by `make test`), else from PATH.

    apt-get install -y restic borgbackup time     # the peers and GNU time
    python3 benchmarks/peers.py --work /tmp/bench --reps 3 > bench.md
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(HERE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--harness", default=os.path.join(CHECKOUT, "..", "shared", "bench"))
    parser.add_argument("--hutch-bin", default=None)
    args, rest = parser.parse_known_args()
    harness = os.path.abspath(args.harness)
    if not os.path.exists(os.path.join(harness, "peers.py")):
        sys.exit(f"no peer harness at {harness}: pass --harness DIR")
    hutch = args.hutch_bin or os.path.join(CHECKOUT, ".venv-e2e", "bin", "hutch")
    if not os.path.exists(hutch):
        hutch = shutil.which("hutch") or sys.exit("no hutch: run `make test` or pass --hutch-bin")
    os.environ["PATH"] = f"{os.path.dirname(os.path.abspath(hutch))}:{os.environ['PATH']}"
    sys.path.insert(0, harness)
    import peers  # noqa: PLC0415 - the harness is found only at run time

    tools = ",".join(t for t in ("hutch", "restic", "borg") if shutil.which(t))
    baseline = ",".join(t for t in ("restic", "borg") if shutil.which(t)) or "hutch"
    given = {a.split("=")[0] for a in rest}
    extra = [] if "--tools" in given else ["--tools", tools]
    extra += [] if "--baseline" in given else ["--baseline", baseline]
    sys.exit(peers.main([*extra, *rest]))


if __name__ == "__main__":
    main()
