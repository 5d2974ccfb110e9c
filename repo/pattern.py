"""restic-style path patterns for --exclude and --include (docs/usage.md, patterns)."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def _class(part: str, i: int) -> tuple[str, int]:
    """Translate the character class opening at part[i]; returns (regex, next index)."""
    j = i + 1
    negate = j < len(part) and part[j] in "^!"
    j += negate
    body: list[str] = []
    while j < len(part) and (part[j] != "]" or not body):
        c = part[j]
        if c == "\\" and j + 1 < len(part):
            j += 1
            body.append(re.escape(part[j]))  # an escaped character is always literal
        else:
            body.append("\\" + c if c in "\\[]" else c)  # an unescaped "-" makes a range
        j += 1
    if j >= len(part):
        return re.escape(part[i]), i + 1  # no closing bracket: a literal "["
    return "[" + ("^" if negate else "") + "".join(body) + "]", j + 1


def _component(part: str, ignores_case: bool) -> re.Pattern[str] | None:
    """One path component as a regex, with the syntax of Go's filepath.Match (restic's):
    `*`, `?`, `[...]`, `[^...]` and backslash escapes. None stands for `**`."""
    if part == "**":
        return None
    out: list[str] = []
    i = 0
    while i < len(part):
        c = part[i]
        if c == "\\" and i + 1 < len(part):
            out.append(re.escape(part[i + 1]))
            i += 2
            continue
        if c == "[":
            regex, i = _class(part, i)
            out.append(regex)
            continue
        out.append(".*" if c == "*" else "." if c == "?" else re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL | (re.IGNORECASE if ignores_case else 0))


@dataclass(frozen=True, slots=True)
class Pattern:
    """A compiled pattern; unanchored ones match at any depth."""

    text: str
    parts: tuple[re.Pattern[str] | None, ...]

    @classmethod
    def compile(cls, text: str, *, ignores_case: bool = False) -> Pattern:
        """Compile a pattern; with ignores_case, letters match either case (--iexclude)."""
        anchored = text.startswith("/")
        parts = [p for p in text.strip("/").split("/") if p]
        if not anchored:
            parts.insert(0, "**")
        return cls(text, tuple(_component(p, ignores_case) for p in parts))

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

    def __init__(self, patterns: Iterable[str], *, ignores_case: bool = False) -> None:
        self.patterns = [Pattern.compile(p, ignores_case=ignores_case) for p in patterns if p]

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
