"""Snapshot objects: the root of one backup, and finding them by id, prefix or filter."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from repo.errors import DamagedObject, SnapshotNotFound

SNAPSHOT_VERSION = 1


@dataclass(slots=True)
class Snapshot:
    """A snapshot as stored; `id` is its object name, filled in when it is read or written."""

    time_ns: int
    tz_offset: int
    tree: bytes
    paths: list[bytes]
    hostname: str
    username: str
    uid: int = 0
    gid: int = 0
    tags: list[str] = field(default_factory=list)
    parent: str | None = None
    original: str | None = None
    program_version: str = ""
    start_ns: int = 0
    summary: dict[str, Any] = field(default_factory=dict)
    id: str = ""

    @property
    def short_id(self) -> str:
        return self.id[:8]

    @property
    def datetime(self) -> dt.datetime:
        tz = dt.timezone(dt.timedelta(seconds=self.tz_offset))
        return dt.datetime.fromtimestamp(self.time_ns / 1e9, tz)

    def rfc3339(self) -> str:
        """The time with nanoseconds and offset, as restic prints it."""
        seconds, nanos = divmod(self.time_ns, 1_000_000_000)
        tz = dt.timezone(dt.timedelta(seconds=self.tz_offset))
        base = dt.datetime.fromtimestamp(seconds, tz).isoformat()
        return f"{base[:19]}.{nanos:09d}{base[19:]}"

    def str_paths(self) -> list[str]:
        return [p.decode("utf-8", "surrogateescape") for p in self.paths]


_FIELDS = [
    "time_ns",
    "tz_offset",
    "tree",
    "paths",
    "hostname",
    "username",
    "uid",
    "gid",
    "tags",
    "parent",
    "original",
    "program_version",
    "start_ns",
    "summary",
]


def encode_snapshot(snap: Snapshot) -> bytes:
    doc = {name: getattr(snap, name) for name in _FIELDS}
    doc["version"] = SNAPSHOT_VERSION
    data: bytes = msgpack.packb(doc, use_bin_type=True)
    return data


def decode_snapshot(plain: bytes, snap_id: str) -> Snapshot:
    name = f"snapshot {snap_id[:8]}"
    try:
        doc = msgpack.unpackb(plain, raw=False)
        if not isinstance(doc, dict) or doc.pop("version", None) != SNAPSHOT_VERSION:
            raise DamagedObject(f"{name}: unsupported snapshot version")
        snap = Snapshot(**{k: doc[k] for k in _FIELDS}, id=snap_id)
        snap.paths = [bytes(p) for p in snap.paths]
        snap.tree = bytes(snap.tree)
        return snap
    except (KeyError, TypeError, ValueError, msgpack.UnpackException) as exc:
        raise DamagedObject(f"{name}: malformed") from exc


@dataclass(frozen=True, slots=True)
class SnapshotFilter:
    """restic's --host/--tag/--path filters: each given list must be matched."""

    hosts: Sequence[str] = ()
    tags: Sequence[str] = ()
    paths: Sequence[str] = ()

    def matches(self, snap: Snapshot) -> bool:
        if self.hosts and snap.hostname not in self.hosts:
            return False
        # restic: each --tag value is a comma-separated list that must all be present;
        # any one --tag value matching is enough.
        if self.tags and not any(set(t.split(",")) <= set(snap.tags) for t in self.tags):
            return False
        # restic: a snapshot matches when it includes every given path.
        wanted = {os.path.normpath(p) for p in self.paths}
        return wanted <= set(snap.str_paths())


def sort_snapshots(snaps: Iterable[Snapshot]) -> list[Snapshot]:
    return sorted(snaps, key=lambda s: (s.time_ns, s.id))


def find_snapshot(snaps: Sequence[Snapshot], ref: str, flt: SnapshotFilter) -> Snapshot:
    """Resolve `latest` (within the filter) or a unique id prefix."""
    if ref == "latest":
        matching = [s for s in snaps if flt.matches(s)]
        if not matching:
            raise SnapshotNotFound("no snapshot matches the given filters")
        return sort_snapshots(matching)[-1]
    ref = ref.lower()
    if not ref or any(c not in "0123456789abcdef" for c in ref):
        raise SnapshotNotFound(f"snapshot {ref!r}: not a snapshot id")
    found = [s for s in snaps if s.id.startswith(ref)]
    if not found:
        raise SnapshotNotFound(f"snapshot {ref}: no such snapshot")
    if len(found) > 1:
        raise SnapshotNotFound(f"snapshot {ref}: prefix is ambiguous ({len(found)} snapshots)")
    return found[0]


def select_snapshots(
    snaps: Sequence[Snapshot], refs: Iterable[str], flt: SnapshotFilter
) -> list[Snapshot]:
    """The snapshots named by id prefix or `latest`, or without refs every snapshot the
    filter keeps; oldest first, each once (restic's FindFilteredSnapshots)."""
    refs = list(refs)
    if not refs:
        return sort_snapshots(s for s in snaps if flt.matches(s))
    chosen = {}
    for ref in refs:
        snap = find_snapshot(snaps, ref, flt)
        chosen[snap.id] = snap
    return sort_snapshots(chosen.values())
