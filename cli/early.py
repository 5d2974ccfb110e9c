"""The `hutch` console entry point: start Argon2id first, then import the command line.

Argon2id is most of a short command's time (a one-file `dump`), and it releases the
GIL; importing click and the repository code is most of the rest. So when the
repository is a local folder and the password comes from the environment or a file,
the key file is read and its derivation started in a thread before those imports,
and derive_key() takes the result when its inputs match. This module reads the
command line only to guess: a wrong guess costs time, never a wrong key, because the
command reads its options, its password and the key files again and reports every
error itself.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping

TYPE_CHECKING = False  # importing typing costs start-up time; type checkers know the name
if TYPE_CHECKING:
    from typing import NoReturn

    from crypto import argon2

# The global options that take a value, as cli/options.py declares them (a test keeps
# the two in step), and where the guess needs their value.
VALUE_OPTIONS = {
    "-r": "repo",
    "--repo": "repo",
    "--password-file": "password_file",
    "--password-command": "password_command",
    "--cache-dir": "",
    "--retry-lock": "",
    "--connections": "",
    "--limit-upload": "",
    "--limit-download": "",
    "--cacert": "",
}
_KEY_NAME_SIZE = 64  # the hex SHA-256 of the key file's bytes


def main() -> None:
    """Run hutch with the key derivation started before the heavy imports."""
    # Only a head start: the command itself reports every error.
    with contextlib.suppress(Exception):
        start_key_derivation(sys.argv[1:], os.environ)
    from cli.main import main as run  # noqa: PLC0415 - imported while Argon2id runs

    try:
        run()
    except SystemExit as exc:
        leave(exc.code)
    leave(0)


def leave(code: object) -> NoReturn:
    """Exit with `code` as SystemExit would, but without the interpreter's teardown.

    Freeing every module and object at exit took 20-30 ms of a 0.23 s `dump` and of a
    0.33 s no-change backup, and nothing in it is needed once the command has returned: its
    files and connections are closed by then. So the atexit callbacks run (a remote
    backend's server is stopped there), the standard streams are flushed, and the
    process ends. When a thread that is not a daemon still runs, or flushing fails
    (a closed pipe), the normal exit takes over and behaves as it always did.
    """
    import atexit  # noqa: PLC0415
    import threading  # noqa: PLC0415

    if code is None:
        code = 0
    main = threading.main_thread()
    waiting = any(t is not main and not t.daemon and t.is_alive() for t in threading.enumerate())
    if not isinstance(code, int) or waiting:
        raise SystemExit(code)
    atexit._run_exitfuncs()
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None and not stream.closed:
                stream.flush()
    except (OSError, ValueError):
        raise SystemExit(code) from None
    os._exit(code & 0xFF)


def start_key_derivation(args: list[str], environ: Mapping[str, str]) -> bool:
    """Start deriving the key of the first key file of a local repository; True if begun."""
    values = global_values(args)
    if values is None:
        return False
    location = values.get("repo") or environ.get("HUTCH_REPOSITORY")
    password = _password(values, environ)
    if not location or password is None:
        return False
    # Light modules only: a command imports the rest of crypto and repo anyway, but
    # after the derivation has started.
    from repo.location import local_path  # noqa: PLC0415

    folder = local_path(location)
    if folder is None:
        return False
    inputs = _kdf_inputs(os.path.join(folder, "keys"), password)
    if inputs is None:
        return False
    from crypto import argon2  # noqa: PLC0415
    from repo.allocator import use_one_arena  # noqa: PLC0415

    # Before the first thread: one started earlier keeps an arena of its own.
    use_one_arena()
    argon2.start(inputs)
    return True


def _kdf_inputs(keys: str, password: bytes) -> argon2.Inputs | None:
    """Argon2id's inputs for the first key file in ``keys``, in the order the local
    backend lists them and Repository.open tries them; None if it cannot be read.

    Reads only the fields the derivation takes (docs/design.md, "Key files"); opening
    the key file checks it whole.
    """
    import msgpack  # noqa: PLC0415

    from crypto import argon2  # noqa: PLC0415

    try:
        with os.scandir(keys) as entries:
            names = [e.name for e in entries if e.is_file(follow_symlinks=False)]
    except OSError:
        return None
    for name in names:
        if len(name) != _KEY_NAME_SIZE:
            continue
        with open(os.path.join(keys, name), "rb") as f:
            fields = msgpack.unpackb(f.read())
        salt, memory, iterations, lanes = (
            fields.get(k) for k in ("salt", "memory_kib", "iterations", "lanes")
        )
        if (
            not isinstance(salt, bytes)
            or not all(type(v) is int for v in (memory, iterations, lanes))
            or argon2.problem(memory, iterations, lanes) is not None
        ):
            return None
        return (password, salt, memory, iterations, lanes)
    return None


def global_values(args: list[str]) -> dict[str, str] | None:
    """The values of the global options in ``args``, by destination; the last one wins,
    as an option after the command name overrides one before it. None when the command
    line asks for help or the version, which need no key."""
    values: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            break
        if arg in ("-h", "--help", "--version"):
            return None
        name, has_value, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name.startswith("-r") and len(name) > 2 and not name.startswith("--"):
            name, has_value, value = "-r", "=", name[2:]
        if name not in VALUE_OPTIONS:
            continue
        if not has_value:
            if i == len(args):
                break
            value = args[i]
            i += 1
        if VALUE_OPTIONS[name]:
            values[VALUE_OPTIONS[name]] = value
    return values


def _password(values: dict[str, str], environ: Mapping[str, str]) -> bytes | None:
    """The password as Globals.password() finds it, without running a command or asking."""
    path = values.get("password_file") or environ.get("HUTCH_PASSWORD_FILE")
    if path:
        try:
            with open(path, "rb") as f:
                return strip_newline(f.read())
        except OSError:
            return None
    if values.get("password_command") or environ.get("HUTCH_PASSWORD_COMMAND"):
        return None
    password = environ.get("HUTCH_PASSWORD")
    return None if password is None else os.fsencode(password)


def strip_newline(data: bytes) -> bytes:
    """A password file's or command's output without its one trailing line break."""
    if data.endswith(b"\r\n"):
        return data[:-2]
    return data.removesuffix(b"\n")
