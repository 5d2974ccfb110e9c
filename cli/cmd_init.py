"""hutch init: create a repository."""

from __future__ import annotations

import os

import click

from cli.context import Globals, key_info
from cli.errors import CliError
from cli.options import global_options
from cli.output import emit_json, say
from repo.config import RepoConfig
from repo.repository import Repository


def run_init(g: Globals) -> None:
    backend = g.backend(create=True)
    if backend.exists():
        raise CliError(f"{backend.location}: a repository already exists there")
    password = g.password(is_new=True)
    if not password:
        raise CliError("an empty password is not allowed")
    repo = Repository.init(backend, password, key_info(), RepoConfig(repo_id=os.urandom(32).hex()))
    if g.is_json:
        emit_json(
            {
                "message_type": "initialized",
                "id": repo.config.repo_id,
                "repository": backend.location,
            }
        )
        return
    say(
        f"created hutch repository {repo.config.repo_id[:10]} at {backend.location}",
        is_quiet=g.is_quiet,
    )
    say(
        "Please note that knowledge of your password is required to access the repository. "
        "Losing your password means that your data is irrecoverably lost.",
        is_quiet=g.is_quiet,
    )


@click.command("init")
@global_options
@click.pass_obj
def init(g: Globals) -> None:
    """Create a new repository (refuses an existing one)."""
    run_init(g)
