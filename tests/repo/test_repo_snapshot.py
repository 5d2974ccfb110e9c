"""Tests for repo.snapshot: encoding, rfc3339 times and finding snapshots."""

from __future__ import annotations

import datetime as dt
import re

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import snapshots

from repo.errors import DamagedObject, SnapshotNotFound
from repo.snapshot import (
    Snapshot,
    SnapshotFilter,
    decode_snapshot,
    encode_snapshot,
    find_snapshot,
    sort_snapshots,
)

SNAP_ID = "c0ffee" + "0" * 58
RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{9})([+-]\d\d:\d\d)")


def _snap(
    snap_id: str,
    time_ns: int = 0,
    hostname: str = "host",
    tags: list[str] | None = None,
    paths: list[bytes] | None = None,
) -> Snapshot:
    return Snapshot(
        time_ns=time_ns,
        tz_offset=0,
        tree=b"\x01" * 32,
        paths=paths if paths is not None else [b"/home"],
        hostname=hostname,
        username="user",
        tags=tags or [],
        id=snap_id,
    )


def _parse_rfc3339(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time with nine fractional digits."""
    m = RFC3339.fullmatch(text)
    assert m is not None, text
    seconds = dt.datetime.fromisoformat(m[1] + m[3]).timestamp()
    return int(seconds) * 1_000_000_000 + int(m[2])


@given(snapshots)
def test_encode_decode_round_trip(snap: Snapshot) -> None:
    """decode_snapshot(encode_snapshot(s), id) equals s with the id filled in."""
    back = decode_snapshot(encode_snapshot(snap), SNAP_ID)
    snap.id = SNAP_ID
    assert back == snap


def test_id_is_not_encoded() -> None:
    """The id is the object's name, not part of its content."""
    snap = _snap("ab" * 32)
    assert "id" not in msgpack.unpackb(encode_snapshot(snap), raw=False)
    assert decode_snapshot(encode_snapshot(snap), "cd" * 32).id == "cd" * 32


def test_non_utf8_paths_round_trip() -> None:
    """Snapshot paths are bytes and survive untouched; str_paths escapes what is not UTF-8."""
    snap = _snap("ab" * 32, paths=[b"/caf\xe9", b"/ok"])
    back = decode_snapshot(encode_snapshot(snap), "ab" * 32)
    assert back.paths == [b"/caf\xe9", b"/ok"]
    assert back.str_paths() == ["/caf\udce9", "/ok"]


@pytest.mark.parametrize(
    "plain",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xc1", id="bad-msgpack"),
        pytest.param(msgpack.packb([1, 2]), id="list"),
        pytest.param(msgpack.packb({"version": 1}), id="missing-fields"),
        pytest.param(msgpack.packb({"version": 9}), id="unknown-version"),
    ],
)
def test_malformed_snapshot_is_damaged(plain: bytes) -> None:
    """Malformed snapshot plaintext raises DamagedObject naming the snapshot."""
    with pytest.raises(DamagedObject, match="snapshot c0ffee00"):
        decode_snapshot(plain, SNAP_ID)


def test_unknown_version_is_damaged() -> None:
    """A snapshot of a later version is refused rather than misread."""
    doc = msgpack.unpackb(encode_snapshot(_snap(SNAP_ID)), raw=False)
    doc["version"] = 2
    with pytest.raises(DamagedObject, match="snapshot c0ffee00"):
        decode_snapshot(msgpack.packb(doc, use_bin_type=True), SNAP_ID)


@pytest.mark.parametrize("doc", [None, 7, "text"])
def test_scalar_snapshot_is_damaged(doc: object) -> None:
    """Plaintext that decodes to a scalar raises DamagedObject."""
    with pytest.raises(DamagedObject):
        decode_snapshot(msgpack.packb(doc), SNAP_ID)


@given(
    seconds=st.integers(-(10**9), 4 * 10**9),
    fraction=st.integers(0, 999_999_999),
    tz_minutes=st.integers(-14 * 60, 14 * 60),
)
def test_rfc3339_parses_back(seconds: int, fraction: int, tz_minutes: int) -> None:
    """rfc3339() has nanoseconds and an offset, and parses back to time_ns."""
    snap = _snap(SNAP_ID, time_ns=seconds * 1_000_000_000 + fraction)
    snap.tz_offset = tz_minutes * 60
    text = snap.rfc3339()
    assert _parse_rfc3339(text) == snap.time_ns
    hours, minutes = divmod(abs(tz_minutes), 60)
    assert text.endswith(f"{'-' if tz_minutes < 0 else '+'}{hours:02d}:{minutes:02d}")


def test_rfc3339_example() -> None:
    """A known instant prints as restic prints it."""
    snap = _snap(SNAP_ID, time_ns=1_700_000_000_123_456_789)
    assert snap.rfc3339() == "2023-11-14T22:13:20.123456789+00:00"
    snap.tz_offset = 3600
    assert snap.rfc3339() == "2023-11-14T23:13:20.123456789+01:00"


@pytest.mark.parametrize("time_ns", [1_700_000_000_999_999_999, -1, 999_999_600])
def test_rfc3339_near_a_second_boundary(time_ns: int) -> None:
    """A time just before a full second keeps its second in rfc3339()."""
    assert _parse_rfc3339(_snap(SNAP_ID, time_ns=time_ns).rfc3339()) == time_ns


IDS = ["aaaa1111" + "0" * 56, "aaaa2222" + "0" * 56, "bbbb0000" + "0" * 56]


def _three() -> list[Snapshot]:
    return [_snap(IDS[0], 3), _snap(IDS[1], 1), _snap(IDS[2], 2)]


@pytest.mark.parametrize("ref", ["aaaa1", "AAAA1", "aaaa1111", IDS[0]])
def test_find_by_unique_prefix(ref: str) -> None:
    """A unique id prefix, in either case, or a full id finds its snapshot."""
    assert find_snapshot(_three(), ref, SnapshotFilter()).id == IDS[0]


def test_ambiguous_prefix() -> None:
    """A prefix shared by two snapshots is refused, saying it is ambiguous."""
    with pytest.raises(SnapshotNotFound, match="ambiguous"):
        find_snapshot(_three(), "aaaa", SnapshotFilter())


@pytest.mark.parametrize("ref", ["cccc", "aaaa3", "", "xyz", "aaaa-1"])
def test_unknown_or_invalid_ref(ref: str) -> None:
    """An id prefix that matches nothing, or is not hex, raises SnapshotNotFound."""
    with pytest.raises(SnapshotNotFound):
        find_snapshot(_three(), ref, SnapshotFilter())


def test_latest_is_newest() -> None:
    """`latest` is the snapshot with the largest time."""
    assert find_snapshot(_three(), "latest", SnapshotFilter()).id == IDS[0]


def test_latest_of_nothing() -> None:
    """`latest` without any snapshot raises SnapshotNotFound."""
    with pytest.raises(SnapshotNotFound):
        find_snapshot([], "latest", SnapshotFilter())


def test_latest_ties_are_broken_by_id() -> None:
    """Snapshots of the same time are ordered by id, so `latest` is deterministic."""
    snaps = [_snap(IDS[2], 5), _snap(IDS[0], 5)]
    assert find_snapshot(snaps, "latest", SnapshotFilter()).id == IDS[2]
    assert [s.id for s in sort_snapshots(snaps)] == [IDS[0], IDS[2]]


def _tagged() -> list[Snapshot]:
    return [
        _snap("01" * 32, 1, hostname="alpha", tags=["a", "b"], paths=[b"/etc", b"/home"]),
        _snap("02" * 32, 2, hostname="beta", tags=["a"], paths=[b"/home"]),
        _snap("03" * 32, 3, hostname="alpha", tags=["b", "c"], paths=[b"/srv"]),
        _snap("04" * 32, 4, hostname="gamma", tags=[], paths=[b"/home"]),
    ]


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (SnapshotFilter(), "04"),
        (SnapshotFilter(hosts=["alpha"]), "03"),
        (SnapshotFilter(hosts=["alpha", "beta"]), "03"),
        (SnapshotFilter(hosts=["beta"]), "02"),
        (SnapshotFilter(tags=["a"]), "02"),
        (SnapshotFilter(tags=["a,b"]), "01"),
        (SnapshotFilter(tags=["b,a"]), "01"),
        (SnapshotFilter(tags=["a,b", "c"]), "03"),
        (SnapshotFilter(tags=["a", "c"]), "03"),
        (SnapshotFilter(paths=["/home"]), "04"),
        (SnapshotFilter(paths=["/home/"]), "04"),
        (SnapshotFilter(paths=["/etc//", "/home/."]), "01"),
        (SnapshotFilter(paths=["/etc", "/home"]), "01"),
        (SnapshotFilter(hosts=["alpha"], paths=["/home"]), "01"),
        (SnapshotFilter(hosts=["alpha"], tags=["b"]), "03"),
    ],
)
def test_latest_with_filter(flt: SnapshotFilter, expected: str) -> None:
    """`latest` picks the newest snapshot matching hosts, tags (comma = and) and paths."""
    assert find_snapshot(_tagged(), "latest", flt).id == expected * 32


@pytest.mark.parametrize(
    "flt",
    [
        SnapshotFilter(hosts=["delta"]),
        SnapshotFilter(tags=["a,c"]),
        SnapshotFilter(tags=["z"]),
        SnapshotFilter(paths=["/home", "/srv"]),
        SnapshotFilter(hosts=["beta"], tags=["b"]),
    ],
)
def test_latest_with_filter_matching_nothing(flt: SnapshotFilter) -> None:
    """`latest` raises SnapshotNotFound when no snapshot passes the filter."""
    with pytest.raises(SnapshotNotFound):
        find_snapshot(_tagged(), "latest", flt)


def test_prefix_ignores_the_filter() -> None:
    """An explicit id prefix is resolved among all snapshots, as restic does."""
    assert find_snapshot(_tagged(), "02", SnapshotFilter(hosts=["alpha"])).id == "02" * 32


def test_short_id() -> None:
    """short_id is the first eight characters of the id."""
    assert _snap(IDS[0]).short_id == "aaaa1111"
