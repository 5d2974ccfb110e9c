"""Tests for repo.keys: adding, listing, removing key files and changing a password."""

from __future__ import annotations

import hashlib

import pytest
from conftest import MakeRepo
from strategies import KEY_INFO, PASSWORD

from crypto import CHEAP, KeyInfo, read_kdf_params
from repo.backend.memory import MemoryBackend
from repo.errors import WrongPassword
from repo.keys import (
    KeyNotFound,
    KeyRefused,
    add_key,
    change_password,
    find_key,
    list_keys,
    remove_key,
)
from repo.repository import Repository
from repo.types import Handle, Kind

NEW_PASSWORD = b"battery staple"
NEW_INFO = KeyInfo(hostname="otherhost", username="other", created="2025-06-07T08:09:10+00:00")


def _backend(repo: Repository) -> MemoryBackend:
    assert isinstance(repo.backend, MemoryBackend)
    return repo.backend


def _key_names(repo: Repository) -> set[str]:
    return {info.name for info in repo.backend.list(Kind.KEY)}


def test_open_records_the_key_file_in_use(make_repo: MakeRepo) -> None:
    """init and open both name the key file that unlocked the repository."""
    repo = make_repo()
    (only,) = _key_names(repo)
    assert repo.key_name == only
    assert Repository.open(repo.backend, PASSWORD).key_name == only


def test_add_key_opens_the_same_master_key(make_repo: MakeRepo) -> None:
    """After add, either password opens the repository, with the same master key."""
    repo = make_repo()
    name = add_key(repo, NEW_PASSWORD, NEW_INFO)
    data = repo.backend.read(Handle(Kind.KEY, name))
    assert hashlib.sha256(data).hexdigest() == name
    # A new key costs as much to attack as the key it joins.
    assert read_kdf_params(data) == CHEAP
    by_new = Repository.open(repo.backend, NEW_PASSWORD)
    assert by_new.key_name == name
    assert by_new.master == Repository.open(repo.backend, PASSWORD).master == repo.master


def test_add_key_refuses_an_empty_password(make_repo: MakeRepo) -> None:
    """An empty password is refused and no key file is written."""
    repo = make_repo()
    before = _key_names(repo)
    with pytest.raises(KeyRefused, match="empty password"):
        add_key(repo, b"", NEW_INFO)
    assert _key_names(repo) == before


def test_list_marks_current_and_keeps_other_key_info_sealed(make_repo: MakeRepo) -> None:
    """Every key file is listed; only the one in use shows who made it."""
    repo = make_repo()
    name = add_key(repo, NEW_PASSWORD, NEW_INFO)
    keys = list_keys(Repository.open(repo.backend, NEW_PASSWORD), NEW_PASSWORD)
    assert sorted(k.id for k in keys) == sorted(_key_names(repo))
    (current,) = [k for k in keys if k.is_current]
    assert current.id == name
    assert current.info == NEW_INFO
    assert [k.info for k in keys if not k.is_current] == [None]


def test_remove_refuses_the_key_in_use(make_repo: MakeRepo) -> None:
    """The key file that opened the repository cannot be removed, even with others left."""
    repo = make_repo()
    add_key(repo, NEW_PASSWORD, NEW_INFO)
    assert repo.key_name is not None
    with pytest.raises(KeyRefused, match="opened the repository"):
        remove_key(repo, repo.key_name[:8])
    assert repo.key_name in _key_names(repo)


def test_remove_refuses_the_last_key(make_repo: MakeRepo) -> None:
    """With its key in use already gone (another process), the last key file stays."""
    repo = make_repo()
    name = add_key(repo, NEW_PASSWORD, NEW_INFO)
    assert repo.key_name is not None
    repo.backend.delete(Handle(Kind.KEY, repo.key_name))
    with pytest.raises(KeyRefused, match="last key"):
        remove_key(repo, name)
    assert _key_names(repo) == {name}


def test_remove_other_key(make_repo: MakeRepo) -> None:
    """Removing another key file by prefix makes its password fail."""
    repo = make_repo()
    name = add_key(repo, NEW_PASSWORD, NEW_INFO)
    assert remove_key(repo, name[:6].upper()) == name
    assert _key_names(repo) == {repo.key_name}
    with pytest.raises(WrongPassword):
        Repository.open(repo.backend, NEW_PASSWORD)


def test_find_key_refuses_unknown_ambiguous_and_empty_prefixes(make_repo: MakeRepo) -> None:
    """A key ID prefix must match exactly one key file."""
    repo = make_repo()
    for name in ("ab" + "0" * 62, "ab" + "1" * 62):
        repo.backend.write(Handle(Kind.KEY, name), b"planted")
    with pytest.raises(KeyNotFound, match="ambiguous"):
        find_key(repo, "ab")
    # Long enough that the real key file (a random name) cannot share it.
    assert find_key(repo, "ab" + "1" * 20) == "ab" + "1" * 62
    with pytest.raises(KeyNotFound, match="no key file"):
        find_key(repo, "xyz")
    with pytest.raises(KeyNotFound, match="no key ID"):
        find_key(repo, "")


def test_change_password_replaces_only_the_key_file(make_repo: MakeRepo) -> None:
    """After passwd the old password fails, the new one opens, and nothing but keys/ changed."""
    repo = make_repo()
    objects = _backend(repo).objects
    others = {h: v for h, v in objects.items() if h.kind is not Kind.KEY}
    new, old = change_password(repo, NEW_PASSWORD, NEW_INFO)
    assert old != new
    assert repo.key_name == new
    assert _key_names(repo) == {new}
    assert {h: v for h, v in objects.items() if h.kind is not Kind.KEY} == others
    with pytest.raises(WrongPassword):
        Repository.open(repo.backend, PASSWORD)
    assert Repository.open(repo.backend, NEW_PASSWORD).master == repo.master


def test_change_password_interrupted_before_delete_leaves_both_keys(
    make_repo: MakeRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill between writing the new key file and deleting the old leaves two working keys."""
    repo = make_repo()
    old = repo.key_name

    def killed(handle: Handle) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(repo.backend, "delete", killed)
    with pytest.raises(KeyboardInterrupt):
        change_password(repo, NEW_PASSWORD, NEW_INFO)
    monkeypatch.undo()
    assert len(_key_names(repo)) == 2
    assert old in _key_names(repo)
    for password in (PASSWORD, NEW_PASSWORD):
        assert Repository.open(repo.backend, password).master == repo.master


def test_key_info_of_the_key_in_use_is_listed(make_repo: MakeRepo) -> None:
    """The listed key info is what init sealed into the key file."""
    repo = make_repo()
    (key,) = list_keys(repo, PASSWORD)
    assert key.is_current
    assert key.info == KEY_INFO
