"""hutch completion SHELL: print the tab-completion script for bash, zsh or fish."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

from cli.output import say

SHELLS = ("bash", "zsh", "fish")


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL, e.g.
    `hutch completion bash > /etc/bash_completion.d/hutch` or, in ~/.bashrc,
    `eval "$(hutch completion bash)"`."""
    root = ctx.find_root().command
    complete = get_completion_class(shell)
    if complete is None:  # pragma: no cover - every choice has a class
        raise click.UsageError(f"no completion for {shell}")
    say(complete(root, {}, "hutch", "_HUTCH_COMPLETE").source())
