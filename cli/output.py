"""Printing: human text, JSON, errors on stderr, and the progress line on a terminal."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from repo.snapshot import Snapshot


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")


def say(text: str, *, is_quiet: bool = False) -> None:
    if not is_quiet:
        sys.stdout.write(text + "\n")


def warn(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def show_path(path: bytes | str) -> str:
    if isinstance(path, bytes):
        return path.decode("utf-8", "backslashreplace")
    return path


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Counts files and bytes; on a terminal, a line on stderr refreshed four times a second."""

    def __init__(self, *, is_shown: bool, verb: str = "processed") -> None:
        self.files = 0
        self.bytes = 0
        self.total_bytes: int | None = None
        self.errors = 0
        self.verb = verb
        self._start = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if is_shown:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self._start, 1e-6)
        rate = self.bytes / elapsed
        text = (
            f"[{format_duration(elapsed)}] {self.files} files, {format_bytes(self.bytes)} "
            f"{self.verb}, {format_bytes(rate)}/s"
        )
        if self.total_bytes and rate > 0:
            left = max(self.total_bytes - self.bytes, 0) / rate
            done = min(100.0, 100.0 * self.bytes / self.total_bytes)
            text += (
                f", {done:.1f}% of {format_bytes(self.total_bytes)}, ETA {format_duration(left)}"
            )
        if self.errors:
            text += f", {self.errors} errors"
        return text

    def _loop(self) -> None:
        while not self._stop.wait(0.25):
            sys.stderr.write("\r\x1b[K" + self.line())
            sys.stderr.flush()

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self._thread = None


def snapshot_table(
    snaps: Sequence[Snapshot], reasons: dict[str, tuple[str, ...]] | None
) -> list[str]:
    """Snapshots oldest first, restic's layout; reasons and paths take a line each."""
    header = ["ID", "Time", "Host", "Tags", *(["Reasons"] if reasons is not None else []), "Paths"]
    rows: list[list[list[str]]] = []
    for s in sorted(snaps, key=lambda s: (s.time_ns, s.id)):
        cells = [
            [s.short_id],
            [f"{s.datetime:%Y-%m-%d %H:%M:%S}"],
            [s.hostname],
            [",".join(s.tags)],
        ]
        if reasons is not None:
            cells.append(list(reasons.get(s.id, ())))
        rows.append([*cells, s.str_paths()])
    widths = [max([len(h)] + [len(x) for r in rows for x in r[i]]) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths)
    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    lines = [fmt.format(*header).rstrip(), rule]
    for row in rows:
        for n in range(max(1, *(len(cell) for cell in row))):
            lines.append(fmt.format(*(c[n] if n < len(c) else "" for c in row)).rstrip())
    return [*lines, rule, f"{len(rows)} snapshots", ""]
