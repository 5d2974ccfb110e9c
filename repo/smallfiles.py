"""Small files read, named, compressed and sealed in a second process (docs/design.md,
"Backup rules").

A backup of many small files is bound by Python on one core: each file costs tens of
microseconds of system calls, compression, sealing and bookkeeping, and threads do not
help, since a thread back from a system call waits for the GIL the other one holds. So
the archiver hands batches of small files to a worker process. The worker reads each
file whole (a small file is one chunk), names it by its keyed hash, compresses and
seals it; the archiver keeps the rest: deduplication against the index, packs, trees.
The worker writes nothing to the repository and holds no state between batches.

Frames on both pipes are a 4-byte little-endian length and a msgpack value.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import struct
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Sequence
from typing import IO, Any

import msgpack

from repo.errors import RepoError
from repo.fsmeta import read_xattrs
from repo.pipes import PipeEnded, end_process, read_exactly, write_all
from repo.readahead import open_for_reading

_LENGTH = struct.Struct("<I")
# Files of at most this many bytes go to the worker: well under the smallest chunk, so
# each is one blob. Their cost is per file; larger files cost by their bytes, which the
# archiver's two compression threads share, where the worker is one (at 64 KiB the
# archiver waited for the worker through a quarter of a backup of /usr/share).
MAX_SIZE = 16 * 1024
# A batch holds at most this many files and this many bytes of them; the first of a
# folder's batches is smaller, so the worker starts while the archiver sends the next.
BATCH_FILES = 64
FIRST_BATCH_FILES = 16
BATCH_BYTES = 1024 * 1024
# Paths in a batch. All batches sent and not answered must fit in half the pipe to the
# worker, else the archiver, writing one more, and the worker, writing a reply the
# archiver does not read yet, would wait on each other: so at most BATCHES_AHEAD, and
# fewer if the pipe is small.
BATCH_PATH_BYTES = 8 * 1024
BATCHES_AHEAD = 16
# The size asked for both pipes (Linux's default most for a user): the worker runs ahead
# of the archiver by up to this many bytes of replies, through small folders whose few
# files the archiver takes only now and then.
PIPE_SIZE = 1024 * 1024
# Results received and not taken yet hold at most about this many bytes (the rest wait
# in the pipe): the archiver takes replies as they come while it stats the entries
# ahead of them, and its resident memory is added to the worker's.
READY_BYTES = 1024 * 1024

# What the worker says of one file: the first item of its result (the last is its path).
# [STORED, size read, mtime_ns after, blob id or None, sealed blob or None, xattrs]
STORED = 0
FAILED = 1  # [FAILED, errno, message]: what reading it raised
ELSEWHERE = 2  # [ELSEWHERE]: the archiver reads it (it changed size, or is not regular)

_READY = b"ready"
# The worker's naming and sealing of one file's bytes: (blob id, sealed), or Nones if empty.
_Store = Callable[[memoryview], tuple[bytes | None, bytearray | None]]


class WorkerFailed(RepoError):
    """The worker process stopped or answered out of turn."""


def _frame(value: Any) -> bytes:
    body: bytes = msgpack.packb(value, use_bin_type=True)
    return _LENGTH.pack(len(body)) + body


def _read_frame(fd: int) -> Any:
    """The next frame's value; WorkerFailed at the end of the stream."""
    (length,) = _LENGTH.unpack(_read_exactly(fd, _LENGTH.size))
    try:
        return msgpack.unpackb(_read_exactly(fd, length), raw=False)
    except ValueError as exc:  # msgpack's errors for bytes that are no frame
        raise WorkerFailed("the small-file worker answered out of turn") from exc


def _read_exactly(fd: int, n: int) -> bytes:
    try:
        return read_exactly(fd, n)
    except PipeEnded as exc:
        raise WorkerFailed("the small-file worker stopped") from exc
    except OSError as exc:  # not a file's error: the pipe's
        raise WorkerFailed(f"the small-file worker's pipe: {exc.strerror}") from exc


class SmallFileWorker:
    """The archiver's side: starts the worker, hands it files, and gives each file's
    result by its path."""

    def __init__(self, enc_key: bytes, id_key: bytes, level: int) -> None:
        # The worker imports this checkout's package, whatever the working directory
        # holds (-P: the current directory is not put on sys.path).
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        code = f"import sys; sys.path.insert(0, {root!r}); import repo.smallfiles as w; w.serve()"
        self._proc = subprocess.Popen(
            [sys.executable, "-P", "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            stderr=subprocess.DEVNULL,
        )
        if self._proc.stdin is None or self._proc.stdout is None:
            raise RuntimeError("the worker's pipes were not made")
        self._in: IO[bytes] = self._proc.stdin
        self._out = self._proc.stdout.fileno()
        capacity = min(_grow_pipe(self._in.fileno()), _grow_pipe(self._out))
        self._ahead = max(1, min(BATCHES_AHEAD, capacity // 2 // (BATCH_PATH_BYTES + 1024)))
        self._is_ready = False
        self.is_broken = False
        self._unsent: deque[tuple[bytes, int]] = deque()  # submitted, not yet sent
        self._sent: deque[int] = deque()  # the size of each batch sent, not answered
        self._ready: dict[bytes, list[Any]] = {}  # results received, not taken
        self._ready_bytes = 0
        self._owed: set[bytes] = set()  # files submitted and not taken
        import select  # noqa: PLC0415 - only a backup that starts a worker needs it

        self._select = select.select
        try:
            self._send({"enc": enc_key, "id": id_key, "level": level})
        except WorkerFailed:
            self.is_broken = True

    def is_ready(self, *, is_waiting: bool = False) -> bool:
        """Whether the worker has started (it imports for some 100 ms); waits for it
        only if `is_waiting`."""
        if self._is_ready or self.is_broken:
            return self._is_ready and not self.is_broken
        if not is_waiting and not self._has_reply():
            return False
        with contextlib.suppress(WorkerFailed):
            self._is_ready = _read_frame(self._out) == _READY
        self.is_broken = not self._is_ready
        return self._is_ready

    def _send(self, value: Any) -> None:
        try:
            write_all(self._in.fileno(), _frame(value))
        except (OSError, ValueError) as exc:
            raise WorkerFailed("the small-file worker stopped") from exc

    def submit(self, paths: Sequence[bytes], sizes: Sequence[int]) -> None:
        """Queue files for the worker; `take` gives each one's result."""
        if not self._owed.isdisjoint(paths) or len(set(paths)) < len(paths):
            raise RuntimeError("a file was submitted to the small-file worker twice")
        self._unsent.extend(zip(paths, sizes, strict=True))
        self._owed.update(paths)
        self._pump(is_waiting=False)

    def take(self, path: bytes) -> list[Any]:
        """The result for a file submitted and not taken yet, waiting for it if need be.
        Once the worker fails, a file whose result has not come is ELSEWHERE."""
        self._owed.remove(path)  # KeyError: it was not submitted, or taken already
        while path not in self._ready and not self.is_broken:
            if not self._sent and not self._unsent:
                raise RuntimeError(f"the small-file worker gave no result for {path!r}")
            self._pump(is_waiting=True)
        result = self._ready.pop(path, None)
        if result is None:
            return [ELSEWHERE]
        self._ready_bytes -= _result_bytes(result)
        return result

    def _pump(self, *, is_waiting: bool) -> None:
        """Take the replies that have come (waiting for one if `is_waiting`, whatever the
        results held), and send batches while fewer than allowed are unanswered."""
        if not self.is_ready(is_waiting=True):  # its first frame says it is
            return
        try:
            if is_waiting and not self._sent:
                self._send_batch()
            if is_waiting and self._sent:
                self._receive()
            while self._sent and self._ready_bytes < READY_BYTES and self._has_reply():
                self._receive()
            while self._unsent and len(self._sent) < self._ahead:
                self._send_batch()
        except WorkerFailed:
            self.is_broken = True

    def _has_reply(self) -> bool:
        return bool(self._select([self._out], [], [], 0)[0])

    def _receive(self) -> None:
        reply = _read_frame(self._out)
        if not isinstance(reply, list) or len(reply) != self._sent.popleft():
            raise WorkerFailed("the small-file worker answered out of turn")
        for result in reply:
            # Each result names its file, so none can be stored under another's name.
            self._ready[result.pop()] = result
            self._ready_bytes += _result_bytes(result)

    def _send_batch(self) -> None:
        if not self._unsent:
            return
        batch: list[list[Any]] = []
        data = names = 0
        limit = BATCH_FILES if self._sent else FIRST_BATCH_FILES
        while self._unsent and len(batch) < limit:
            path, size = self._unsent[0]
            if batch and (data + size > BATCH_BYTES or names + len(path) > BATCH_PATH_BYTES):
                break
            self._unsent.popleft()
            batch.append([path, size])
            data += size
            names += len(path)
        self._send(batch)
        self._sent.append(len(batch))

    def close(self) -> None:
        """End the worker: it stops at the end of its input."""
        with contextlib.suppress(OSError):
            self._in.close()
        end_process(self._proc)
        if self._proc.stdout is not None:
            self._proc.stdout.close()


def _grow_pipe(fd: int) -> int:
    """Ask for PIPE_SIZE bytes of buffer in the pipe; its size now."""
    import fcntl  # noqa: PLC0415 - only a backup that starts a worker needs it

    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    get_size = getattr(fcntl, "F_GETPIPE_SZ", None)
    if set_size is None or get_size is None:
        return 64 * 1024  # what Linux gives; elsewhere 16 KiB or more
    with contextlib.suppress(OSError):  # EPERM above the system's limit
        fcntl.fcntl(fd, set_size, PIPE_SIZE)
    return int(fcntl.fcntl(fd, get_size))


def _result_bytes(result: list[Any]) -> int:
    return len(result[4] or b"") if result[0] == STORED else 0


# -- the worker ----------------------------------------------------------------------


def serve() -> None:
    """The worker's loop: a batch in, its files' results out, until the input ends."""
    # Ctrl-C reaches the whole process group: the archiver decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from crypto import id_hash  # noqa: PLC0415
    from repo.blob import compress_parts, seal_blob  # noqa: PLC0415
    from repo.types import BlobType  # noqa: PLC0415

    source, sink = sys.stdin.fileno(), sys.stdout.fileno()
    try:
        keys = _read_frame(source)
    except WorkerFailed:
        return
    enc_key, id_key, level = keys["enc"], keys["id"], keys["level"]

    def store(data: memoryview) -> tuple[bytes | None, bytearray | None]:
        if not data:
            return None, None
        blob_id = id_hash(id_key, data)
        sealed = seal_blob(enc_key, BlobType.DATA, blob_id, compress_parts(data, level))
        return blob_id, sealed

    try:
        write_all(sink, _frame(_READY))
        while True:
            try:
                batch = _read_frame(source)
            except WorkerFailed:
                return
            write_all(sink, _frame(_read_batch(batch, store)))
    except BrokenPipeError:
        return


def _read_batch(batch: list[list[Any]], store: _Store) -> list[list[Any]]:
    """Each file's result. Files not in the page cache are asked for all at once
    (posix_fadvise) and read after the others, so the disk serves them together."""
    results: list[list[Any]] = [[ELSEWHERE]] * len(batch)
    waiting: list[tuple[int, int, int]] = []
    for i, (path, size) in enumerate(batch):
        try:
            fd = open_for_reading(path)
        except OSError as exc:
            results[i] = _failed(exc)
            continue
        try:
            result = _read_one(fd, size, store, wait=False)
        except OSError as exc:
            os.close(fd)
            results[i] = _failed(exc)
            continue
        if result is None:
            os.posix_fadvise(fd, 0, size, os.POSIX_FADV_WILLNEED)
            waiting.append((i, fd, size))
            continue
        os.close(fd)
        results[i] = result
    for i, fd, size in waiting:
        try:
            results[i] = _read_one(fd, size, store, wait=True) or [ELSEWHERE]
        except OSError as exc:
            results[i] = _failed(exc)
        finally:
            os.close(fd)
    return [[*result, path] for result, (path, _size) in zip(results, batch, strict=True)]


def _failed(exc: OSError) -> list[Any]:
    return [FAILED, exc.errno or errno.EIO, exc.strerror or str(exc)]


_RWF_NOWAIT: int = getattr(os, "RWF_NOWAIT", 0)


def _read_one(fd: int, size: int, store: _Store, *, wait: bool) -> list[Any] | None:
    """The file's result; None if the read would wait for the disk and `wait` is off."""
    buffer = bytearray(size + 1)  # one more: a file that grew is the archiver's to read
    try:
        n = os.preadv(fd, [buffer], 0, 0 if wait or not _RWF_NOWAIT else _RWF_NOWAIT)
    except OSError as exc:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return [ELSEWHERE]  # a FIFO or a folder now: the archiver says so
        if wait or exc.errno not in (errno.EAGAIN, errno.EOPNOTSUPP):
            raise
        if exc.errno == errno.EOPNOTSUPP:  # the file system cannot tell: just read
            return _read_one(fd, size, store, wait=True)
        return None
    after = os.fstat(fd)
    if n != size or after.st_size != size or not stat.S_ISREG(after.st_mode):
        return [ELSEWHERE]
    xattrs = read_xattrs(fd)
    blob_id, sealed = store(memoryview(buffer)[:size])
    return [STORED, size, after.st_mtime_ns, blob_id, sealed, xattrs]
