"""restic-style path patterns for --exclude and --include (docs/usage.md, patterns)."""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def _component(part: str) -> re.Pattern[str] | None:
    """One path component as a regex; None stands for `**` (any number of components)."""
    if part == "**":
        return None
    # Go's filepath.Match (restic) negates a class with ^, fnmatch with !.
    return re.compile(fnmatch.translate(part.replace("[^", "[!")), re.DOTALL)


@dataclass(frozen=True, slots=True)
class Pattern:
    """A compiled pattern; unanchored ones match at any depth."""

    text: str
    parts: tuple[re.Pattern[str] | None, ...]

    @classmethod
    def compile(cls, text: str) -> Pattern:
        anchored = text.startswith("/")
        parts = [p for p in text.strip("/").split("/") if p]
        if not anchored:
            parts.insert(0, "**")
        return cls(text, tuple(_component(p) for p in parts))

    def matches(self, path: Sequence[str]) -> bool:
        """Whether the path (its components) or one of its ancestors matches."""
        return _match(self.parts, tuple(path), child=False)

    def may_match_below(self, path: Sequence[str]) -> bool:
        """Whether something below this directory could match (for --include)."""
        return _match(self.parts, tuple(path), child=True)


@functools.lru_cache(maxsize=65536)
def _match(pat: tuple[re.Pattern[str] | None, ...], parts: tuple[str, ...], child: bool) -> bool:
    if not pat:
        return True
    if not parts:
        return child or all(p is None for p in pat)
    head = pat[0]
    if head is None:
        return _match(pat[1:], parts, child) or _match(pat, parts[1:], child)
    return bool(head.fullmatch(parts[0])) and _match(pat[1:], parts[1:], child)


def split_path(path: bytes) -> tuple[str, ...]:
    """Components of an absolute snapshot path, decoded as names are shown."""
    return tuple(p.decode("utf-8", "surrogateescape") for p in path.split(b"/") if p)


class PatternSet:
    """Any-of semantics over several patterns."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = [Pattern.compile(p) for p in patterns if p]

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, path: Sequence[str]) -> bool:
        return any(p.matches(path) for p in self.patterns)

    def may_match_below(self, path: Sequence[str]) -> bool:
        return any(p.may_match_below(path) for p in self.patterns)


def read_pattern_file(text: str) -> list[str]:
    """Patterns of an --exclude-file: one a line; blank lines and # comments skipped."""
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out
