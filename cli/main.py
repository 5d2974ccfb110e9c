"""The hutch command: global options, command registration, and the one error boundary."""

from __future__ import annotations

import signal
import sys
import traceback
from types import FrameType
from typing import Any

import click

from cli import (
    cmd_backup,
    cmd_cat,
    cmd_check,
    cmd_completion,
    cmd_diff,
    cmd_dump,
    cmd_find,
    cmd_forget,
    cmd_init,
    cmd_key,
    cmd_ls,
    cmd_prune,
    cmd_repair,
    cmd_restore,
    cmd_rewrite,
    cmd_snapshots,
    cmd_stats,
    cmd_tag,
    cmd_unlock,
)
from cli.context import Globals, parse_duration
from cli.errors import EXIT_INTERRUPTED, EXIT_USAGE, exit_code_for
from cli.options import group_options

VERSION = "0.1.0"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, "--version", prog_name="hutch", message="%(prog)s %(version)s")
@group_options
@click.pass_context
def hutch(ctx: click.Context, /, **options: Any) -> None:
    """Deduplicating, encrypted backups."""
    if options["retry_lock"]:
        parse_duration(options["retry_lock"])  # a bad value is a usage error for every command
    ctx.obj = Globals(**options)


@hutch.result_callback()
@click.pass_obj
def _after(g: Globals, /, *_results: object, **_options: object) -> None:
    """Damage met on the way is an error even when the command could go on."""
    if g.damaged_snapshots:
        raise SystemExit(1)


for command in (
    cmd_init.init,
    cmd_backup.backup,
    cmd_snapshots.snapshots,
    cmd_ls.ls,
    cmd_restore.restore,
    cmd_dump.dump,
    cmd_check.check,
    cmd_forget.forget,
    cmd_prune.prune,
    cmd_unlock.unlock,
    cmd_key.key,
    cmd_repair.repair,
    cmd_diff.diff,
    cmd_find.find,
    cmd_stats.stats,
    cmd_cat.cat,
    cmd_tag.tag,
    cmd_rewrite.rewrite,
    cmd_completion.completion,
):
    hutch.add_command(command)


def _on_term(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs a command and turns every error into one line and an exit code."""
    signal.signal(signal.SIGTERM, _on_term)
    is_debug = "--debug" in (argv if argv is not None else sys.argv)
    try:
        hutch.main(args=argv, prog_name="hutch", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        exc.show()
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, click.Abort):
        sys.stderr.write("interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(1)
    except Exception as exc:
        if is_debug:
            traceback.print_exc()
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(exit_code_for(exc))


if __name__ == "__main__":
    main()
