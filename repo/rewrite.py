"""Rewriting snapshots: trees without excluded entries, and new tags.

A rewritten snapshot is a new object whose `original` names the first snapshot of its
line; the caller deletes the old object only after the new one is stored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from repo.pattern import PatternSet, split_path
from repo.repository import Repository
from repo.snapshot import Snapshot
from repo.tree import Node, encode_tree
from repo.types import BlobId


def rewritten(snap: Snapshot, **changes: object) -> Snapshot:
    """A copy of the snapshot with changes, to be stored as a new object."""
    new = dataclasses.replace(snap, id="", original=snap.original or snap.id)
    for name, value in changes.items():
        setattr(new, name, value)
    return new


class TreeRewriter:
    """Rewrites trees bottom-up without the entries the exclude patterns match; a tree
    with nothing excluded keeps its id, so unchanged subtrees are not stored again."""

    def __init__(self, repo: Repository, excludes: PatternSet, *, is_dry_run: bool) -> None:
        self.repo = repo
        self.excludes = excludes
        self.is_dry_run = is_dry_run
        # Patterns can depend on the path, so a tree is done once per place.
        self._done: dict[tuple[BlobId, bytes], tuple[BlobId, list[bytes]]] = {}

    def tree(self, tree_id: BlobId, prefix: bytes) -> tuple[BlobId, list[bytes]]:
        """The rewritten tree's id and the paths excluded below it."""
        key = (tree_id, prefix)
        done = self._done.get(key)
        if done is not None:
            return done
        nodes = self.repo.load_tree(tree_id)
        kept: list[Node] = []
        excluded: list[bytes] = []
        for node in nodes:
            path = prefix + b"/" + node.name
            if self.excludes.matches(split_path(path)):
                excluded.append(path)
                continue
            if node.subtree is not None:
                sub, below = self.tree(node.subtree, path)
                excluded.extend(below)
                node = dataclasses.replace(node, subtree=sub)  # noqa: PLW2901
            kept.append(node)
        new_id = tree_id if kept == nodes else self._save(kept)
        self._done[key] = (new_id, excluded)
        return new_id, excluded

    def _save(self, nodes: list[Node]) -> BlobId:
        if self.is_dry_run:
            return self.repo.blob_id(encode_tree(nodes))
        return self.repo.save_tree(nodes)[0]

    def snapshot(self, snap: Snapshot) -> tuple[Snapshot | None, list[bytes]]:
        """The rewritten snapshot (None when nothing matched) and the paths excluded."""
        root, excluded = self.tree(snap.tree, b"")
        if root == snap.tree:
            return None, []
        return rewritten(snap, tree=root), excluded


def change_tags(
    tags: Sequence[str], *, add: Sequence[str], remove: Sequence[str], set_to: Sequence[str] | None
) -> list[str]:
    """restic's tag arithmetic: --set replaces, then --add appends, --remove drops; order
    is kept and each tag appears once."""
    out = list(dict.fromkeys(set_to if set_to is not None else tags))
    out.extend(t for t in dict.fromkeys(add) if t not in out)
    return [t for t in out if t not in set(remove)]
