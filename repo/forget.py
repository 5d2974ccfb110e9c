"""Retention policies: grouping snapshots and choosing the ones a policy keeps (restic's forget)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from repo.snapshot import Snapshot

NS = 1_000_000_000
# Unlimited count for a --keep-<bucket> rule, as in restic 0.15+.
UNLIMITED = -1
_EPOCH = dt.datetime(1970, 1, 1)
_DURATION_PART = re.compile(r"([0-9]+)([ymdh])")


@dataclass(frozen=True, slots=True)
class Duration:
    """A calendar duration as --keep-within takes it: years, months, days and hours."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    @property
    def is_zero(self) -> bool:
        return not (self.years or self.months or self.days or self.hours)

    def __str__(self) -> str:
        parts = zip((self.years, self.months, self.days, self.hours), "ymdh", strict=True)
        return "".join(f"{n}{unit}" for n, unit in parts if n)


def parse_duration(text: str) -> Duration:
    """Parse `1y2m3d4h` (each unit at most once, in any order); raise ValueError otherwise."""
    found: dict[str, int] = {}
    pos = 0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos or m[2] in found:
            break
        found[m[2]] = int(m[1])
        pos = m.end()
    if not text or pos != len(text):
        raise ValueError(f"invalid duration {text!r}: expected numbers with units y, m, d, h")
    return Duration(found.get("y", 0), found.get("m", 0), found.get("d", 0), found.get("h", 0))


@dataclass(frozen=True, slots=True)
class Policy:
    """Which snapshots of a group to keep; counts are 0 (rule off), N, or UNLIMITED."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: Duration = field(default_factory=Duration)
    # Each entry is a comma-separated tag list; a snapshot with all of one list is kept.
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, count in self.counts():
            if count < UNLIMITED:
                raise ValueError(f"keep {name} {count}: no negative count but -1 (unlimited)")
        w = self.within
        if min(w.years, w.months, w.days, w.hours) < 0:
            raise ValueError(f"keep within {w}: negative duration")
        if any("" in t.split(",") for t in self.tags):
            raise ValueError(f"keep tag {self.tags}: empty tag")

    def counts(self) -> list[tuple[str, int]]:
        return [
            ("last", self.last),
            ("hourly", self.hourly),
            ("daily", self.daily),
            ("weekly", self.weekly),
            ("monthly", self.monthly),
            ("yearly", self.yearly),
        ]

    @property
    def is_empty(self) -> bool:
        return not self.tags and self.within.is_zero and not any(n for _, n in self.counts())

    def describe(self) -> str:
        """The policy in words, as restic's `Applying Policy:` line."""
        rules = []
        for name, n in self.counts():
            if n:
                amount = "all" if n == UNLIMITED else str(n)
                rules.append(f"{amount} {'latest' if name == 'last' else name}")
        parts = [f"{', '.join(rules)} snapshots"] if rules else []
        if self.tags:
            parts.append(f"all snapshots with tags {', '.join(self.tags)}")
        if not self.within.is_zero:
            parts.append(f"all snapshots within {self.within} of the newest")
        return "keep " + " and ".join(parts)


# -- grouping ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupBy:
    """Which snapshot fields make up a group (restic's --group-by)."""

    is_host: bool = True
    is_paths: bool = True
    is_tags: bool = False


def parse_group_by(text: str) -> GroupBy:
    """Parse a comma-separated subset of host, paths, tags; '' puts all snapshots in one group."""
    words = {w.strip() for w in text.split(",")} - {""}
    aliases = {"host": "host", "hosts": "host", "path": "paths", "paths": "paths"}
    aliases |= {"tag": "tags", "tags": "tags"}
    unknown = sorted(words - aliases.keys())
    if unknown:
        raise ValueError(f"--group-by {text!r}: unknown field {unknown[0]!r} (host, paths, tags)")
    chosen = {aliases[w] for w in words}
    return GroupBy("host" in chosen, "paths" in chosen, "tags" in chosen)


@dataclass(frozen=True, slots=True)
class GroupKey:
    """The values a group shares; fields not grouped by are "" or None, as in restic."""

    hostname: str = ""
    paths: tuple[bytes, ...] | None = None
    tags: tuple[str, ...] | None = None

    def sort_key(self) -> tuple[str, tuple[bytes, ...], tuple[str, ...]]:
        return self.hostname, self.paths or (), self.tags or ()


def group_key(snap: Snapshot, group_by: GroupBy) -> GroupKey:
    return GroupKey(
        snap.hostname if group_by.is_host else "",
        tuple(sorted(snap.paths)) if group_by.is_paths else None,
        tuple(sorted(snap.tags)) if group_by.is_tags else None,
    )


def group_snapshots(
    snaps: Iterable[Snapshot], group_by: GroupBy
) -> list[tuple[GroupKey, list[Snapshot]]]:
    """Snapshots by group, groups ordered by key, snapshots oldest first."""
    groups: dict[GroupKey, list[Snapshot]] = {}
    for snap in snaps:
        groups.setdefault(group_key(snap, group_by), []).append(snap)
    ordered = sorted(groups.items(), key=lambda item: item[0].sort_key())
    return [(key, sorted(members, key=lambda s: (s.time_ns, s.id))) for key, members in ordered]


# -- applying a policy ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeepReason:
    """Why a snapshot is kept: restic's match strings, e.g. "daily snapshot"."""

    snapshot: Snapshot
    matches: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PolicyResult:
    """A group split by a policy; each list newest first, reasons parallel to keep."""

    keep: tuple[Snapshot, ...]
    remove: tuple[Snapshot, ...]
    reasons: tuple[KeepReason, ...]


def wall_clock(snap: Snapshot) -> dt.datetime:
    """The snapshot's time as the clock showed it when taken: at its recorded UTC offset.

    restic buckets by the time zone stored with each snapshot too (Go keeps the
    parsed offset), so buckets do not move with the TZ of the machine running forget.
    """
    return _EPOCH + dt.timedelta(seconds=snap.time_ns // NS + snap.tz_offset)


Bucket = Callable[[dt.datetime, int], object]

# The count rules in restic's order: policy field, bucket of a snapshot, match string.
_RULES: list[tuple[str, Bucket, str]] = [
    ("last", lambda t, nr: nr, "last snapshot"),
    ("hourly", lambda t, nr: (t.year, t.month, t.day, t.hour), "hourly snapshot"),
    ("daily", lambda t, nr: (t.year, t.month, t.day), "daily snapshot"),
    ("weekly", lambda t, nr: t.isocalendar()[:2], "weekly snapshot"),
    ("monthly", lambda t, nr: (t.year, t.month), "monthly snapshot"),
    ("yearly", lambda t, nr: t.year, "yearly snapshot"),
]


def within_cutoff(newest: Snapshot, within: Duration) -> int | None:
    """The oldest time (ns) --keep-within keeps, or None when it reaches before year 1.

    Go's AddDate(-y, -m, -d) on the newest snapshot's wall clock, then minus the
    hours: a day past the month's end rolls over (March 31 - 1m = March 2 or 3).
    """
    wall = wall_clock(newest)
    months = wall.year * 12 + wall.month - 1 - within.years * 12 - within.months
    year, month0 = divmod(months, 12)
    try:
        first = wall.replace(year=year, month=month0 + 1, day=1)
        cutoff = first + dt.timedelta(days=wall.day - 1 - within.days, hours=-within.hours)
    except (ValueError, OverflowError):
        return None
    seconds = (cutoff - _EPOCH) // dt.timedelta(seconds=1) - newest.tz_offset
    return seconds * NS + newest.time_ns % NS


def _has_tags(snap: Snapshot, taglist: str) -> bool:
    return set(taglist.split(",")) <= set(snap.tags)


class _Walk:
    """The state of the count rules while walking a group newest first."""

    def __init__(self, policy: Policy) -> None:
        self.left = dict(policy.counts())
        self.last_bucket: dict[str, object] = {}

    def matches(self, snap: Snapshot, nr: int) -> list[str]:
        """The count rules that keep the nr-th newest snapshot, counting it against them."""
        found = []
        wall = wall_clock(snap)
        for name, bucket_of, reason in _RULES:
            if self.left[name] == 0:
                continue
            bucket = bucket_of(wall, nr)
            if name in self.last_bucket and self.last_bucket[name] == bucket:
                continue
            self.last_bucket[name] = bucket
            if self.left[name] != UNLIMITED:
                self.left[name] -= 1
            found.append(reason)
        return found


def apply_policy(snaps: Sequence[Snapshot], policy: Policy) -> PolicyResult:
    """Split one group into kept and removed snapshots, as restic's ApplyPolicy.

    Walking newest first, a count rule keeps a snapshot that opens a new bucket
    while the rule has count left; --keep-within keeps snapshots at or after the
    newest one's time minus the duration; --keep-tag keeps every snapshot with
    the tags. The kept set is the union over all rules. An empty policy keeps all.
    """
    ordered = sorted(snaps, key=lambda s: (s.time_ns, s.id), reverse=True)
    if policy.is_empty:
        everything = tuple(KeepReason(s, ("policy is empty",)) for s in ordered)
        return PolicyResult(tuple(ordered), (), everything)
    if not ordered:
        return PolicyResult((), (), ())
    cutoff = None if policy.within.is_zero else within_cutoff(ordered[0], policy.within)
    walk = _Walk(policy)
    keep: list[Snapshot] = []
    remove: list[Snapshot] = []
    reasons: list[KeepReason] = []
    for nr, snap in enumerate(ordered):
        matches = [f"has tag {t}" for t in policy.tags if _has_tags(snap, t)]
        if not policy.within.is_zero and (cutoff is None or snap.time_ns >= cutoff):
            matches.append(f"within {policy.within}")
        matches += walk.matches(snap, nr)
        if matches:
            keep.append(snap)
            reasons.append(KeepReason(snap, tuple(matches)))
        else:
            remove.append(snap)
    return PolicyResult(tuple(keep), tuple(remove), tuple(reasons))
