"""Exit codes (restic's, so scripts port) and the one table mapping errors to them."""

from __future__ import annotations

from repo.errors import (
    RepoError,
    RepositoryLocked,
    RepositoryNotFound,
    WrongPassword,
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_NO_REPOSITORY = 10
EXIT_LOCKED = 11
EXIT_WRONG_PASSWORD = 12
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A user-facing error raised by the command layer, with its exit code."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


EXIT_CODES: list[tuple[type[BaseException], int]] = [
    (RepositoryNotFound, EXIT_NO_REPOSITORY),
    (RepositoryLocked, EXIT_LOCKED),
    (WrongPassword, EXIT_WRONG_PASSWORD),
    (RepoError, EXIT_FAILURE),
    (OSError, EXIT_FAILURE),
]


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, CliError):
        return exc.exit_code
    for etype, code in EXIT_CODES:
        if isinstance(exc, etype):
            return code
    return EXIT_FAILURE
