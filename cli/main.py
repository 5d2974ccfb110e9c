"""The hutch command: global options, command registration, and the one error boundary."""

from __future__ import annotations

import signal
import sys
import traceback
from types import FrameType

import click

from cli import (
    cmd_backup,
    cmd_check,
    cmd_dump,
    cmd_forget,
    cmd_init,
    cmd_key,
    cmd_ls,
    cmd_prune,
    cmd_repair,
    cmd_restore,
    cmd_snapshots,
    cmd_unlock,
)
from cli.context import Globals
from cli.errors import EXIT_INTERRUPTED, EXIT_USAGE, exit_code_for

VERSION = "0.1.0"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, "--version", prog_name="hutch", message="%(prog)s %(version)s")
@click.option(
    "-r", "--repo", envvar="HUTCH_REPOSITORY", help="repository location [env: HUTCH_REPOSITORY]"
)
@click.option(
    "--password-file",
    envvar="HUTCH_PASSWORD_FILE",
    type=click.Path(),
    help="read the password from a file [env: HUTCH_PASSWORD_FILE]",
)
@click.option(
    "--password-command",
    envvar="HUTCH_PASSWORD_COMMAND",
    help="run a shell command and use its output as the password [env: HUTCH_PASSWORD_COMMAND]",
)
@click.option("--json", "is_json", is_flag=True, help="print machine-readable JSON")
@click.option("-q", "--quiet", "is_quiet", is_flag=True, help="print only errors and results")
@click.option(
    "--cache-dir",
    envvar="HUTCH_CACHE_DIR",
    type=click.Path(),
    help="local cache folder [env: HUTCH_CACHE_DIR]",
)
@click.option(
    "--retry-lock",
    metavar="DURATION",
    envvar="HUTCH_RETRY_LOCK",
    help="wait up to DURATION (30s, 5m, 1h) for a locked repository [env: HUTCH_RETRY_LOCK]",
)
@click.option("--debug", "is_debug", is_flag=True, hidden=True, help="show tracebacks")
@click.pass_context
def hutch(
    ctx: click.Context,
    repo: str | None,
    password_file: str | None,
    password_command: str | None,
    is_json: bool,
    is_quiet: bool,
    cache_dir: str | None,
    retry_lock: str | None,
    is_debug: bool,
) -> None:
    """Deduplicating, encrypted backups."""
    ctx.obj = Globals(
        repo, password_file, password_command, is_json, is_quiet, cache_dir, is_debug, retry_lock
    )


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
