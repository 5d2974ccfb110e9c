"""The hutch command: global options, command registration, and the one error boundary."""

from __future__ import annotations

import importlib
import signal
import sys
from types import FrameType
from typing import Any, cast

import click

from cli.context import Globals, parse_duration
from cli.errors import EXIT_INTERRUPTED, EXIT_USAGE, exit_code_for
from cli.options import group_options

VERSION = "0.1.0"

# Each command's module is imported only when that command runs (or help lists it):
# start-up time and memory count in every backup, and Argon2id's 64 MiB comes on top.
_COMMANDS = {
    "init": "cli.cmd_init:init",
    "backup": "cli.cmd_backup:backup",
    "snapshots": "cli.cmd_snapshots:snapshots",
    "ls": "cli.cmd_ls:ls",
    "restore": "cli.cmd_restore:restore",
    "dump": "cli.cmd_dump:dump",
    "check": "cli.cmd_check:check",
    "forget": "cli.cmd_forget:forget",
    "prune": "cli.cmd_prune:prune",
    "unlock": "cli.cmd_unlock:unlock",
    "key": "cli.cmd_key:key",
    "repair": "cli.cmd_repair:repair",
    "diff": "cli.cmd_diff:diff",
    "find": "cli.cmd_find:find",
    "stats": "cli.cmd_stats:stats",
    "cat": "cli.cmd_cat:cat",
    "tag": "cli.cmd_tag:tag",
    "rewrite": "cli.cmd_rewrite:rewrite",
    "completion": "cli.cmd_completion:completion",
}


class LazyGroup(click.Group):
    """A group whose subcommands are loaded by name, on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        return cast(click.Command, getattr(importlib.import_module(module), attr))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
            import traceback  # noqa: PLC0415 - only for --debug: 6 ms of every start-up

            traceback.print_exc()
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(exit_code_for(exc))


if __name__ == "__main__":
    main()
