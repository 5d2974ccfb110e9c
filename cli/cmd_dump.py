"""hutch dump: one file's bytes, or a folder as tar, to standard output."""

from __future__ import annotations

import os
import sys

import click

from cli.context import Globals
from cli.options import filter_options, global_options, select_snapshot
from repo.dump import dump_file, dump_tar
from repo.walk import find_node


def run_dump(
    g: Globals,
    ref: str,
    path: str,
    hosts: tuple[str, ...],
    paths: tuple[str, ...],
    tags: tuple[str, ...],
) -> None:
    repo = g.open()
    try:
        snap = select_snapshot(repo, ref, hosts, paths, tags)
        raw = os.fsencode(path)
        node = find_node(repo, snap.tree, raw)
        out = sys.stdout.buffer
        if node.type == "dir":
            dump_tar(repo, node, b"/" + b"/".join(p for p in raw.split(b"/") if p), out)
        else:
            dump_file(repo, node, raw, out)
        out.flush()
    finally:
        repo.close()


@click.command("dump")
@global_options
@click.argument("snapshot")
@click.argument("path")
@filter_options
@click.pass_obj
def dump(
    g: Globals,
    snapshot: str,
    path: str,
    hosts: tuple[str, ...],
    paths: tuple[str, ...],
    tags: tuple[str, ...],
) -> None:
    """Write the file at PATH in SNAPSHOT to stdout (a folder as a tar stream)."""
    run_dump(g, snapshot, path, hosts, paths, tags)
