"""Key files of an open repository: list, add, remove, and change the password of one.

Every key file seals the same master key under its own password (docs/design.md,
"Key material and crypto"). Who made a key file and when is sealed too, so only
key files that open with the password at hand reveal it: the repository shows no
host or user names to whoever can read its folder.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from crypto import KdfParams, KeyInfo, create_keyfile, open_keyfile, read_kdf_params
from repo.errors import RepoError
from repo.repository import Repository
from repo.types import Handle, Kind


class KeyNotFound(RepoError):
    """No key file, or more than one, matches the given ID prefix."""


class KeyRefused(RepoError):
    """A key change that would lock everyone out, or leave a key without a password."""


@dataclass(frozen=True, slots=True)
class KeyFileInfo:
    """One key file: its ID, whether it opened the repository, and its key info if known."""

    id: str
    is_current: bool
    # None when the password at hand does not open this key file.
    info: KeyInfo | None


def list_keys(repo: Repository, password: bytes) -> list[KeyFileInfo]:
    """Every key file, by ID; only the one in use is opened (one key derivation)."""
    # Trying the password on the others would cost one Argon2id run each and
    # reveal nothing unless two key files share a password.
    return [
        KeyFileInfo(name, name == repo.key_name, _read_info(repo, name, password))
        for name in _key_names(repo)
    ]


def add_key(repo: Repository, password: bytes, info: KeyInfo, kdf: KdfParams | None = None) -> str:
    """Store a key file for the repository's master key under ``password``; return its ID.

    ``kdf`` defaults to the parameters of the key file in use, so a new key
    costs an attacker as much as the one it joins.
    """
    if not password:
        raise KeyRefused("an empty password is not allowed")
    data = create_keyfile(repo.master, password, info, kdf or _current_kdf(repo))
    name = hashlib.sha256(data).hexdigest()
    repo.backend.write(Handle(Kind.KEY, name), data)
    return name


def find_key(repo: Repository, prefix: str) -> str:
    """The ID of the one key file whose ID starts with ``prefix``."""
    if not prefix:
        raise KeyNotFound("no key ID given")
    matches = [name for name in _key_names(repo) if name.startswith(prefix.lower())]
    if not matches:
        raise KeyNotFound(f"key {prefix}: no key file has this ID")
    if len(matches) > 1:
        raise KeyNotFound(f"key {prefix}: ambiguous, {len(matches)} key files match")
    return matches[0]


def remove_key(repo: Repository, prefix: str) -> str:
    """Delete the key file ``prefix`` names, unless it is in use or the last one; return its ID.

    The caller holds an exclusive lock, so two removals cannot each leave the
    other's key as the last one and then delete it.
    """
    name = find_key(repo, prefix)
    if name == repo.key_name:
        raise KeyRefused(
            f"key {name[:8]}: it opened the repository and cannot be removed "
            "(use `key passwd` to change its password)"
        )
    if len(_key_names(repo)) < 2:
        raise KeyRefused(f"key {name[:8]}: it is the last key file and cannot be removed")
    repo.backend.delete(Handle(Kind.KEY, name))
    return name


def change_password(repo: Repository, password: bytes, info: KeyInfo) -> tuple[str, str]:
    """Replace the key file in use by one under ``password``; return (new ID, old ID).

    The new key file is written before the old one is deleted, so an
    interruption leaves two working key files, never none. No other object changes.
    """
    old = _require_current(repo)
    new = add_key(repo, password, info)
    repo.backend.delete(Handle(Kind.KEY, old))
    repo.key_name = new
    return new, old


def _key_names(repo: Repository) -> list[str]:
    return sorted(info.name for info in repo.backend.list(Kind.KEY))


def _require_current(repo: Repository) -> str:
    if repo.key_name is None:
        raise KeyRefused("the key file that opened the repository is not known")
    return repo.key_name


def _current_kdf(repo: Repository) -> KdfParams:
    return read_kdf_params(repo.backend.read(Handle(Kind.KEY, _require_current(repo))))


def _read_info(repo: Repository, name: str, password: bytes) -> KeyInfo | None:
    if name != repo.key_name:
        return None
    return open_keyfile(repo.backend.read(Handle(Kind.KEY, name)), password)[1]
