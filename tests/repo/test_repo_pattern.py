"""Tests for repo.pattern: restic's --exclude/--include pattern semantics."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from repo.pattern import Pattern, PatternSet, read_pattern_file, split_path


def _parts(path: str) -> tuple[str, ...]:
    return tuple(p for p in path.split("/") if p)


def matches(pattern: str, path: str) -> bool:
    return Pattern.compile(pattern).matches(_parts(path))


def below(pattern: str, path: str) -> bool:
    return Pattern.compile(pattern).may_match_below(_parts(path))


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        # unanchored globs match at any depth
        ("*.go", "/main.go", True),
        ("*.go", "/src/pkg/deep/x.go", True),
        ("*.go", "/src/main.goo", False),
        ("*.go", "/src/go", False),
        # anchored patterns start at the root
        ("/a/b", "/a/b", True),
        ("/a/b", "/x/a/b", False),
        ("/a/b", "/a", False),
        ("/a/b", "/a/bc", False),
        # unanchored multi-component patterns match any suffix position
        ("a/b", "/a/b", True),
        ("a/b", "/x/a/b", True),
        ("a/b", "/x/y/a/b", True),
        ("a/b", "/a/x/b", False),
        # ** spans zero or more components
        ("/a/**/z", "/a/z", True),
        ("/a/**/z", "/a/b/z", True),
        ("/a/**/z", "/a/b/c/z", True),
        ("/a/**/z", "/b/a/z", False),
        ("/a/**/z", "/a/b/c", False),
        ("**/z", "/z", True),
        ("/**/z", "/q/r/z", True),
        # ? is exactly one character
        ("/fo?", "/foo", True),
        ("/fo?", "/fo", False),
        ("/fo?", "/fooo", False),
        # character classes and their negation (Go's ^)
        ("/[abc].txt", "/b.txt", True),
        ("/[abc].txt", "/d.txt", False),
        ("/[^a].txt", "/b.txt", True),
        ("/[^a].txt", "/a.txt", False),
        ("/[a-c]x", "/bx", True),
        # * does not cross a component boundary
        ("/a*z", "/ab/cz", False),
        ("/a/*", "/a/b", True),
        # names with dots, spaces and regex characters are literal
        ("/a.b", "/axb", False),
        ("/(x)+", "/(x)+", True),
        ("/a b", "/a b", True),
    ],
)
def test_matches(pattern: str, path: str, expected: bool) -> None:
    """Each pattern matches exactly as restic's filter would."""
    assert matches(pattern, path) is expected


@pytest.mark.parametrize(
    ("pattern", "path"),
    [
        ("/a", "/a/b/c"),
        ("/a/b", "/a/b/c.txt"),
        ("node_modules", "/p/node_modules/lib/x.js"),
        ("*.cache", "/home/u/x.cache/sub/file"),
        ("/a/**/z", "/a/b/z/inner"),
    ],
)
def test_matching_directory_matches_descendants(pattern: str, path: str) -> None:
    """A pattern that matches a directory also matches everything below it."""
    assert matches(pattern, path)


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("/a/b/c", "/a", True),
        ("/a/b/c", "/a/b", True),
        ("/a/b/c", "/x", False),
        ("/a/b/c", "/a/x", False),
        ("*.go", "/anything/at/all", True),
        ("/a/**/z", "/a/q/r", True),
        ("/a/**/z", "/b", False),
        ("/a/*/c", "/a/whatever", True),
        ("/a", "/a/deeper", True),
    ],
)
def test_may_match_below(pattern: str, path: str, expected: bool) -> None:
    """may_match_below says whether an --include could select something inside a directory."""
    assert below(pattern, path) is expected


@given(st.lists(st.text(alphabet="abcxyz.", min_size=1, max_size=4), min_size=1, max_size=5))
def test_literal_anchored_pattern_matches_itself_and_below(parts: list[str]) -> None:
    """An anchored literal pattern matches its path and descendants; ancestors may lead to it."""
    pattern = Pattern.compile("/" + "/".join(parts))
    assert pattern.matches(tuple(parts))
    assert pattern.matches((*parts, "child"))
    for i in range(len(parts)):
        assert pattern.may_match_below(tuple(parts[:i]))


@given(
    prefix=st.lists(st.text(alphabet="abc", min_size=1, max_size=3), max_size=4),
    name=st.text(alphabet="abc", min_size=1, max_size=3),
)
def test_unanchored_name_matches_at_any_depth(prefix: list[str], name: str) -> None:
    """An unanchored one-component pattern matches that name under any prefix."""
    assert Pattern.compile(name).matches((*prefix, name))


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("/foo\\*", "/foo*", True),
        ("/foo\\*", "/fooX", False),
        ("/foo\\*", "/foo\\X", False),
        ("/a\\?", "/a?", True),
        ("/a\\?", "/ab", False),
        ("/\\[x]", "/[x]", True),
        ("/\\[x]", "/x", False),
        ("/a\\\\b", "/a\\b", True),
        ("/[\\]]", "/]", True),
        ("/[a\\]b]", "/]", True),
    ],
)
def test_backslash_escapes(pattern: str, path: str, expected: bool) -> None:
    """As in restic (Go's filepath.Match), a backslash makes the next character literal."""
    assert matches(pattern, path) is expected


@pytest.mark.parametrize(("path", "expected"), [("/-", True), ("/m", False)])
def test_escaped_hyphen_in_class_is_literal(path: str, expected: bool) -> None:
    """In Go's filepath.Match `[a\\-z]` is the set {a, -, z}, not the range a-z."""
    assert matches("/[a\\-z]", path) is expected


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("/[", "/[", True),
        ("/a[b", "/a[b", True),
        ("/[]]", "/]", True),
        ("/[!a]", "/b", True),
        ("/[!a]", "/a", False),
    ],
)
def test_bracket_edge_cases(pattern: str, path: str, expected: bool) -> None:
    """An unclosed `[` is literal, `]` first in a class is a member, `[!...]` negates too."""
    assert matches(pattern, path) is expected


def test_pattern_set_is_any_of() -> None:
    """A PatternSet matches when any of its patterns does; empty patterns are dropped."""
    patterns = PatternSet(["", "*.o", "/tmp"])
    assert len(patterns.patterns) == 2
    assert patterns
    assert patterns.matches(("src", "x.o"))
    assert patterns.matches(("tmp", "y"))
    assert not patterns.matches(("src", "x.c"))
    assert patterns.may_match_below(("tmp",))


def test_empty_pattern_set_is_false() -> None:
    """A PatternSet without patterns is falsy and matches nothing."""
    patterns = PatternSet([])
    assert not patterns
    assert not patterns.matches(("a",))


def test_split_path_decodes_bytes() -> None:
    """split_path drops empty components and keeps undecodable bytes as surrogates."""
    assert split_path(b"/a//b/") == ("a", "b")
    assert split_path(b"/caf\xe9") == ("caf\udce9",)


def test_non_utf8_name_can_be_matched() -> None:
    """A pattern reaches non-UTF-8 names through their surrogate-escaped form."""
    assert Pattern.compile("/caf?").matches(split_path(b"/caf\xe9"))


def test_read_pattern_file() -> None:
    """Blank lines and # comments are skipped; surrounding whitespace is stripped."""
    text = "# comment\n\n*.o\n   \n  /tmp  \n\t# indented comment\nnode_modules\r\n"
    assert read_pattern_file(text) == ["*.o", "/tmp", "node_modules"]


def test_read_empty_pattern_file() -> None:
    """A file with only comments yields no patterns."""
    assert read_pattern_file("#a\n#b\n") == []
