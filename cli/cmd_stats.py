"""hutch stats: sizes of snapshots, of their unique files, or of the data they keep."""

from __future__ import annotations

from typing import Any

import click

from cli.context import Globals
from cli.options import filter_options, global_options
from cli.output import emit_json, format_bytes, say
from repo.snapshot import SnapshotFilter, select_snapshots
from repo.stats import Stats, StatsMode, compute_stats


def stats_json(stats: Stats) -> dict[str, Any]:
    """restic's fields; like restic, the raw-data fields appear only in that mode."""
    doc: dict[str, Any] = {"total_size": stats.total_size}
    if stats.mode is StatsMode.RAW_DATA:
        doc.update(
            total_uncompressed_size=stats.total_uncompressed_size,
            compression_ratio=stats.compression_ratio,
            compression_progress=stats.compression_progress,
            compression_space_saving=stats.compression_space_saving,
            total_blob_count=stats.total_blob_count,
            deduplication_ratio=stats.deduplication_ratio,
        )
    else:
        doc["total_file_count"] = stats.total_file_count
    doc["snapshots_count"] = stats.snapshots_count
    return doc


def _lines(stats: Stats) -> list[str]:
    lines = [
        f"Stats in {stats.mode.value} mode:",
        f"     Snapshots processed:  {stats.snapshots_count}",
    ]
    if stats.mode is StatsMode.RAW_DATA:
        lines += [
            f"        Total Blob Count:  {stats.total_blob_count}",
            f" Total Uncompressed Size:  {format_bytes(stats.total_uncompressed_size)}",
            f"              Total Size:  {format_bytes(stats.total_size)}",
            f"    Compression Progress:  {stats.compression_progress:.2f}%",
            f"       Compression Ratio:  {stats.compression_ratio:.2f}x",
            f"Compression Space Saving:  {stats.compression_space_saving:.2f}%",
            f"     Deduplication Ratio:  {stats.deduplication_ratio:.2f}x",
        ]
        return lines
    return [
        *lines,
        f"        Total File Count:  {stats.total_file_count}",
        f"              Total Size:  {format_bytes(stats.total_size)}",
    ]


def run_stats(g: Globals, refs: tuple[str, ...], flt: SnapshotFilter, mode: StatsMode) -> None:
    repo = g.open()
    try:
        with g.lock(repo, is_exclusive=False):
            snaps = select_snapshots(repo.list_snapshots(), refs, flt)
            stats = compute_stats(repo, snaps, mode)
    finally:
        repo.close()
    if g.is_json:
        emit_json(stats_json(stats))
        return
    for line in _lines(stats):
        say(line)


@click.command("stats")
@global_options
@click.argument("snapshots", nargs=-1, metavar="[SNAPSHOT]...")
@click.option(
    "--mode",
    type=click.Choice([m.value for m in StatsMode]),
    default=StatsMode.RESTORE_SIZE.value,
    show_default=True,
    help="restore-size: what a restore writes; files-by-contents: files with unique "
    "contents; raw-data: the unique blobs the snapshots keep, as stored",
)
@filter_options
@click.pass_obj
def stats(
    g: Globals,
    snapshots: tuple[str, ...],
    mode: str,
    hosts: tuple[str, ...],
    paths: tuple[str, ...],
    tags: tuple[str, ...],
) -> None:
    """Count sizes over the given snapshots (default: all that the filters keep)."""
    run_stats(g, snapshots, SnapshotFilter(hosts, tags, paths), StatsMode(mode))
