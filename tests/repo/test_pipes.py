"""Tests for repo.pipes: exact reads, whole writes, and ending a started process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from repo.pipes import PipeEnded, end_process, read_exactly, write_all


def test_read_exactly_gathers_parts_and_names_what_came_before_the_end() -> None:
    """Bytes written in parts come back whole; a pipe that ends short says how many came."""
    reader, writer = os.pipe()
    try:
        os.write(writer, b"abc")
        os.write(writer, b"def")
        assert read_exactly(reader, 4) == b"abcd"
        os.close(writer)
        writer = -1
        with pytest.raises(PipeEnded) as ended:
            read_exactly(reader, 5)
        assert ended.value.got == 2
    finally:
        os.close(reader)
        if writer >= 0:
            os.close(writer)


def test_write_all_writes_more_than_the_pipe_takes_at_once() -> None:
    """A write larger than the pipe's buffer goes out whole while the other end reads."""
    data = os.urandom(1024 * 1024)
    reader, writer = os.pipe()
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"],
        stdin=reader,
        stdout=subprocess.PIPE,
    )
    os.close(reader)
    write_all(writer, data)
    os.close(writer)
    out, _ = child.communicate(timeout=30)
    assert out == data


def test_end_process_kills_one_that_does_not_end() -> None:
    """A process that ignores being asked to end is killed once the wait is over."""
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print(1, flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert child.stdout is not None
    child.stdout.readline()  # its handler is in place
    child.terminate()
    start = time.monotonic()
    end_process(child, timeout=0.3)
    assert child.returncode == -signal.SIGKILL
    assert time.monotonic() - start < 10
    child.stdout.close()


def test_end_process_waits_for_one_that_ends() -> None:
    """A process that ends by itself is waited for, not killed."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])
    end_process(child, timeout=30)
    assert child.returncode == 0
