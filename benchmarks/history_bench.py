#!/usr/bin/env python3
"""History benchmark: does restoring the end of a long chain of backups cost more than
restoring one fresh backup of the same data?

Target: restoring the 50th snapshot of a chain of 50 incremental backups reads the same
number of bytes as restoring a fresh single backup of the same data, plus at most the
headers of the extra packs it touches, and its median time is at most 1.2 x.

    python3 benchmarks/history_bench.py [--reps 5] [--scale 1.0] [--work DIR] [--hutch PATH]

Steps:

1. A deterministic corpus (seeded; by default 300 files, 160 MiB, half of them
   text-like, half random, in nested folders; `--scale` multiplies both).
2. Repository A: `--snapshots` (50) backups of the corpus, which is changed between
   two backups in a fixed way: one file gets a few KiB inserted in the middle, one has
   a few KiB overwritten in place, one grows at its end, one new file appears and one
   file is deleted. The final state is recorded (`final-manifest.json`, SHA-256 per
   file, in the work folder).
3. Repository B: a new repository, one backup of that final state (same paths).
4. Bytes read from the repository: one restore of each, not timed, under
   `strace -f -y -e trace=read,pread64,readv,preadv,preadv2`. strace prints the path
   behind every descriptor (`-y`), so the script sums the byte counts the calls
   returned on files below the repository folder (keys, config, locks, snapshots,
   index and packs under `data/`), whatever thread made them. This is what the
   installed `hutch restore` read from the file system, not a model of it (an
   in-process count through the library would measure the library, not the command;
   `/proc/PID/io` is gone when the process ends, and counts the interpreter's own
   reads in `rchar` and only cache misses in `read_bytes`). Packs read are the
   distinct files under `data/` that saw a read. Without a working strace these
   columns say `n/a` and the byte check is skipped (the time check still runs).
5. `--reps` timed restores of A's last snapshot and of B's snapshot, interleaved (the
   order alternates each round), each into a fresh target after `sync`; every restored
   tree is compared with the manifest by SHA-256. Medians and the ratio A / B. Both
   repositories were just written, so their files are in the page cache: the times
   compare restores from memory, not from a cold disk.

The allowance of "extra pack headers": a pack's header is its last `hlen + 4` bytes
(sealed header and the u32 trailer, docs/design.md, packs), read here from each pack's
trailer without the key. If A's restore reads `n_A` packs and B's `n_B`, the allowance
is the sum of the `n_A - n_B` largest headers among the packs A read (the most generous
reading of "the headers of the extra packs"). The byte check passes when
`bytes(A) - bytes(B) <= allowance`, on the total of every object the restore reads.
The bytes are also broken down by object kind so a difference can be traced to its
source.

Standard library only; needs the hutch command (`--hutch`, else `hutch` on PATH, else
`../.venv-e2e/bin/hutch` next to this script) and, for the byte columns, strace.
Takes one to a few minutes on 2 cores at the default size (work folder: about 0.5 GiB).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

PASSWORD = "bench-password"  # noqa: S105 - a throwaway repository
HERE = os.path.dirname(os.path.abspath(__file__))
BASE_FILES = 300
BASE_MIB = 160
FOLDERS = 12
TIME_TARGET = 1.2
READ_CALLS = "read,pread64,readv,preadv,preadv2"
KINDS = ("packs", "index", "snapshots", "other")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- corpus ------------------------------------------------------------------------------


def vocabulary(seed: int) -> list[str]:
    rng = random.Random(f"{seed}:vocabulary")  # noqa: S311 - seeded, reproducible data
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choices(letters, k=rng.randint(2, 10))) for _ in range(4096)]


def text_bytes(rng: random.Random, words: list[str], size: int) -> bytes:
    """Word salad in lines of 12 words with a number: compresses about 3:1 with zstd."""
    out: list[bytes] = []
    got = 0
    while got < size:
        line = f"{rng.randrange(1_000_000)} {' '.join(rng.choices(words, k=12))}\n".encode()
        out.append(line)
        got += len(line)
    return b"".join(out)[:size]


def content(rng: random.Random, words: list[str], is_text: bool, size: int) -> bytes:
    return text_bytes(rng, words, size) if is_text else rng.randbytes(size)


def is_text_name(rel: str) -> bool:
    return rel.endswith(".txt")


def build_corpus(src: str, seed: int, scale: float) -> None:
    """BASE_FILES * scale files of log-uniform sizes (2 KiB to 6 MiB), scaled so that
    they total BASE_MIB * scale MiB."""
    rng = random.Random(f"{seed}:corpus")  # noqa: S311 - seeded, reproducible data
    words = vocabulary(seed)
    count = max(8, round(BASE_FILES * scale))
    sizes = [math.exp(rng.uniform(math.log(2 << 10), math.log(6 << 20))) for _ in range(count)]
    factor = BASE_MIB * scale * 2**20 / sum(sizes)
    for i, raw in enumerate(sizes):
        size = max(1, int(raw * factor))
        is_text = rng.random() < 0.5
        name = f"f{i:04d}.{'txt' if is_text else 'bin'}"
        rel = os.path.join(f"d{i % FOLDERS:02d}", f"s{(i // FOLDERS) % 3}", name)
        write_file(os.path.join(src, rel), content(rng, words, is_text, size))


def write_file(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def corpus_files(src: str) -> list[str]:
    found = []
    for dirpath, _dirs, names in os.walk(src):
        found.extend(os.path.relpath(os.path.join(dirpath, n), src) for n in names)
    return sorted(found)


def mutate(src: str, seed: int, step: int) -> str:
    """One deterministic round of changes; returns a description for the log."""
    rng = random.Random(f"{seed}:mutate:{step}")  # noqa: S311 - seeded, reproducible data
    words = vocabulary(seed)
    files = corpus_files(src)
    inserted, overwritten, appended, deleted = rng.sample(files, 4)
    done = []

    path = os.path.join(src, inserted)  # a few KiB inserted: shifts the rest of the file
    with open(path, "rb") as f:
        data = f.read()
    at = rng.randrange(len(data) + 1)
    extra = content(rng, words, is_text_name(inserted), rng.randint(1 << 10, 8 << 10))
    write_file(path, data[:at] + extra + data[at:])
    done.append(f"insert {len(extra)} B into {inserted}")

    path = os.path.join(src, overwritten)  # overwritten in place: same size
    size = os.path.getsize(path)
    length = min(size, rng.randint(512, 16 << 10))
    at = rng.randrange(size - length + 1)
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(content(rng, words, is_text_name(overwritten), length))
    done.append(f"overwrite {length} B of {overwritten}")

    path = os.path.join(src, appended)
    extra = content(rng, words, is_text_name(appended), rng.randint(1 << 10, 32 << 10))
    with open(path, "ab") as f:
        f.write(extra)
    done.append(f"append {len(extra)} B to {appended}")

    is_text = rng.random() < 0.5
    size = int(math.exp(rng.uniform(math.log(16 << 10), math.log(2 << 20))))
    rel = os.path.join(
        f"d{rng.randrange(FOLDERS):02d}", "new", f"n{step:03d}.{'txt' if is_text else 'bin'}"
    )
    write_file(os.path.join(src, rel), content(rng, words, is_text, size))
    done.append(f"add {rel} ({size} B)")

    os.unlink(os.path.join(src, deleted))
    done.append(f"delete {deleted}")
    return "; ".join(done)


def manifest(root: str) -> dict[str, str]:
    """SHA-256 of every regular file below root, by relative path."""
    out = {}
    for rel in corpus_files(root):
        digest = hashlib.sha256()
        with open(os.path.join(root, rel), "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        out[rel] = digest.hexdigest()
    return out


# -- hutch -------------------------------------------------------------------------------


def usable_strace() -> str | None:
    """strace, if it is installed and may trace (ptrace can be forbidden in containers)."""
    strace = shutil.which("strace")
    if strace is None:
        return None
    probe = [strace, "-f", "-qq", "-e", "trace=none", "-o", os.devnull, "true"]
    done = subprocess.run(probe, capture_output=True, check=False)
    return strace if done.returncode == 0 else None


def find_hutch(given: str | None) -> str:
    if given:
        return given
    on_path = shutil.which("hutch")
    if on_path:
        return on_path
    local = os.path.join(HERE, "..", ".venv-e2e", "bin", "hutch")
    if os.path.exists(local):
        return os.path.abspath(local)
    sys.exit("no hutch: put it on PATH or pass --hutch PATH")


class Hutch:
    def __init__(self, binary: str, cache: str) -> None:
        self.binary = binary
        self.env = {**os.environ, "HUTCH_PASSWORD": PASSWORD, "HUTCH_CACHE_DIR": cache}
        for name in ("HUTCH_REPOSITORY", "HUTCH_PASSWORD_FILE", "HUTCH_PASSWORD_COMMAND"):
            self.env.pop(name, None)

    def argv(self, repo: str, *args: str) -> list[str]:
        return [self.binary, "-r", repo, *args]

    def run(self, repo: str, *args: str, prefix: tuple[str, ...] = ()) -> str:
        done = subprocess.run(
            [*prefix, *self.argv(repo, *args)],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            sys.exit(f"hutch {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
        return done.stdout

    def backup(self, repo: str, src: str) -> str:
        summary = json.loads(self.run(repo, "--json", "backup", src).splitlines()[-1])
        return str(summary["snapshot_id"])

    def snapshot_count(self, repo: str) -> int:
        return len(json.loads(self.run(repo, "--json", "snapshots")))


# -- repository facts --------------------------------------------------------------------


def pack_headers(repo: str) -> dict[str, int]:
    """Pack name -> bytes of its header and trailer (hlen + 4), from the u32 trailer."""
    out = {}
    data = os.path.join(repo, "data")
    for dirpath, _dirs, names in os.walk(data):
        for name in names:
            if ".tmp-" in name:
                continue
            with open(os.path.join(dirpath, name), "rb") as f:
                f.seek(-4, os.SEEK_END)
                (hlen,) = struct.unpack("<I", f.read(4))
            out[name] = hlen + 4
    return out


def dir_size(path: str) -> int:
    return sum(
        os.lstat(os.path.join(d, n)).st_size for d, _dirs, names in os.walk(path) for n in names
    )


# -- measuring a restore -----------------------------------------------------------------

_CALL = re.compile(r"^(\d+)\s+(?:(\w+)\(\d+<([^>]*)>|<\.\.\. (\w+) resumed>)")
_RESULT = re.compile(r"=\s+(-?\d+)(?:\s+\w+.*)?$")


def parse_strace(path: str, repo: str) -> dict[str, int]:
    """Bytes returned by read calls on files below `repo`, by file (relative path)."""
    prefix = repo.rstrip("/") + "/"
    pending: dict[str, str] = {}  # thread id -> file of its unfinished call
    per_file: dict[str, int] = {}
    with open(path, errors="replace") as f:
        for line in f:
            m = _CALL.match(line)
            if not m:
                continue
            tid, call, target, resumed = m.groups()
            if call is not None:
                if "<unfinished ...>" in line:
                    pending[tid] = target
                    continue
            elif resumed is not None:
                target = pending.pop(tid, "")
            r = _RESULT.search(line.rstrip())
            if not target.startswith(prefix) or not r or int(r.group(1)) <= 0:
                continue
            rel = target[len(prefix) :]
            per_file[rel] = per_file.get(rel, 0) + int(r.group(1))
    return per_file


def kind_of(rel: str) -> str:
    top = rel.split("/", 1)[0]
    return {"data": "packs", "index": "index", "snapshots": "snapshots"}.get(top, "other")


def restore(hutch: Hutch, repo: str, snap: str, target: str, prefix: tuple[str, ...] = ()) -> float:
    """One restore into a fresh target; wall seconds of the hutch process."""
    shutil.rmtree(target, ignore_errors=True)
    os.sync()  # the deleted tree's writeback should not land in the timed run
    start = time.perf_counter()
    hutch.run(repo, "-q", "restore", snap, "--target", target, prefix=prefix)
    return time.perf_counter() - start


def verify(target: str, src: str, expected: dict[str, str]) -> None:
    restored = os.path.join(target, os.path.abspath(src).lstrip("/"))
    got = manifest(restored)
    if got != expected:
        missing = sorted(expected.keys() - got.keys())[:3]
        extra = sorted(got.keys() - expected.keys())[:3]
        differ = sorted(k for k in expected.keys() & got.keys() if expected[k] != got[k])[:3]
        sys.exit(f"restore into {target} differs: missing {missing} extra {extra} differ {differ}")


# -- main --------------------------------------------------------------------------------


@dataclass
class Outcome:
    files: int = 0
    size: int = 0
    snapshots: dict[str, int] = field(default_factory=dict)
    headers: dict[str, dict[str, int]] = field(default_factory=dict)  # repo -> pack -> bytes
    read: dict[str, dict[str, int]] = field(default_factory=dict)  # repo -> file -> bytes
    times: dict[str, list[float]] = field(default_factory=lambda: {"A": [], "B": []})


def run(args: argparse.Namespace, hutch: Hutch, work: str, strace: str | None) -> Outcome:
    out = Outcome()
    src, repo_a, repo_b = (os.path.join(work, n) for n in ("src", "repo-a", "repo-b"))
    target = os.path.join(work, "target")
    for path in (src, repo_a, repo_b, target, os.path.join(work, "cache")):
        shutil.rmtree(path, ignore_errors=True)
    build_corpus(src, args.seed, args.scale)
    log(f"corpus: {len(corpus_files(src))} files, {dir_size(src) / 2**20:.1f} MiB")

    hutch.run(repo_a, "init")
    snap_a = ""
    for step in range(1, args.snapshots + 1):
        if step > 1:
            log(f"  change {step - 1}: {mutate(src, args.seed, step - 1)}")
        t0 = time.perf_counter()
        snap_a = hutch.backup(repo_a, src)
        log(f"A backup {step}/{args.snapshots}: {time.perf_counter() - t0:.2f} s")
    final = manifest(src)
    out.files, out.size = len(final), dir_size(src)
    with open(os.path.join(work, "final-manifest.json"), "w") as f:
        json.dump(final, f, indent=0, sort_keys=True)
    log(f"final corpus: {out.files} files, {out.size / 2**20:.1f} MiB")

    hutch.run(repo_b, "init")
    snap_b = hutch.backup(repo_b, src)
    log("B: one backup of the final state")

    repos = {"A": (repo_a, snap_a), "B": (repo_b, snap_b)}
    for key, (repo, _snap) in repos.items():
        out.snapshots[key] = hutch.snapshot_count(repo)
        out.headers[key] = pack_headers(repo)

    if strace:
        for key, (repo, snap) in repos.items():
            trace = os.path.join(work, f"strace-{key}.txt")
            prefix = (strace, "-f", "-y", "-qq", "-s", "0", "-e", "signal=none")
            prefix += ("-e", f"trace={READ_CALLS}", "-o", trace)
            restore(hutch, repo, snap, target, prefix)
            verify(target, src, final)
            out.read[key] = parse_strace(trace, repo)
            log(f"{key}: restore under strace read {sum(out.read[key].values()):,} bytes")

    for rep in range(args.reps):
        for key in ("A", "B") if rep % 2 == 0 else ("B", "A"):
            repo, snap = repos[key]
            out.times[key].append(restore(hutch, repo, snap, target))
            verify(target, src, final)
            log(f"rep {rep + 1} {key}: {out.times[key][-1]:.2f} s, verified")
    shutil.rmtree(target, ignore_errors=True)
    return out


def fmt_bytes(n: int | None) -> str:
    return "n/a" if n is None else f"{n:,} ({n / 2**20:.1f} MiB)"


def report(args: argparse.Namespace, out: Outcome) -> None:
    median = {k: statistics.median(v) for k, v in out.times.items()}
    ratio = median["A"] / median["B"]
    total = {k: sum(v.values()) for k, v in out.read.items()}
    packs_read = {
        k: [n.rsplit("/", 1)[-1] for n in v if kind_of(n) == "packs"] for k, v in out.read.items()
    }
    print(
        f"restore of the last snapshot: {args.snapshots} incremental backups (A) against one "
        f"fresh backup (B) of the same {out.files} files, {out.size / 2**20:.1f} MiB; "
        f"medians of {args.reps}\n"
    )
    print(
        "| repository | snapshots | packs | restore bytes read | packs read | median restore s "
        "| ratio to fresh |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|")
    names = {"A": f"A: {args.snapshots} incremental backups", "B": "B: one fresh backup"}
    for key in ("A", "B"):
        print(
            f"| {names[key]} | {out.snapshots[key]} | {len(out.headers[key])} "
            f"| {fmt_bytes(total.get(key))} "
            f"| {len(packs_read[key]) if key in packs_read else 'n/a'} "
            f"| {median[key]:.2f} | {median[key] / median['B']:.2f} |"
        )
    print()
    for key in ("A", "B"):
        print(f"restore s, {key}: {' '.join(f'{v:.2f}' for v in out.times[key])}")
    bytes_verdict = "bytes NOT MEASURED (no strace)"
    if out.read:
        for key in ("A", "B"):
            kinds: dict[str, int] = {}
            for rel, n in out.read[key].items():
                kinds[kind_of(rel)] = kinds.get(kind_of(rel), 0) + n
            parts = ", ".join(f"{k} {kinds.get(k, 0):,}" for k in KINDS)
            hdr = sum(out.headers[key][p] for p in packs_read[key])
            print(f"bytes read by {key}: {parts}; header bytes of the packs read: {hdr:,}")
        extra = max(0, len(packs_read["A"]) - len(packs_read["B"]))
        hdrs = sorted((out.headers["A"][p] for p in packs_read["A"]), reverse=True)
        allowance = sum(hdrs[:extra])
        diff = total["A"] - total["B"]
        bytes_verdict = (
            f"bytes {'PASS' if diff <= allowance else 'FAIL'}: A - B = {diff:,} bytes, "
            f"allowance {allowance:,} (the largest headers of {extra} extra packs)"
        )
    time_verdict = (
        f"time {'PASS' if ratio <= TIME_TARGET else 'FAIL'}: median A / B = {ratio:.2f} "
        f"(target <= {TIME_TARGET})"
    )
    print(f"\nverdict: {bytes_verdict}; {time_verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--reps", type=int, default=5, help="timed restores of each repository")
    parser.add_argument("--scale", type=float, default=1.0, help="corpus size factor (1 = 160 MiB)")
    parser.add_argument("--snapshots", type=int, default=50, help="backups in repository A")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hutch", default=None, help="hutch command (default: PATH, ../.venv-e2e)")
    args = parser.parse_args()
    if args.reps < 1 or args.snapshots < 1:
        sys.exit("--reps and --snapshots must be at least 1")
    hutch_bin = find_hutch(args.hutch)
    strace = usable_strace()
    work = os.path.abspath(args.work or tempfile.mkdtemp(prefix="hutch-history-bench-"))
    os.makedirs(work, exist_ok=True)
    log(f"hutch: {hutch_bin}; work: {work}")
    if not strace:
        log(
            "strace is missing or cannot trace here: restore bytes and packs read are not "
            "measured (apt-get install strace); the time check still runs"
        )
    started = time.perf_counter()
    try:
        out = run(args, Hutch(hutch_bin, os.path.join(work, "cache")), work, strace)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    report(args, out)
    log(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
