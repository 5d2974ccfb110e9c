"""Whole writes and exact reads on the pipes between hutch and the processes it starts
(its workers, ssh, rclone), and the end of those processes.

Read from the descriptor itself, not through a buffered reader: one would take the
start of the next frame into its buffer, where select() cannot see it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # its callers have it; a restore, which reads pipes, does not need it
    import subprocess


class PipeEnded(EOFError):
    """The pipe ended before all the bytes asked for; `got` of them had come."""

    def __init__(self, got: int, wanted: int) -> None:
        super().__init__(f"the pipe ended after {got} of {wanted} bytes")
        self.got = got


def write_all(fd: int, data: bytes) -> None:
    """Write all of data: a pipe may take a large write in parts."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_exactly(fd: int, n: int) -> bytes:
    """The next n bytes of the pipe. Raises PipeEnded if it ends first, and OSError as
    the reads do."""
    parts = []
    got = 0
    while got < n:
        part = os.read(fd, n - got)
        if not part:
            raise PipeEnded(got, n)
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def end_process(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Wait up to `timeout` seconds for a process asked to end, then kill it."""
    import subprocess  # noqa: PLC0415 - see TYPE_CHECKING

    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
