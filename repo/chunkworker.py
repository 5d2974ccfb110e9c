"""The chunk boundaries of large files, found in a second process (docs/design.md,
"Backup rules").

fastcdc holds the interpreter's lock while it scans, at about 1 GB/s. On a large file
that does not compress, the archiver's thread, which also reads, names and hands out
every chunk, was the limit of the whole backup, and the second core was mostly idle.
So a worker process finds the boundaries: the archiver passes it the open file; the
worker reads and chunks it a window at a time and answers each window with the lengths
of its chunks; the archiver reads the bytes between them (from the page cache: the
worker has just read them) and names and stores each chunk as before. The worker runs
the chunker's own window loop (iter_cut_lengths) on the same bytes, so a file's chunks
are the same wherever it was chunked, and deduplication does not depend on it.

The archiver takes the lengths as hints: it stores the bytes it reads itself, and
chunks the rest of a file itself from the last boundary when the worker fails, or when
the file ends before the lengths do.

Orders are packets on a Unix socket (the worker's stdin): b"F" with the file's
descriptor, b"+" for each answer taken (the worker runs at most AHEAD windows ahead of
them, so a file larger than the page cache is not read twice from disk), b"X" to drop
the file. Answers are frames on a pipe (its stdout): a 4-byte little-endian length and
a status byte, then the chunk lengths as native 32-bit integers (MORE), nothing (READY,
END) or an errno and message (FAILED).
"""

from __future__ import annotations

import array
import contextlib
import errno
import os
import select
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Generator
from typing import IO

from chunker import ChunkerError, ChunkerParams, iter_cut_lengths
from repo.errors import RepoError
from repo.pipes import PipeEnded, end_process, read_exactly, write_all

_HEADER = struct.Struct("<IB")
_FAILURE = struct.Struct("<i")
READY, MORE, END, FAILED = range(4)
# Windows the worker may chunk beyond the answers the archiver has taken.
AHEAD = 4
_ORDER_SIZE = 16
_MAX_FDS = 4


def is_supported() -> bool:
    """Whether this system has what the worker needs: Unix sockets of packets that
    carry descriptors (not macOS's), and preadv."""
    return (
        sys.platform not in ("darwin", "win32")
        and hasattr(socket, "SOCK_SEQPACKET")
        and hasattr(socket, "CMSG_LEN")
        and hasattr(os, "preadv")
    )


class WorkerFailed(RepoError):
    """The chunk worker stopped, or answered out of turn: the archiver chunks itself."""


class CutsFailed(RepoError):
    """The worker could not read or chunk one file; it goes on serving others."""


class ChunkWorker:
    """The archiver's side: starts the worker and gives the chunk lengths of files."""

    def __init__(self, params: ChunkerParams, window: int) -> None:
        # The worker imports this checkout's package, whatever the working directory
        # holds (-P: the current directory is not put on sys.path).
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        code = f"import sys; sys.path.insert(0, {root!r}); import repo.chunkworker as w; w.serve()"
        sizes = (params.min_size, params.avg_size, params.max_size, window)
        orders, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-P", "-c", code, params.algorithm, *map(str, sizes)],
                stdin=theirs.fileno(),
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                bufsize=0,
            )
        except BaseException:
            orders.close()
            raise
        finally:
            theirs.close()
        if self._proc.stdout is None:
            raise RuntimeError("the worker's pipe was not made")
        self._orders = orders
        self._answers: IO[bytes] = self._proc.stdout
        self._is_ready = False
        self._is_busy = False  # a file was given and its end not taken
        self.is_broken = False

    def is_ready(self, *, is_waiting: bool = False) -> bool:
        """Whether the worker has started (it imports for some 70 ms); waits for it only
        if `is_waiting`."""
        if self._is_ready or self.is_broken:
            return self._is_ready and not self.is_broken
        if not is_waiting and not select.select([self._answers], [], [], 0)[0]:
            return False
        with contextlib.suppress(WorkerFailed):
            self._is_ready = self._answer()[0] == READY
        self.is_broken = not self._is_ready
        return self._is_ready

    def cut_lengths(self, fd: int) -> Generator[list[int], None, None]:
        """The lengths of the chunks of the open file `fd` from its start, a list per
        window. Raises CutsFailed if the worker could not read or chunk it, and
        WorkerFailed if the worker stopped; closed early, it stops the worker's work on
        the file."""
        if not self.is_ready(is_waiting=True):
            raise WorkerFailed("the chunk worker did not start")
        if self._is_busy:
            raise RuntimeError("the chunk worker was given a file before the last one ended")
        self._order(b"F", fd)
        self._is_busy = True
        is_done = False
        try:
            while True:
                status, body = self._answer()
                if status == MORE:
                    self._order(b"+")
                    lengths = array.array("I")
                    lengths.frombytes(body)
                    yield lengths.tolist()
                    continue
                is_done = True
                if status == END:
                    return
                if status == FAILED and len(body) >= _FAILURE.size:
                    (code,) = _FAILURE.unpack_from(body)
                    message = body[_FAILURE.size :].decode(errors="replace")
                    raise CutsFailed(f"the chunk worker: {message} (errno {code})")
                raise self._broken("the chunk worker answered out of turn")
        finally:
            if not is_done and not self.is_broken:
                self._drop_file()
            self._is_busy = False

    def _drop_file(self) -> None:
        """Stop the worker's work on the file, and skip its answers up to the end."""
        with contextlib.suppress(WorkerFailed):
            self._order(b"X")
            while self._answer()[0] == MORE:
                pass

    def _order(self, order: bytes, fd: int | None = None) -> None:
        try:
            if fd is None:
                self._orders.send(order)
            else:
                socket.send_fds(self._orders, [order], [fd])
        except OSError as exc:
            raise self._broken(f"the chunk worker's socket: {exc.strerror}") from exc

    def _answer(self) -> tuple[int, bytes]:
        """The next frame: its status and body."""
        header = self._read_exactly(_HEADER.size)
        length, status = _HEADER.unpack(header)
        return status, self._read_exactly(length)

    def _read_exactly(self, n: int) -> bytes:
        try:
            return read_exactly(self._answers.fileno(), n)
        except PipeEnded as exc:
            raise self._broken("the chunk worker stopped") from exc
        except OSError as exc:
            raise self._broken(f"the chunk worker's pipe: {exc.strerror}") from exc

    def _broken(self, message: str) -> WorkerFailed:
        self.is_broken = True
        return WorkerFailed(message)

    def close(self) -> None:
        """End the worker: it stops at the end of its orders."""
        self._orders.close()
        end_process(self._proc)
        self._answers.close()


# -- the worker ----------------------------------------------------------------------


def serve() -> None:
    """The worker's loop: a file in, its chunk lengths out, until the orders end."""
    # Ctrl-C reaches the whole process group: the archiver decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    algorithm, min_size, avg_size, max_size, window = sys.argv[1:6]
    params = ChunkerParams(algorithm, int(min_size), int(avg_size), int(max_size))
    buffer = bytearray(int(window))
    orders = socket.socket(fileno=sys.stdin.fileno())
    sink = sys.stdout.fileno()
    try:
        _write_frame(sink, READY)
        while True:
            order, fds = _receive(orders)
            if not order:
                return
            for fd in fds[1:]:
                os.close(fd)
            if order == b"F" and fds:
                try:
                    _cut_file(fds[0], params, buffer, orders, sink)
                finally:
                    os.close(fds[0])
            # else: a credit or a drop the archiver sent before it took the file's end
    except BrokenPipeError:
        return


def _receive(orders: socket.socket, flags: int = 0) -> tuple[bytes, list[int]]:
    """The next order, and the descriptors that came with it."""
    # Not socket.recv_fds, which drops its flags before Python 3.13 (MSG_DONTWAIT).
    fds = array.array("i")
    order, ancillary, _flags, _address = orders.recvmsg(
        _ORDER_SIZE, socket.CMSG_LEN(_MAX_FDS * fds.itemsize), flags
    )
    for level, kind, data in ancillary:
        if (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS):
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return order, fds.tolist()


def _cut_file(
    fd: int, params: ChunkerParams, buffer: bytearray, orders: socket.socket, sink: int
) -> None:
    position = 0

    def readinto(view: memoryview) -> int:
        nonlocal position
        n = os.preadv(fd, [view], position)
        position += n
        return n

    credits = AHEAD
    try:
        for lengths in iter_cut_lengths(readinto, params, buffer):
            _write_frame(sink, MORE, array.array("I", lengths).tobytes())
            credits -= 1
            # Take the credits that came, waiting for one when none is left.
            is_dropped = False
            while not is_dropped:
                try:
                    order, fds = _receive(orders, 0 if credits <= 0 else socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                for other in fds:  # no file is sent before this one's end
                    os.close(other)
                if order == b"+":
                    credits += 1
                else:  # b"X", or b"" when the archiver is gone
                    is_dropped = True
            if is_dropped:
                break
    except OSError as exc:
        message = f"{exc.strerror or exc}".encode()
        _write_frame(sink, FAILED, _FAILURE.pack(exc.errno or errno.EIO) + message)
        return
    except ChunkerError as exc:
        _write_frame(sink, FAILED, _FAILURE.pack(0) + str(exc).encode())
        return
    _write_frame(sink, END)


def _write_frame(fd: int, status: int, body: bytes = b"") -> None:
    write_all(fd, _HEADER.pack(len(body), status) + body)
