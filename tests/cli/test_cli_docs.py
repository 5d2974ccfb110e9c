"""docs/usage.md against the command line itself, so the two cannot drift apart."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from cli.main import hutch

USAGE = (Path(__file__).parents[2] / "docs" / "usage.md").read_text(encoding="utf-8")


def _commands(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    for name in group.list_commands(click.Context(group)):
        command = group.get_command(click.Context(group), name)
        assert command is not None
        full = f"{prefix}{name}"
        if isinstance(command, click.Group):
            yield from _commands(command, f"{full} ")
        else:
            yield full, command


def _section(name: str) -> str:
    """The text of the `## name` section (up to the next heading of the same level)."""
    match = re.search(rf"^## {re.escape(name)}\n(.*?)(?=^## |\Z)", USAGE, re.M | re.S)
    assert match, f"docs/usage.md has no '## {name}' section"
    return match.group(1)


COMMANDS = list(_commands(hutch))


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_every_option_is_documented(name: str, command: click.Command) -> None:
    """Each command has a section in docs/usage.md naming every option it accepts."""
    text = _section(name)
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            longest = max(param.opts, key=len)
            assert longest in text, f"'{name}' section lacks {longest}"


def test_every_global_option_is_documented() -> None:
    """The global options and their environment variables are all in the global section."""
    text = _section("Global options")
    for param in hutch.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert max(param.opts, key=len) in text
            if param.envvar:
                assert str(param.envvar) in USAGE
