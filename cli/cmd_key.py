"""hutch key: list, add and remove key files, and change the password of the one in use."""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

import click

from cli.context import Globals, key_info, prompt_password, read_password_file
from cli.errors import CliError
from cli.options import global_options
from cli.output import emit_json, say
from repo.keys import KeyFileInfo, add_key, change_password, list_keys, remove_key
from repo.repository import Repository, closing


def run_key_list(g: Globals) -> None:
    # Read once: list_keys needs it again, and a prompt or command must not repeat.
    password = g.password()
    with closing(Repository.open(g.backend(), password)) as repo:
        keys = list_keys(repo, password)
    if g.is_json:
        emit_json([_key_json(k) for k in keys])
        return
    _print_table(keys)


def run_key_add(g: Globals, new_password_file: str | None) -> None:
    with closing(g.open()) as repo:
        password = _new_password(new_password_file)
        with g.lock(repo, is_exclusive=False):
            name = add_key(repo, password, key_info())
    if g.is_json:
        emit_json({"message_type": "key_added", "id": name})
        return
    say(f"saved new key as {name[:8]}", is_quiet=g.is_quiet)


def run_key_remove(g: Globals, key_id: str) -> None:
    with closing(g.open()) as repo, g.lock(repo, is_exclusive=True):
        name = remove_key(repo, key_id)
    if g.is_json:
        emit_json({"message_type": "key_removed", "id": name})
        return
    say(f"removed key {name[:8]}", is_quiet=g.is_quiet)


def run_key_passwd(g: Globals, new_password_file: str | None) -> None:
    with closing(g.open()) as repo:
        password = _new_password(new_password_file)
        with g.lock(repo, is_exclusive=True):
            new, old = change_password(repo, password, key_info())
    if g.is_json:
        emit_json({"message_type": "password_changed", "id": new, "removed": old})
        return
    say(f"saved new key as {new[:8]}, removed old key {old[:8]}", is_quiet=g.is_quiet)


def _new_password(path: str | None) -> bytes:
    """The new password from --new-password-file, else asked twice on a terminal."""
    if path:
        password = read_password_file(path)
    elif sys.stdin.isatty():
        password = prompt_password("new password", is_twice=True)
    else:
        raise CliError("no new password given: use --new-password-file")
    if not password:
        raise CliError("an empty password is not allowed")
    return password


def _key_json(key: KeyFileInfo) -> dict[str, Any]:
    info = key.info
    return {
        "id": key.id,
        "current": key.is_current,
        "username": info.username if info else None,
        "hostname": info.hostname if info else None,
        "created": info.created if info else None,
    }


def _show_time(created: str) -> str:
    try:
        return dt.datetime.fromisoformat(created).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return created


def _print_table(keys: list[KeyFileInfo]) -> None:
    rows = [
        (
            ("*" if k.is_current else " ") + k.id[:8],
            k.info.username if k.info else "",
            k.info.hostname if k.info else "",
            _show_time(k.info.created) if k.info else "",
        )
        for k in keys
    ]
    header = (" ID", "User", "Host", "Created")
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths)
    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    say(fmt.format(*header).rstrip())
    say(rule)
    for row in rows:
        say(fmt.format(*row).rstrip())
    say(rule)
    sealed = sum(1 for k in keys if k.info is None)
    if sealed:
        say(f"other password: {sealed} of {len(keys)} key files (user, host and time sealed)")


@click.group("key")
@global_options
def key() -> None:
    """Manage key files: the passwords that open the repository."""


@key.command("list")
@global_options
@click.pass_obj
def key_list(g: Globals) -> None:
    """List key files; * marks the one the password opened."""
    run_key_list(g)


@key.command("add")
@global_options
@click.option("--new-password-file", type=click.Path(), help="read the new password from a file")
@click.pass_obj
def key_add(g: Globals, new_password_file: str | None) -> None:
    """Add a key file for this repository with a new password."""
    run_key_add(g, new_password_file)


@key.command("remove")
@global_options
@click.argument("key_id", metavar="ID")
@click.pass_obj
def key_remove(g: Globals, key_id: str) -> None:
    """Remove a key file by ID prefix (not the one in use, nor the last)."""
    run_key_remove(g, key_id)


@key.command("passwd")
@global_options
@click.option("--new-password-file", type=click.Path(), help="read the new password from a file")
@click.pass_obj
def key_passwd(g: Globals, new_password_file: str | None) -> None:
    """Change the password of the key file in use (no data is rewritten)."""
    run_key_passwd(g, new_password_file)
