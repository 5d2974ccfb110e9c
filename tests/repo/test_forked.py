"""Tests for repo.forked: jobs run in a forked child by number, results and exceptions
come back, a child that dies is an error, and children do not hold each other open."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from repo import forked
from repo.errors import RepoError
from repo.forked import Forked, WorkerDied


class Unpicklable(Exception):
    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("cannot pickle this")


def test_jobs_run_in_the_child_on_its_copy_of_memory() -> None:
    """The child sees what this process had when it forked, and runs jobs in order,
    however many are sent ahead."""
    table = {1: "one", 2: "two", 3: "three"}
    child = Forked(lambda number: (os.getpid(), table[number]))
    table[1] = "changed after the fork"
    try:
        for number in (1, 2, 3):
            child.send(number)
        answers = [child.receive() for _ in range(3)]
        assert child.call(2) == (child.pid, "two")
    finally:
        child.close()
    assert answers == [(child.pid, "one"), (child.pid, "two"), (child.pid, "three")]
    assert child.pid != os.getpid()


def test_what_a_job_raises_is_raised_in_the_parent() -> None:
    def run(number: int) -> object:
        if number == 1:
            raise FileNotFoundError(2, "No such file or directory")
        raise Unpicklable("odd")

    child = Forked(run)
    try:
        with pytest.raises(FileNotFoundError, match="No such file"):
            child.call(1)
        with pytest.raises(RepoError, match="Unpicklable: odd"):
            child.call(2)
        with pytest.raises(FileNotFoundError):  # the child goes on after a failure
            child.call(1)
    finally:
        child.close()


def test_a_child_that_dies_is_an_error_naming_how() -> None:
    child = Forked(os._exit)
    with pytest.raises(WorkerDied, match="exit status 3"):
        child.call(3)
    with pytest.raises(WorkerDied, match="closed"):
        child.call(1)
    child.close()  # nothing left to wait for


def test_children_do_not_hold_each_other_open(tmp_path: Path) -> None:
    """Closing one child ends it while a later one lives: the later one closed its
    copies of the first one's pipes, and neither runs this process's exit handlers."""
    first = Forked(lambda number: number)
    second = Forked(lambda number: number * 2)
    assert first.call(1) == 1
    closed = threading.Thread(target=first.close, daemon=True)
    closed.start()
    closed.join(timeout=10)
    try:
        assert not closed.is_alive(), "the first child did not see the end of its orders"
        assert second.call(4) == 8
    finally:
        second.close()
    assert not forked._parent_ends


def test_a_refused_fork_leaves_no_pipe_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """EAGAIN from fork is raised, and the four pipe ends made for the child are closed."""

    def refuse() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    before = set(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(os, "fork", refuse)
    with pytest.raises(OSError, match="temporarily unavailable"):
        Forked(lambda number: number)
    assert set(os.listdir("/proc/self/fd")) == before


def test_orders_to_a_dead_child_are_an_error() -> None:
    """A child that died before its next order: sending it fails as WorkerDied, not as
    a broken pipe."""
    child = Forked(os._exit)
    child.send(0)
    with open(f"/proc/{child.pid}/stat") as stat:  # wait until it is a zombie
        while stat.read().split(") ")[-1][0] != "Z":
            time.sleep(0.001)
            stat.seek(0)
    try:
        with pytest.raises(WorkerDied, match="Broken pipe"):
            child.send(1)
    finally:
        child.close()


@pytest.mark.parametrize("written", [b"\x05\x00", b"\x05\x00\x00\x00ab"])
def test_a_frame_cut_short_is_an_error(written: bytes) -> None:
    """A header or a payload that ends early (a child killed while it wrote)."""
    read_end, write_end = os.pipe()
    os.write(write_end, written)
    os.close(write_end)
    try:
        with pytest.raises(WorkerDied, match="cut short"):
            forked._read_frame(read_end)
    finally:
        os.close(read_end)
