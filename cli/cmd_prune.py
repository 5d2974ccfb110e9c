"""hutch prune: remove data that no snapshot uses."""

from __future__ import annotations

import click

from cli.context import Globals
from cli.errors import CliError
from cli.options import global_options
from cli.output import emit_json, format_bytes, say
from repo.prune import PrunePlan, PruneResult, UnusedLimit, execute_prune, parse_size, plan_prune


def _limits(max_unused: str, max_repack_size: str | None) -> tuple[UnusedLimit, int | None]:
    try:
        limit = UnusedLimit.parse(max_unused)
        repack = parse_size(max_repack_size) if max_repack_size else None
    except ValueError as exc:
        raise CliError(str(exc), 2) from exc
    return limit, repack


def _report(g: Globals, plan: PrunePlan, result: PruneResult | None) -> None:
    repack_bytes = sum(p.pack.size for p in plan.repack)
    delete_bytes = sum(p.pack.size for p in plan.delete)
    if g.is_json:
        doc = {
            "message_type": "summary",
            "dry_run": result is None,
            "used_bytes": plan.used_bytes,
            "unused_bytes": plan.unused_bytes,
            "unused_bytes_after": plan.unused_after,
            "packs_to_delete": len(plan.delete),
            "bytes_to_delete": delete_bytes,
            "packs_to_repack": len(plan.repack),
            "bytes_to_repack": repack_bytes,
            "packs_to_keep": len(plan.keep),
            "unindexed_packs": len(plan.unindexed),
            "duplicate_blobs": plan.duplicate_blobs,
        }
        if result is not None:
            doc.update(
                packs_deleted=result.packs_deleted,
                bytes_deleted=result.bytes_deleted,
                packs_written=result.packs_written,
                bytes_written=result.bytes_written,
            )
        emit_json(doc)
        return
    q = g.is_quiet
    say(f"used:     {format_bytes(plan.used_bytes)}", is_quiet=q)
    say(f"unused:   {format_bytes(plan.unused_bytes)}", is_quiet=q)
    say(f"to delete: {len(plan.delete)} packs, {format_bytes(delete_bytes)}", is_quiet=q)
    say(f"to repack: {len(plan.repack)} packs, {format_bytes(repack_bytes)}", is_quiet=q)
    say(f"to keep:   {len(plan.keep)} packs", is_quiet=q)
    if plan.unindexed:
        say(f"unreferenced packs to remove: {len(plan.unindexed)}", is_quiet=q)
    say(f"unused space after prune: {format_bytes(plan.unused_after)}", is_quiet=q)
    if result is None:
        say("dry run: nothing was changed", is_quiet=q)
    else:
        say(
            f"deleted {result.packs_deleted} packs ({format_bytes(result.bytes_deleted)}), "
            f"wrote {result.packs_written} packs ({format_bytes(result.bytes_written)})",
            is_quiet=q,
        )


def run_prune(
    g: Globals,
    max_unused: str = "5%",
    max_repack_size: str | None = None,
    is_dry_run: bool = False,
    ignore_snapshots: frozenset[str] = frozenset(),
) -> int:
    """Prune; `ignore_snapshots` are treated as gone (forget --dry-run --prune)."""
    limit, max_repack = _limits(max_unused, max_repack_size)
    repo = g.open()
    try:
        with g.lock(repo, is_exclusive=True):
            plan = plan_prune(repo, limit, max_repack, ignore_snapshots)
            result = None
            if not is_dry_run:
                is_noop = plan.is_noop()
                result = PruneResult() if is_noop else execute_prune(repo, plan, lambda _m: None)
    finally:
        repo.close()
    _report(g, plan, result)
    return 0


@click.command("prune")
@global_options
@click.option(
    "--max-unused",
    default="5%",
    show_default=True,
    help="unused space to tolerate: a percentage, a size (100M) or 'unlimited'",
)
@click.option("--max-repack-size", metavar="SIZE", help="repack at most this much data")
@click.option("--dry-run", "-n", is_flag=True, help="only show what would be done")
@click.pass_obj
def prune(g: Globals, max_unused: str, max_repack_size: str | None, dry_run: bool) -> None:
    """Delete unused data and repack partly used packs."""
    run_prune(g, max_unused, max_repack_size, dry_run)
