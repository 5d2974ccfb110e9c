"""A worker process forked from this one, for work that is mostly system calls.

A thread that makes a system call hands the interpreter's lock over and must win it
back afterwards; with two threads each creating small files, those handovers cost more
than the calls (a restore of 48,000 files took longer on two threads than on one). A
forked child has an interpreter of its own. It also has a copy of everything this
process had planned when it was forked, so only job numbers go to it and small results
come back, pickled: the child is this same program, so its pickles are trusted.

The child runs jobs only: it never returns into the caller's stack, runs no `atexit`
callback (the repository lock is the parent's to release) and writes nothing to stdout
or stderr. It needs no lock another thread could hold at the fork: the threads alive
then (the lock refresher, a progress display) take the interpreter's lock around
everything but system calls, and the child takes none of their Python locks, nor those
of stdout and stderr.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
import warnings
from collections.abc import Callable

from repo.errors import RepoError
from repo.pipes import PipeEnded, read_exactly, write_all

_HEADER = struct.Struct("<I")
# This process's ends of the pipes of the children it has running: a child forked
# later closes its copies, so that each child sees the end of its orders when its
# parent closes them.
_parent_ends: set[int] = set()


class WorkerDied(RepoError):
    """The child ended without answering (killed, or out of memory)."""


def can_fork() -> bool:
    """Whether this system can fork without exec: not Windows (no fork), not macOS
    (its system frameworks may crash a child forked without exec; Python's own
    multiprocessing spawns there)."""
    return hasattr(os, "fork") and sys.platform != "darwin"


class Forked:
    """A child process that calls run(number) for each number it is given."""

    def __init__(self, run: Callable[[int], object]) -> None:
        orders_r, orders_w = os.pipe()
        results_r, results_w = os.pipe()
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns of forking with threads alive: see the module doc.
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
        except OSError:
            for fd in (orders_r, orders_w, results_r, results_w):
                os.close(fd)
            raise
        if pid == 0:  # the child
            code = 1
            try:
                for fd in (*_parent_ends, orders_w, results_r):
                    os.close(fd)
                _serve(run, orders_r, results_w)
                code = 0
            finally:
                os._exit(code)
        os.close(orders_r)
        os.close(results_w)
        self.pid = pid
        self._orders: int | None = orders_w
        self._results = results_r
        _parent_ends.update((orders_w, results_r))

    def call(self, number: int) -> object:
        """The child's result for job `number`; what it raised is raised here."""
        self.send(number)
        return self.receive()

    def send(self, number: int) -> None:
        """Give the child job `number`, to do after those it was given before."""
        if self._orders is None:
            raise WorkerDied("worker process closed")
        try:
            write_all(self._orders, _HEADER.pack(number))
        except OSError as exc:
            raise WorkerDied(f"worker process {self.pid}: {exc.strerror}") from exc

    def receive(self) -> object:
        """The result of the oldest job sent and not yet received; what it raised is
        raised here."""
        if self._orders is None:
            raise WorkerDied("worker process closed")
        try:
            payload = _read_frame(self._results)
        except OSError as exc:
            raise WorkerDied(f"worker process {self.pid}: {exc.strerror}") from exc
        if payload is None:
            self._close_pipes()
            raise WorkerDied(f"worker process {self.pid} ended: {self._reap()}")
        is_ok, value = pickle.loads(payload)  # noqa: S301 - from our own child
        if not is_ok:
            raise value
        return value

    def close(self) -> None:
        """Tell the child to stop, and wait for it."""
        if self._orders is not None:
            self._close_pipes()
            self._reap()

    def _close_pipes(self) -> None:
        if self._orders is not None:
            for fd in (self._orders, self._results):
                os.close(fd)
                _parent_ends.discard(fd)
            self._orders = None

    def _reap(self) -> str:
        try:
            _pid, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            return "already reaped"
        if os.WIFSIGNALED(status):
            return f"killed by signal {os.WTERMSIG(status)}"
        return f"exit status {os.waitstatus_to_exitcode(status)}"


def _serve(run: Callable[[int], object], orders: int, results: int) -> None:
    # Ctrl-C reaches the whole process group: the parent stops the children by
    # closing their orders, once the job each is on is done.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while True:
        try:
            frame = read_exactly(orders, _HEADER.size)
        except PipeEnded:  # the parent closed the orders (or died)
            return
        (number,) = _HEADER.unpack(frame)
        try:
            reply = pickle.dumps((True, run(number)))
        except Exception as exc:  # raised again in the parent
            try:
                reply = pickle.dumps((False, exc))
            except Exception:  # one that pickle cannot carry
                reply = pickle.dumps((False, RepoError(f"{type(exc).__name__}: {exc}")))
        write_all(results, _HEADER.pack(len(reply)) + reply)


def _read_frame(fd: int) -> bytes | None:
    """The next frame's payload; None if the pipe ends before it."""
    try:
        header = read_exactly(fd, _HEADER.size)
    except PipeEnded as exc:
        if exc.got:
            raise WorkerDied("a worker process's frame was cut short") from exc
        return None
    (size,) = _HEADER.unpack(header)
    try:
        return read_exactly(fd, size)
    except PipeEnded as exc:
        raise WorkerDied("a worker process's frame was cut short") from exc
