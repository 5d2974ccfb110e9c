"""Tests for repo.forget: each retention rule by hand, durations, grouping, and properties."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from repo.forget import (
    UNLIMITED,
    Duration,
    GroupBy,
    GroupKey,
    Policy,
    apply_policy,
    group_snapshots,
    parse_duration,
    parse_group_by,
    within_cutoff,
)
from repo.snapshot import Snapshot

NS = 1_000_000_000


def _ns(when: str) -> int:
    """Nanoseconds since the epoch of a "YYYY-MM-DD HH:MM:SS" UTC time."""
    stamp = dt.datetime.fromisoformat(when).replace(tzinfo=dt.UTC).timestamp()
    return int(stamp) * NS


def _snap(
    when: str,
    nr: int = 0,
    *,
    host: str = "h",
    paths: list[bytes] | None = None,
    tags: list[str] | None = None,
    tz_offset: int = 0,
    extra_ns: int = 0,
) -> Snapshot:
    """A snapshot taken at the UTC time `when` (recorded with tz_offset), with id nr."""
    return Snapshot(
        time_ns=_ns(when) + extra_ns,
        tz_offset=tz_offset,
        tree=b"\0" * 32,
        paths=paths if paths is not None else [b"/x"],
        hostname=host,
        username="u",
        tags=tags or [],
        id=f"{nr:064x}",
    )


def _series(*times: str) -> list[Snapshot]:
    return [_snap(when, nr) for nr, when in enumerate(times)]


def _kept(snaps: list[Snapshot], policy: Policy) -> list[str]:
    """The kept snapshots' times, newest first."""
    return [f"{s.datetime:%Y-%m-%d %H:%M:%S}" for s in apply_policy(snaps, policy).keep]


@pytest.fixture
def other_tz(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process runs in a time zone far from UTC (restored afterwards)."""
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# -- the count rules -----------------------------------------------------------------

HOURS = _series(
    "2024-05-01 10:05:00",
    "2024-05-01 10:50:00",
    "2024-05-01 11:10:00",
    "2024-05-01 13:00:00",
    "2024-05-01 13:30:00",
)


def test_keep_last_keeps_the_n_newest() -> None:
    """--keep-last 2 keeps the two newest snapshots, whatever their times."""
    assert _kept(HOURS, Policy(last=2)) == ["2024-05-01 13:30:00", "2024-05-01 13:00:00"]


def test_keep_hourly_keeps_the_newest_of_each_hour() -> None:
    """--keep-hourly 2 keeps the newest snapshot of each of the two newest hours."""
    assert _kept(HOURS, Policy(hourly=2)) == ["2024-05-01 13:30:00", "2024-05-01 11:10:00"]


def test_keep_daily_counts_days_with_snapshots_not_calendar_days() -> None:
    """--keep-daily 3 skips days without snapshots and keeps each day's newest."""
    snaps = _series(
        "2024-05-01 08:00:00",
        "2024-05-03 08:00:00",
        "2024-05-03 20:00:00",
        "2024-05-07 00:00:00",
        "2024-05-07 23:59:59",
    )
    assert _kept(snaps, Policy(daily=3)) == [
        "2024-05-07 23:59:59",
        "2024-05-03 20:00:00",
        "2024-05-01 08:00:00",
    ]


def test_keep_weekly_uses_iso_weeks_across_the_year_boundary() -> None:
    """2021-01-03 is in ISO week 2020-W53 with 2020-12-31, and 2022-01-02 in 2021-W52."""
    snaps = _series(
        "2020-12-31 12:00:00",
        "2021-01-03 12:00:00",
        "2021-01-04 12:00:00",
        "2021-01-10 12:00:00",
        "2021-12-27 12:00:00",
        "2022-01-02 12:00:00",
    )
    assert _kept(snaps, Policy(weekly=3)) == [
        "2022-01-02 12:00:00",
        "2021-01-10 12:00:00",
        "2021-01-03 12:00:00",
    ]
    assert _kept(snaps, Policy(weekly=4))[-1] == "2021-01-03 12:00:00"


def test_keep_monthly_and_yearly() -> None:
    """--keep-monthly and --keep-yearly keep the newest of each month and year."""
    snaps = _series(
        "2022-06-15 00:00:00",
        "2022-12-31 23:59:59",
        "2023-01-01 00:00:00",
        "2023-01-31 10:00:00",
        "2023-02-01 10:00:00",
        "2023-02-28 10:00:00",
    )
    assert _kept(snaps, Policy(monthly=2)) == ["2023-02-28 10:00:00", "2023-01-31 10:00:00"]
    assert _kept(snaps, Policy(yearly=5)) == ["2023-02-28 10:00:00", "2022-12-31 23:59:59"]


def test_rules_combine_as_a_union_with_restic_reasons() -> None:
    """Each kept snapshot lists every rule that keeps it, in restic's order and words."""
    snaps = _series(
        "2024-05-01 08:00:00",
        "2024-05-02 08:00:00",
        "2024-05-03 08:00:00",
        "2024-05-03 09:00:00",
    )
    result = apply_policy(snaps, Policy(last=1, daily=2, monthly=1))
    assert [(f"{r.snapshot.datetime:%d %H}", r.matches) for r in result.reasons] == [
        ("03 09", ("last snapshot", "daily snapshot", "monthly snapshot")),
        ("02 08", ("daily snapshot",)),
    ]
    assert [s.id for s in result.keep] == [r.snapshot.id for r in result.reasons]
    assert [f"{s.datetime:%d %H}" for s in result.remove] == ["03 08", "01 08"]


def test_minus_one_is_unlimited() -> None:
    """--keep-daily -1 keeps the newest of every day; --keep-last -1 keeps everything."""
    snaps = _series(
        "2024-05-01 08:00:00",
        "2024-05-01 09:00:00",
        "2024-05-02 08:00:00",
        "2024-06-09 08:00:00",
    )
    assert _kept(snaps, Policy(daily=UNLIMITED)) == [
        "2024-06-09 08:00:00",
        "2024-05-02 08:00:00",
        "2024-05-01 09:00:00",
    ]
    assert len(apply_policy(snaps, Policy(last=UNLIMITED)).keep) == 4


def test_buckets_use_the_recorded_wall_clock_not_the_machine_zone(other_tz: None) -> None:
    """At +02:00, 23:30 and 00:30 UTC the next morning are the same local day, 01:30 and 02:30."""
    east = 2 * 3600
    snaps = [
        _snap("2024-05-01 23:30:00", 1, tz_offset=east),
        _snap("2024-05-02 00:30:00", 2, tz_offset=east),
        _snap("2024-05-01 21:30:00", 3, tz_offset=east),
    ]
    result = apply_policy(snaps, Policy(daily=5))
    assert [s.id[-1] for s in result.keep] == ["2", "3"]


# -- keep-within ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("newest", "within", "boundary"),
    [
        ("2024-01-10 12:00:00", "3d4h", "2024-01-07 08:00:00"),
        ("2024-03-31 12:00:00", "1m", "2024-03-02 12:00:00"),  # Feb 31 rolls over (leap year)
        ("2023-03-31 12:00:00", "1m", "2023-03-03 12:00:00"),
        ("2024-02-29 06:00:00", "1y", "2023-03-01 06:00:00"),
        ("2024-01-01 01:00:00", "2h", "2023-12-31 23:00:00"),
        ("2024-05-15 00:00:00", "1y2m3d4h", "2023-03-11 20:00:00"),
    ],
)
def test_keep_within_keeps_the_boundary_and_drops_a_second_before(
    newest: str, within: str, boundary: str
) -> None:
    """A snapshot exactly at newest - duration is kept; one a second older is removed."""
    edge = _snap(boundary, 1)
    older = dataclasses.replace(edge, time_ns=edge.time_ns - NS, id=f"{2:064x}")
    snaps = [_snap(newest, 0), edge, older]
    result = apply_policy(snaps, Policy(within=parse_duration(within)))
    assert [s.id for s in result.keep] == [f"{0:064x}", f"{1:064x}"]
    assert result.reasons[1].matches == (f"within {within}",)
    assert [s.id for s in result.remove] == [f"{2:064x}"]


def test_keep_within_counts_from_the_newest_snapshot_including_fractions() -> None:
    """The cutoff keeps the newest snapshot's nanoseconds: 0.5 s after is kept, 0.4 s is not."""
    newest = _snap("2024-01-02 00:00:00", 0, extra_ns=NS // 2)
    assert within_cutoff(newest, Duration(days=1)) == _ns("2024-01-01 00:00:00") + NS // 2
    snaps = [
        newest,
        _snap("2024-01-01 00:00:00", 1, extra_ns=NS // 2),
        _snap("2024-01-01 00:00:00", 2, extra_ns=NS * 2 // 5),
    ]
    assert [s.id[-1] for s in apply_policy(snaps, Policy(within=Duration(days=1))).keep] == [
        "0",
        "1",
    ]


def test_keep_within_reaching_before_year_one_keeps_everything() -> None:
    """A duration longer than the calendar keeps every snapshot."""
    snaps = _series("1970-01-01 00:00:00", "2024-01-01 00:00:00")
    assert within_cutoff(snaps[1], Duration(years=5000)) is None
    assert len(apply_policy(snaps, Policy(within=Duration(years=5000))).keep) == 2


# -- keep-tag and the empty policy ---------------------------------------------------


def test_keep_tag_keeps_every_snapshot_with_the_tags() -> None:
    """--keep-tag a keeps all snapshots tagged a; --keep-tag a,b needs both tags."""
    snaps = [
        _snap("2024-01-01 00:00:00", 1, tags=["a"]),
        _snap("2024-01-02 00:00:00", 2, tags=["b", "a"]),
        _snap("2024-01-03 00:00:00", 3, tags=["b"]),
        _snap("2024-01-04 00:00:00", 4),
    ]
    only_a = apply_policy(snaps, Policy(tags=("a",)))
    assert [s.id[-1] for s in only_a.keep] == ["2", "1"]
    assert only_a.reasons[0].matches == ("has tag a",)
    both = apply_policy(snaps, Policy(tags=("a,b",), last=1))
    assert [r.matches for r in both.reasons] == [("last snapshot",), ("has tag a,b",)]


def test_empty_policy_keeps_everything() -> None:
    """With no rule at all nothing is removed (restic: "policy is empty")."""
    result = apply_policy(HOURS, Policy())
    assert len(result.keep) == len(HOURS)
    assert not result.remove
    assert {r.matches for r in result.reasons} == {("policy is empty",)}
    assert Policy(within=Duration()).is_empty


def test_policy_rejects_negative_counts_but_minus_one() -> None:
    """-1 means unlimited; -2 and negative durations are errors; so is an empty tag."""
    Policy(last=-1, yearly=-1)
    with pytest.raises(ValueError, match="-2"):
        Policy(daily=-2)
    with pytest.raises(ValueError, match="negative"):
        Policy(within=Duration(days=-1))
    with pytest.raises(ValueError, match="empty tag"):
        Policy(tags=("a,",))


def test_describe_reads_like_restic() -> None:
    """The `Applying Policy:` line."""
    policy = Policy(last=1, daily=-1, within=parse_duration("2d"), tags=("x",))
    assert policy.describe() == (
        "keep 1 latest, all daily snapshots and all snapshots with tags x"
        " and all snapshots within 2d of the newest"
    )


# -- durations -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3d", Duration(days=3)),
        ("1y2m3d4h", Duration(1, 2, 3, 4)),
        ("4h1y", Duration(years=1, hours=4)),
        ("0d", Duration()),
        ("12m", Duration(months=12)),
    ],
)
def test_parse_duration(text: str, expected: Duration) -> None:
    """Numbers with units y, m, d, h, each at most once, in any order."""
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "3", "d", "3x", "1d2d", "-1d", "1d ", "1.5d", "1D", "٣d"])
def test_parse_duration_rejects(text: str) -> None:
    """Anything else is a ValueError naming the text."""
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@given(st.builds(Duration, *[st.integers(0, 99)] * 4))
def test_duration_text_round_trips(duration: Duration) -> None:
    """str(d) parses back to d (the zero duration prints as "")."""
    text = str(duration)
    assert (parse_duration(text) if text else Duration()) == duration


# -- grouping ------------------------------------------------------------------------

MIXED = [
    _snap("2024-01-01 00:00:00", 1, host="b", paths=[b"/y", b"/x"]),
    _snap("2024-01-02 00:00:00", 2, host="a", tags=["t"]),
    _snap("2024-01-03 00:00:00", 3, host="b", paths=[b"/x", b"/y"], tags=["t"]),
    _snap("2024-01-04 00:00:00", 4, host="a"),
]


def _ids(groups: list[tuple[GroupKey, list[Snapshot]]]) -> list[tuple[GroupKey, str]]:
    return [(key, "".join(s.id[-1] for s in members)) for key, members in groups]


def test_group_by_host_and_paths_is_the_default() -> None:
    """Paths are compared as a sorted list; tags are not part of the key; null when unused."""
    assert _ids(group_snapshots(MIXED, GroupBy())) == [
        (GroupKey("a", (b"/x",)), "24"),
        (GroupKey("b", (b"/x", b"/y")), "13"),
    ]


def test_group_by_tags_and_by_nothing() -> None:
    """--group-by tags splits by the tag set; '' puts every snapshot in one group."""
    assert _ids(group_snapshots(MIXED, parse_group_by("tags"))) == [
        (GroupKey(tags=()), "14"),
        (GroupKey(tags=("t",)), "23"),
    ]
    assert _ids(group_snapshots(MIXED, parse_group_by(""))) == [(GroupKey(), "1234")]
    by_host = group_snapshots(reversed(MIXED), parse_group_by("host"))
    assert _ids(by_host) == [(GroupKey("a"), "24"), (GroupKey("b"), "13")]


def test_parse_group_by() -> None:
    """A comma-separated subset of host, paths, tags (restic's singular forms too)."""
    assert parse_group_by("host,paths") == GroupBy()
    assert parse_group_by("tag,path") == GroupBy(is_host=False, is_paths=True, is_tags=True)
    assert parse_group_by("") == GroupBy(is_host=False, is_paths=False)
    with pytest.raises(ValueError, match="'user'"):
        parse_group_by("host,user")


# -- properties ----------------------------------------------------------------------

YEAR_2020 = _ns("2020-01-01 00:00:00") // NS
counts = st.sampled_from([0, 0, 1, 2, 3, 5, UNLIMITED])


@st.composite
def snapshot_lists(draw: st.DrawFn) -> list[Snapshot]:
    """Up to 30 snapshots over about three years, some in the same hour, with tags."""
    seconds = draw(
        st.lists(st.integers(YEAR_2020, YEAR_2020 + 3 * 366 * 86400), max_size=30, unique=True)
    )
    tag_sets = st.lists(st.sampled_from(["a", "b", "c"]), unique=True, max_size=2)
    return [
        Snapshot(
            time_ns=s * NS + draw(st.integers(0, NS - 1)),
            tz_offset=draw(st.sampled_from([0, 3600, -5 * 3600])),
            tree=b"\0" * 32,
            paths=[b"/x"],
            hostname="h",
            username="u",
            tags=draw(tag_sets),
            id=f"{nr:064x}",
        )
        for nr, s in enumerate(seconds)
    ]


policies = st.builds(
    Policy,
    last=counts,
    hourly=counts,
    daily=counts,
    weekly=counts,
    monthly=counts,
    yearly=counts,
    within=st.sampled_from([Duration(), Duration(days=3), Duration(months=2, hours=5)]),
    tags=st.sampled_from([(), ("a",), ("b,c",)]),
)


def _single_rules(policy: Policy) -> list[Policy]:
    """One policy for each rule the given policy uses."""
    rules = [Policy(**{name: n}, within=Duration(), tags=()) for name, n in policy.counts() if n]
    rules += [Policy(within=policy.within)] if not policy.within.is_zero else []
    return rules + [Policy(tags=(t,)) for t in policy.tags]


@given(snapshot_lists(), policies)
def test_kept_set_is_the_union_of_the_single_rules(snaps: list[Snapshot], policy: Policy) -> None:
    """Rules do not interact: each keeps what it would keep alone."""
    kept = {s.id for s in apply_policy(snaps, policy).keep}
    if policy.is_empty:
        assert kept == {s.id for s in snaps}
        return
    union = {s.id for rule in _single_rules(policy) for s in apply_policy(snaps, rule).keep}
    assert kept == union


@given(snapshot_lists(), policies)
def test_keep_and_remove_partition_the_group(snaps: list[Snapshot], policy: Policy) -> None:
    """Every snapshot is kept or removed, never both; reasons name the kept ones in order."""
    result = apply_policy(snaps, policy)
    keep, remove = {s.id for s in result.keep}, {s.id for s in result.remove}
    assert keep | remove == {s.id for s in snaps}
    assert not keep & remove
    assert [r.snapshot.id for r in result.reasons] == [s.id for s in result.keep]
    assert all(r.matches for r in result.reasons)
    for ordered in (result.keep, result.remove):
        assert list(ordered) == sorted(ordered, key=lambda s: (s.time_ns, s.id), reverse=True)


@given(snapshot_lists(), policies)
def test_newest_is_kept_when_any_count_rule_is_on(snaps: list[Snapshot], policy: Policy) -> None:
    """The newest snapshot opens a bucket for every count rule."""
    if snaps and any(n for _, n in policy.counts()):
        newest = max(snaps, key=lambda s: (s.time_ns, s.id))
        assert newest in apply_policy(snaps, policy).keep
