"""Reading files ahead of the archiver on a few threads (backup --read-concurrency)."""

from __future__ import annotations

import errno
import os
import queue
import stat
import threading
from collections import deque
from collections.abc import Generator

O_NOATIME = getattr(os, "O_NOATIME", 0)
# A reader thread reads a file this much at a time and may hold this many blocks
# the archiver has not taken yet: a file read ahead costs at most about 3 MiB. Larger
# blocks read no faster from the page cache and only add to the resident set.
READ_BLOCK = 1024 * 1024
BLOCKS_AHEAD = 2
# Small files read ahead beyond one per reader thread: at most this many bytes in all,
# and this many files.
SMALL_AHEAD = 4 * 1024 * 1024
MAX_AHEAD = 64
# Files up to this size are read by the archiver's own thread when the page cache holds
# all of their bytes (a read told not to wait for the disk, RWF_NOWAIT). Handing a file
# that small to a reader thread and taking it back cost two thread switches and a turn
# at the GIL each way: about 150 µs a file, against 10 µs to read it.
DIRECT_MAX = 64 * 1024
_RWF_NOWAIT: int = getattr(os, "RWF_NOWAIT", 0)
# Files of at least this size are read by the archiver's own thread, straight into the
# window it chunks in (DirectFeed): through a reader thread every block was copied once
# more, and every hand-over cost a turn at the GIL, on the thread that bounds a backup
# of large incompressible files. The kernel's sequential read-ahead keeps the disk
# busy meanwhile.
DIRECT_FROM = 4 * 1024 * 1024


def _take(block: bytes, pos: int, n: int) -> tuple[bytes, int]:
    """Up to n bytes of block from pos, and the position after them: the block itself,
    not a copy, when all of it is asked for."""
    if pos == 0 and n >= len(block):
        return block, len(block)
    data = block[pos : pos + n]
    return data, pos + len(data)


class Feed:
    """One file as a reader thread reads it: blocks, then its final fstat, or an error."""

    def __init__(self, path: bytes, size: int = -1) -> None:
        self.path = path
        self.size = size  # as statted, -1 if unknown: a buffer no larger is asked for
        self.items: queue.Queue[bytes | os.stat_result | BaseException] = queue.Queue(BLOCKS_AHEAD)
        self.is_cancelled = threading.Event()
        self.after: os.stat_result | None = None
        self._block = b""
        self._pos = 0

    def fill(self) -> None:
        """Read the file into the queue (in a reader thread) until its end or a cancel."""
        try:
            fd = open_regular(self.path)
            try:
                done = 0
                while not self.is_cancelled.is_set():
                    # os.read() allocates all it asks for before it reads: a block for
                    # each small file, and again to find its end, was a MiB of malloc
                    # for a few kilobytes. The read past the statted size asks for one
                    # byte; a file that grew is read on in blocks.
                    left = self.size - done
                    block = os.read(fd, min(READ_BLOCK, left + 1) if left >= 0 else READ_BLOCK)
                    done += len(block)
                    if not block:
                        self.items.put(os.fstat(fd))
                        return
                    self.items.put(block)
            finally:
                os.close(fd)
        except Exception as exc:  # handed to the archiver, which raises it
            self.items.put(exc)

    def read(self, n: int) -> bytes:
        """Up to n bytes of the file, b"" at its end; raises the reader's error."""
        if self._pos == len(self._block):
            if self.after is not None:
                return b""
            item = self.items.get()
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, os.stat_result):
                self.after = item
                return b""
            self._block, self._pos = item, 0
        data, self._pos = _take(self._block, self._pos, n)
        return data

    def cancel(self) -> None:
        """Stop the reader: it checks the flag after every block it hands over, and
        emptying the queue lets a reader that waits to hand one over go on to see it."""
        self.is_cancelled.set()
        while True:
            try:
                self.items.get_nowait()
            except queue.Empty:
                return


class ReadFeed:
    """A file read whole already, served as a Feed serves it."""

    def __init__(self, path: bytes, data: bytes, after: os.stat_result) -> None:
        self.path = path
        self.after: os.stat_result | None = after
        self._data = data
        self._pos = 0

    def read(self, n: int) -> bytes:
        """Up to n bytes of the file, b"" at its end."""
        data, self._pos = _take(self._data, self._pos, n)
        return data

    def cancel(self) -> None:
        """Nothing to stop: the file was read before the feed was made."""


class DirectFeed:
    """A large file the archiver reads itself: opened on the first read, closed at its
    end or on cancel. It reads at its own position (pread), so the chunk worker, given
    the same open file, reads it too without moving that position."""

    def __init__(self, path: bytes) -> None:
        self.path = path
        self.after: os.stat_result | None = None
        self._fd = -1
        self._position = 0

    def fileno(self) -> int:
        """The open file (opened now, on first use)."""
        return self._open()

    def read(self, n: int) -> bytes:
        """Up to n bytes of the file, b"" at its end."""
        if self.after is not None:
            return b""
        data = os.pread(self._open(), n, self._position)
        self._position += len(data)
        if not data:
            self._end()
        return data

    def read_exactly(self, n: int) -> bytes:
        """The next n bytes of the file; fewer only at its end (which is not taken for
        the end yet: a read or readinto after it says so)."""
        if self.after is not None:
            return b""
        fd = self._open()
        data = os.pread(fd, n, self._position)
        while 0 < len(data) < n and (
            more := os.pread(fd, n - len(data), self._position + len(data))
        ):
            data += more
        self._position += len(data)
        return data

    def readinto(self, view: memoryview) -> int:
        """Read into view; the number of bytes put there, 0 at the end of the file."""
        if self.after is not None:
            return 0
        n = os.preadv(self._open(), [view], self._position)
        self._position += n
        if not n:
            self._end()
        return n

    def cancel(self) -> None:
        """Close the file (a no-op once it is read to its end)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _open(self) -> int:
        if self._fd < 0:
            self._fd = open_regular(self.path)
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        return self._fd

    def _end(self) -> None:
        self.after = os.fstat(self._fd)
        self.cancel()


def read_cached(path: bytes, size: int) -> ReadFeed | None:
    """The file, read whole, if it still has `size` bytes and the page cache holds them
    all; None if that read would wait for the disk, or anything else is off (a reader
    thread then reads the file, and reports what is wrong with it)."""
    if not _RWF_NOWAIT:
        return None
    try:
        # Its type is checked after the read, by the one fstat a small file needs: what
        # is not a regular file fails the read (a FIFO, a folder) or that check.
        fd = open_for_reading(path)
    except OSError:
        return None
    try:
        buffer = bytearray(size + 1)  # one more: a file that grew is left to a reader
        if os.preadv(fd, [buffer], 0, _RWF_NOWAIT) != size:
            return None
        after = os.fstat(fd)
    except OSError:  # EAGAIN: not all cached; EOPNOTSUPP: the file system cannot tell
        return None
    finally:
        os.close(fd)
    if after.st_size != size or not stat.S_ISREG(after.st_mode):
        return None
    return ReadFeed(path, bytes(memoryview(buffer)[:size]), after)


class Readers:
    """Threads that read files ahead of the archiver (--read-concurrency).

    Chunking, hashing and compressing hold the GIL, but reads release it: while the
    archiver stores one file, the next ones are being read. At most n files are
    handed out and not yet finished, each holding at most BLOCKS_AHEAD blocks.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.jobs: queue.SimpleQueue[Feed | None] = queue.SimpleQueue()
        self.threads = [
            threading.Thread(target=self._work, name=f"hutch-reader-{i}", daemon=True)
            for i in range(n)
        ]
        for thread in self.threads:
            thread.start()

    def _work(self) -> None:
        while (feed := self.jobs.get()) is not None:
            if not feed.is_cancelled.is_set():
                feed.fill()

    def close(self) -> None:
        for _ in self.threads:
            self.jobs.put(None)
        for thread in self.threads:
            thread.join()

    def feeds(
        self, paths: list[bytes], sizes: list[int] | None = None
    ) -> Generator[Feed | ReadFeed | DirectFeed, None, None]:
        """The files' feeds in order. n are handed out at least; with `sizes`, small files
        (one block at most) beyond those, while they hold at most SMALL_AHEAD bytes in
        all: each is one read, and waiting for each on its own made the archiver idle
        between small files. Jobs are taken in order, so the first unfinished feed
        always has a thread: those before it are finished. With `sizes`, files of
        DIRECT_FROM bytes or more are left to the archiver (DirectFeed)."""
        ahead: deque[Feed | ReadFeed | DirectFeed] = deque()
        small: deque[int] = deque()  # the size of each feed ahead that counts as small
        held = 0
        rest = iter(range(len(paths)))
        following = next(rest, None)
        try:
            while True:
                while following is not None:
                    size = sizes[following] if sizes is not None else READ_BLOCK + 1
                    is_small = size <= READ_BLOCK
                    if len(ahead) >= self.n and not (
                        is_small and held + size <= SMALL_AHEAD and len(ahead) < MAX_AHEAD
                    ):
                        break
                    ahead.append(self._feed(paths[following], size, sizes is not None))
                    small.append(size if is_small else 0)
                    held += small[-1]
                    following = next(rest, None)
                if not ahead:
                    return
                yield ahead[0]
                ahead.popleft().cancel()  # a no-op on a file read to its end
                held -= small.popleft()
        finally:
            for feed in ahead:
                feed.cancel()

    def _feed(self, path: bytes, size: int, is_size_known: bool) -> Feed | ReadFeed | DirectFeed:
        if size <= DIRECT_MAX:
            read = read_cached(path, size)
            if read is not None:
                return read
        elif is_size_known and size >= DIRECT_FROM:
            return DirectFeed(path)
        return self._start(path, size if is_size_known else -1)

    def _start(self, path: bytes, size: int) -> Feed:
        feed = Feed(path, size)
        self.jobs.put(feed)
        return feed


def open_for_reading(path: bytes) -> int:
    """Open path for reading, without following a symlink, blocking on a FIFO or
    touching atime."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        return os.open(path, flags | O_NOATIME)
    except PermissionError:
        # O_NOATIME is refused on files we do not own.
        return os.open(path, flags)


def open_regular(path: bytes) -> int:
    """Open a regular file for reading, without following a symlink or touching atime."""
    fd = open_for_reading(path)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "changed type while being read")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_head(path: bytes, n: int) -> bytes:
    """The first n bytes of a regular file (fewer if it is shorter)."""
    fd = open_regular(path)
    try:
        parts = []
        while n > 0 and (part := os.read(fd, n)):
            parts.append(part)
            n -= len(part)
        return b"".join(parts)
    finally:
        os.close(fd)
