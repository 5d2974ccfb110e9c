"""Options shared by several commands, and resolving a snapshot argument."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from cli.context import Globals
from repo.repository import Repository
from repo.snapshot import Snapshot, SnapshotFilter, find_snapshot

F = TypeVar("F", bound=Callable[..., Any])


def filter_options(func: F) -> F:
    """--host, --path and --tag, as restic's snapshot filters."""
    func = click.option(
        "--tag", "tags", multiple=True, help="only snapshots with this tag (a,b = both)"
    )(func)
    func = click.option(
        "--path", "paths", multiple=True, help="only snapshots that include this absolute path"
    )(func)
    return click.option("--host", "hosts", multiple=True, help="only snapshots of this host")(func)


# The options every command shares: (declarations, destination in Globals, settings).
_GLOBALS: list[tuple[tuple[str, ...], str, dict[str, Any]]] = [
    (
        ("-r", "--repo"),
        "repo",
        {"envvar": "HUTCH_REPOSITORY", "help": "repository location [env: HUTCH_REPOSITORY]"},
    ),
    (
        ("--password-file",),
        "password_file",
        {
            "envvar": "HUTCH_PASSWORD_FILE",
            "type": click.Path(),
            "help": "read the password from a file [env: HUTCH_PASSWORD_FILE]",
        },
    ),
    (
        ("--password-command",),
        "password_command",
        {
            "envvar": "HUTCH_PASSWORD_COMMAND",
            "help": "run a shell command and use its output as the password "
            "[env: HUTCH_PASSWORD_COMMAND]",
        },
    ),
    (("--json",), "is_json", {"is_flag": True, "help": "print machine-readable JSON"}),
    (("-q", "--quiet"), "is_quiet", {"is_flag": True, "help": "print only errors and results"}),
    (
        ("--cache-dir",),
        "cache_dir",
        {
            "envvar": "HUTCH_CACHE_DIR",
            "type": click.Path(),
            "help": "local cache folder [env: HUTCH_CACHE_DIR]",
        },
    ),
    (
        ("--no-cache",),
        "is_no_cache",
        {"is_flag": True, "help": "do not use the local cache of a remote repository"},
    ),
    (
        ("--retry-lock",),
        "retry_lock",
        {
            "metavar": "DURATION",
            "envvar": "HUTCH_RETRY_LOCK",
            "help": "wait up to DURATION (30s, 5m, 1h) for a locked repository "
            "[env: HUTCH_RETRY_LOCK]",
        },
    ),
    (
        ("--connections",),
        "connections",
        {
            "type": click.IntRange(1, 64),
            "default": 5,
            "envvar": "HUTCH_CONNECTIONS",
            "help": "concurrent transfers to a remote repository [env: HUTCH_CONNECTIONS]",
        },
    ),
    (
        ("--limit-upload",),
        "limit_upload",
        {
            "type": click.IntRange(0),
            "default": 0,
            "metavar": "KIB/S",
            "envvar": "HUTCH_LIMIT_UPLOAD",
            "help": "limit uploads to a remote repository [env: HUTCH_LIMIT_UPLOAD]",
        },
    ),
    (
        ("--limit-download",),
        "limit_download",
        {
            "type": click.IntRange(0),
            "default": 0,
            "metavar": "KIB/S",
            "envvar": "HUTCH_LIMIT_DOWNLOAD",
            "help": "limit downloads from a remote repository [env: HUTCH_LIMIT_DOWNLOAD]",
        },
    ),
    (
        ("--cacert",),
        "cacert",
        {
            "type": click.Path(),
            "envvar": "HUTCH_CACERT",
            "help": "trust this CA certificate for HTTPS backends [env: HUTCH_CACERT]",
        },
    ),
    (
        ("--insecure-tls",),
        "is_insecure_tls",
        {
            "is_flag": True,
            "envvar": "HUTCH_INSECURE_TLS",
            "help": "skip TLS certificate checks (testing only) [env: HUTCH_INSECURE_TLS]",
        },
    ),
    (
        ("-v", "--verbose"),
        "verbose",
        {
            "count": True,
            "help": "say more (repeatable): -v lists what restore changes, -vv every file",
        },
    ),
    (("--debug",), "is_debug", {"is_flag": True, "hidden": True, "help": "show tracebacks"}),
]


def group_options(func: F) -> F:
    """The global options as the `hutch` group declares them, before the command name."""
    for decls, dest, settings in reversed(_GLOBALS):
        func = click.option(*decls, dest, **settings)(func)
    return func


def _set_global(ctx: click.Context, param: click.Parameter, value: object) -> None:
    """Options given after the command name override those given before it."""
    if param.name is not None and ctx.get_parameter_source(param.name) in (
        click.core.ParameterSource.COMMANDLINE,
    ):
        setattr(ctx.find_object(Globals), param.name, value)


def global_options(func: F) -> F:
    """The global options, accepted after the command name too (as restic accepts them)."""
    for decls, dest, settings in _GLOBALS:
        extra = {k: v for k, v in settings.items() if k not in ("envvar", "help", "hidden")}
        func = click.option(
            *decls, dest, expose_value=False, callback=_set_global, hidden=True, **extra
        )(func)
    return func


def select_snapshot(
    repo: Repository,
    ref: str,
    hosts: tuple[str, ...],
    paths: tuple[str, ...],
    tags: tuple[str, ...],
) -> Snapshot:
    """A snapshot by unique id prefix, or `latest` among those the filters keep."""
    prefix = "" if ref == "latest" else ref.lower()
    snaps = repo.list_snapshots(id_prefix=prefix)
    return find_snapshot(snaps, ref, SnapshotFilter(hosts, tags, paths))


def snapshot_json(snap: Snapshot) -> dict[str, Any]:
    return {
        "id": snap.id,
        "short_id": snap.short_id,
        "time": snap.rfc3339(),
        "tree": snap.tree.hex(),
        "paths": snap.str_paths(),
        "hostname": snap.hostname,
        "username": snap.username,
        "uid": snap.uid,
        "gid": snap.gid,
        "tags": list(snap.tags),
        "parent": snap.parent,
        "program_version": snap.program_version,
    }
