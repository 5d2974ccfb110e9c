"""hutch check: verify the repository's structure and, optionally, its data."""

from __future__ import annotations

import re
import zlib

import click

from cli.context import Globals
from cli.errors import CliError
from cli.options import global_options
from cli.output import emit_json, say, warn
from repo.check import Checker


def _subset(spec: str | None, is_all: bool) -> tuple[bool, object]:
    """Parse --read-data-subset: n/m (group n of m) or N% (a sample by name)."""
    if spec is None:
        return is_all, None
    group = re.fullmatch(r"(\d+)/(\d+)", spec)
    if group:
        n, m = int(group[1]), int(group[2])
        if not 1 <= n <= m:
            raise CliError(f"--read-data-subset {spec}: n must be between 1 and m", 2)
        return True, lambda i, name: int(name[:8], 16) % m == n - 1
    pct = re.fullmatch(r"(\d+(?:\.\d+)?)%", spec)
    if pct:
        share = float(pct[1])
        if not 0 < share <= 100:
            raise CliError(f"--read-data-subset {spec}: percentage must be in (0, 100]", 2)
        return True, lambda i, name: zlib.crc32(name.encode()) % 10000 < share * 100
    raise CliError(f"--read-data-subset {spec}: expected n/m or N%", 2)


def run_check(g: Globals, is_read_data: bool, subset: str | None) -> int:
    is_reading, select = _subset(subset, is_read_data)
    repo = g.open()
    try:
        with g.lock(repo, is_exclusive=False):
            checker = Checker(repo, warn)
            checker.check_structure()
            if is_reading:
                checker.read_packs(select if callable(select) else lambda i, name: True)
    finally:
        repo.close()
    r = checker.result
    if g.is_json:
        emit_json(
            {
                "message_type": "summary",
                "errors": r.errors,
                "infos": r.infos,
                "snapshots": r.snapshots,
                "trees": r.trees,
                "packs": r.packs,
                "packs_read": r.packs_read,
            }
        )
    else:
        for info in r.infos:
            say(info, is_quiet=g.is_quiet)
        say(
            f"checked {r.snapshots} snapshots, {r.trees} trees, {r.packs} packs"
            + (f", read {r.packs_read} packs" if is_reading else ""),
            is_quiet=g.is_quiet,
        )
        say(
            "no errors were found" if not r.errors else f"{len(r.errors)} errors found",
            is_quiet=g.is_quiet,
        )
    return 1 if r.errors else 0


@click.command("check")
@global_options
@click.option("--read-data", is_flag=True, help="download every pack and verify every blob")
@click.option("--read-data-subset", metavar="n/m|N%", help="read only a subset of the packs")
@click.pass_obj
def check(g: Globals, read_data: bool, read_data_subset: str | None) -> None:
    """Check the repository for damage (exit 1 when anything is wrong)."""
    code = run_check(g, read_data, read_data_subset)
    if code:
        raise SystemExit(code)
