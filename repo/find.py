"""Choosing snapshots by ids or filters, and finding paths that match patterns in them."""

from __future__ import annotations

import re
from collections.abc import Sequence

from repo.pattern import Pattern, split_path
from repo.repository import Repository
from repo.tree import Node
from repo.types import BlobId

Match = tuple[bytes, Node]


def _exact(parts: tuple[re.Pattern[str] | None, ...], names: tuple[str, ...]) -> bool:
    """Whether the whole path matches the pattern (repo.pattern also accepts a match of
    an ancestor, which suits --exclude but would list a whole folder here)."""
    if not parts:
        return not names
    head = parts[0]
    if head is None:
        return _exact(parts[1:], names) or bool(names and _exact(parts, names[1:]))
    if not names:
        return False
    return bool(head.fullmatch(names[0])) and _exact(parts[1:], names[1:])


class Finder:
    """Finds entries by restic's find rules: a pattern without `/` matches the name at any
    depth, one starting with `/` the whole path, any other a trailing part of the path."""

    def __init__(
        self, repo: Repository, patterns: Sequence[str], *, is_ignore_case: bool = False
    ) -> None:
        self.repo = repo
        self.is_ignore_case = is_ignore_case
        texts = [p.lower() if is_ignore_case else p for p in patterns]
        self.patterns = [Pattern.compile(t) for t in texts if t]
        # The same folder at the same path recurs in most snapshots: search it once.
        self._done: dict[tuple[BlobId, bytes], list[Match]] = {}

    def _names(self, path: bytes) -> tuple[str, ...]:
        names = split_path(path)
        return tuple(n.lower() for n in names) if self.is_ignore_case else names

    def matches(self, path: bytes) -> bool:
        names = self._names(path)
        return any(_exact(p.parts, names) for p in self.patterns)

    def _may_match_below(self, path: bytes) -> bool:
        names = self._names(path)
        return any(p.may_match_below(names) for p in self.patterns)

    def find(self, tree_id: BlobId, prefix: bytes = b"") -> list[Match]:
        """Matching entries below a tree, depth first in name order."""
        key = (tree_id, prefix)
        found = self._done.get(key)
        if found is not None:
            return found
        found = []
        for node in self.repo.load_tree(tree_id):
            path = prefix + b"/" + node.name
            if self.matches(path):
                found.append((path, node))
            if node.subtree is not None and self._may_match_below(path):
                found.extend(self.find(node.subtree, path))
        self._done[key] = found
        return found
