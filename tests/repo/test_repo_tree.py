"""Tests for repo.tree: tree blob and list blob encodings."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import blob_ids, directories, nodes

from repo.errors import DamagedObject
from repo.tree import (
    NODE_TYPES,
    TREE_VERSION,
    Node,
    decode_content_list,
    decode_tree,
    encode_content_list,
    encode_packed,
    encode_tree,
    iter_tree,
    pack_node,
)

NAME = "tree 0123456789abcdef"
ID = b"\x11" * 32


@given(directories)
def test_round_trip(entries: list[Node]) -> None:
    """decode_tree(encode_tree(entries)) gives back the entries, sorted by name."""
    assert decode_tree(encode_tree(entries), name=NAME) == sorted(entries, key=lambda n: n.name)


@given(directories)
def test_packed_rows_encode_as_the_tree_does(entries: list[Node]) -> None:
    """A tree built from rows packed one by one is byte for byte encode_tree()'s."""
    rows = [pack_node(n) for n in sorted(entries, key=lambda n: n.name)]
    assert encode_packed(rows) == encode_tree(entries)


@pytest.mark.parametrize("count", [0, 1, 15, 16, 65535, 65536])
def test_packed_rows_at_msgpack_array_size_limits(count: int) -> None:
    """Past 15 and 65535 items msgpack changes its array header; both ways agree."""
    entries = [Node(b"%06d" % i, "file", size=i) for i in range(count)]
    assert encode_packed([pack_node(n) for n in entries]) == encode_tree(entries)


@given(directories)
def test_iter_tree_decodes_as_decode_tree(entries: list[Node]) -> None:
    data = encode_tree(entries)
    assert list(iter_tree(data, name=NAME)) == decode_tree(data, name=NAME)


@given(st.binary(max_size=200))
def test_iter_tree_of_random_bytes_raises_only_damaged_object(data: bytes) -> None:
    with contextlib.suppress(DamagedObject):
        list(iter_tree(data, name=NAME))


def test_iter_tree_names_a_wrong_version() -> None:
    data = msgpack.packb([TREE_VERSION + 1, []])
    with pytest.raises(DamagedObject, match="unsupported tree version"):
        list(iter_tree(data, name=NAME))


@given(nodes)
def test_single_node_round_trips_every_field(node: Node) -> None:
    """Every field of a node, optional ones included, survives encoding."""
    (back,) = decode_tree(encode_tree([node]))
    assert back == node
    assert type(back.name) is bytes
    assert all(type(k) is bytes and type(v) is bytes for k, v in back.xattrs)


@given(entries=directories, data=st.data())
def test_identical_directories_encode_identically(entries: list[Node], data: st.DataObject) -> None:
    """The encoding does not depend on the order entries are given in."""
    shuffled = data.draw(st.permutations(entries))
    assert encode_tree(shuffled) == encode_tree(entries)


def test_encoding_is_a_fixed_field_order_array() -> None:
    """A tree is [version, [row, ...]] with each row's fields in the documented order."""
    node = Node(b"f", "file", mode=0o644, size=3, content=[ID])
    version, rows = msgpack.unpackb(encode_tree([node]), raw=False)
    assert version == TREE_VERSION
    (row,) = rows
    assert row[:3] == [b"f", "file", 0o644]
    assert row[11] == [ID]


@pytest.mark.parametrize(
    "name",
    [b"\xff\xfe", b"caf\xe9", b"a\nb", b" ", b"-", b"\x01", "ü".encode()],
)
def test_names_are_kept_byte_for_byte(name: bytes) -> None:
    """Names that are not UTF-8 or contain odd characters survive untouched."""
    (back,) = decode_tree(encode_tree([Node(name, "file")]))
    assert back.name == name


def test_sorted_by_bytes() -> None:
    """Entries are ordered by the bytes of their names."""
    names = [b"b", b"\xff", b"B", b"a", b"aa", b"\x00"]
    decoded = decode_tree(encode_tree([Node(n, "file") for n in names]))
    assert [n.name for n in decoded] == sorted(names)


def test_empty_directory_round_trips() -> None:
    """An empty directory encodes and decodes to no entries."""
    assert decode_tree(encode_tree([])) == []


@pytest.mark.parametrize("ntype", NODE_TYPES)
def test_every_node_type_is_accepted(ntype: str) -> None:
    """Each documented entry type round-trips."""
    (back,) = decode_tree(encode_tree([Node(b"x", ntype)]))
    assert back.type == ntype


@pytest.mark.parametrize("ntype", ["door", "", "FILE", "whiteout"])
def test_unknown_type_is_damaged(ntype: str) -> None:
    """An entry of an unknown type raises DamagedObject naming the tree."""
    data = encode_tree([Node(b"ok", "file"), Node(b"x", ntype)])
    with pytest.raises(DamagedObject, match=f"{NAME}: entry of unknown type"):
        decode_tree(data, name=NAME)


@pytest.mark.parametrize(
    "node",
    [
        pytest.param(Node(b"f", "file", content=[ID, b"\x11" * 31]), id="short-content-id"),
        pytest.param(Node(b"f", "file", content=[b"\x11" * 33]), id="long-content-id"),
        pytest.param(Node(b"d", "dir", subtree=b""), id="empty-subtree"),
        pytest.param(Node(b"d", "dir", subtree=b"\x11" * 16), id="short-subtree"),
        pytest.param(Node(b"f", "file", content_lists=[b"x"]), id="short-list-id"),
        pytest.param(Node(b"f", "file", content=["x" * 32]), id="str-content-id"),  # type: ignore[list-item]
    ],
)
def test_malformed_ids_are_damaged(node: Node) -> None:
    """A content, subtree or list id that is not 32 bytes raises DamagedObject."""
    with pytest.raises(DamagedObject, match=NAME):
        decode_tree(encode_tree([node]), name=NAME)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xc1", id="bad-msgpack"),
        pytest.param(msgpack.packb([TREE_VERSION + 1, []]), id="unknown-version"),
        pytest.param(msgpack.packb([TREE_VERSION]), id="no-rows"),
        pytest.param(msgpack.packb({"a": 1}), id="map"),
        pytest.param(msgpack.packb([TREE_VERSION, [[b"x"]]]), id="row-without-type"),
        pytest.param(msgpack.packb([TREE_VERSION, [5]]), id="row-not-a-list"),
        pytest.param(
            msgpack.packb([TREE_VERSION, [[b"x", "file", *[0] * 14, 3]]]), id="bad-xattrs"
        ),
        pytest.param(encode_tree([Node(b"x", "file")])[:-1], id="truncated"),
    ],
)
def test_malformed_tree_is_damaged(data: bytes) -> None:
    """Malformed tree bytes raise DamagedObject naming the tree."""
    with pytest.raises(DamagedObject, match=NAME):
        decode_tree(data, name=NAME)


@pytest.mark.parametrize(
    "row",
    [
        pytest.param(["a-str-name", "file"], id="str-name"),
        pytest.param([None, "file"], id="nil-name"),
        pytest.param([b"x", "file", "0644"], id="str-mode"),
        pytest.param([b"x", "file", 0, 0, 0, "", "", 1.5], id="float-mtime"),
        pytest.param([b"x", "file", 0, 0, 0, "", "", 0, 0, 0, None], id="nil-size"),
        pytest.param([b"x", "file", 0, [], 0], id="list-uid"),
    ],
)
def test_fields_of_wrong_type_are_damaged(row: list[object]) -> None:
    """An entry with a non-bytes name or a non-int numeric field raises DamagedObject."""
    data = msgpack.packb([TREE_VERSION, [row]], use_bin_type=True)
    with pytest.raises(DamagedObject, match=NAME):
        decode_tree(data, name=NAME)


def test_extra_trailing_fields_are_ignored() -> None:
    """Fields appended by a later version are ignored, so old readers can read new trees."""
    row = msgpack.unpackb(encode_tree([Node(b"x", "file", size=5)]))[1][0]
    data = msgpack.packb([TREE_VERSION, [[*row, "future field"]]], use_bin_type=True)
    assert decode_tree(data) == [Node(b"x", "file", size=5)]


@given(st.binary(max_size=200))
def test_random_bytes_raise_only_damaged_object(data: bytes) -> None:
    """Arbitrary bytes either decode or raise DamagedObject, never another exception."""
    with contextlib.suppress(DamagedObject):
        decode_tree(data, name=NAME)


@given(st.lists(blob_ids, max_size=50))
def test_content_list_round_trip(ids: list[bytes]) -> None:
    """decode_content_list(encode_content_list(ids)) == ids."""
    assert decode_content_list(encode_content_list(ids)) == ids


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(msgpack.packb([TREE_VERSION, [b"\x01" * 31]]), id="short-id"),
        pytest.param(msgpack.packb([TREE_VERSION + 1, []]), id="unknown-version"),
        pytest.param(msgpack.packb([TREE_VERSION, 5]), id="ids-not-a-list"),
        pytest.param(msgpack.packb([TREE_VERSION, [5]]), id="id-not-bytes"),
    ],
)
def test_malformed_content_list_is_damaged(data: bytes) -> None:
    """A malformed list blob raises DamagedObject naming it."""
    with pytest.raises(DamagedObject, match="list blob 42"):
        decode_content_list(data, name="list blob 42")
