"""hutch dump: one file's bytes, or a folder as tar, to standard output."""

from __future__ import annotations

import os
import sys

import click

from cli.context import Globals
from cli.options import filter_options, global_options, select_snapshot
from repo.allocator import keep_freed_memory
from repo.backend.local import LocalBackend
from repo.dump import THREADS, dump_file, dump_tar
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
    keep_freed_memory()  # after the key derivation: see there
    try:
        snap = select_snapshot(repo, ref, hosts, paths, tags)
        raw = os.fsencode(path)
        node = find_node(repo, snap.tree, raw)
        out = sys.stdout.buffer
        threads = THREADS if isinstance(repo.backend, LocalBackend) else g.connections
        if node.type == "dir":
            top = b"/" + b"/".join(p for p in raw.split(b"/") if p)
            dump_tar(repo, node, top, out, threads)
        else:
            dump_file(repo, node, raw, out, threads)
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
