"""Repository locks: shared for backup and reads, exclusive for prune (docs/design.md, locks)."""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import msgpack

from crypto import ObjectType
from repo.errors import DamagedObject, LockLost, ObjectNotFound, RepoError, RepositoryLocked
from repo.repository import Repository
from repo.types import Handle, Kind

# docs/design.md, "Locks": others treat a lock not refreshed for STALE_AFTER as stale.
STALE_AFTER = 30 * 60
REFRESH_EVERY = 5 * 60


def hostname() -> str:
    """This machine's name, as gethostname(2) gives it (socket.gethostname() would cost
    every command 5 ms of start-up importing socket)."""
    return os.uname().nodename


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True, slots=True)
class LockInfo:
    name: str
    hostname: str
    pid: int
    boot_id: str
    time_ns: int
    is_exclusive: bool
    age: float

    def describe(self) -> str:
        kind = "exclusive" if self.is_exclusive else "shared"
        return f"{kind} lock held by pid {self.pid} on {self.hostname}, {int(self.age)} s old"

    def is_stale(self) -> bool:
        if self.age > STALE_AFTER:
            return True
        same_boot = self.hostname == hostname() and self.boot_id == boot_id()
        return same_boot and bool(self.boot_id) and not _pid_alive(self.pid)


def read_locks(repo: Repository) -> list[LockInfo]:
    out = []
    now = time.time()
    for info in repo.backend.list(Kind.LOCK):
        try:
            plain = repo.read_object(Kind.LOCK, ObjectType.LOCK, info.name)
            doc = msgpack.unpackb(plain, raw=False)
            out.append(
                LockInfo(
                    info.name,
                    doc["hostname"],
                    doc["pid"],
                    doc["boot_id"],
                    doc["time_ns"],
                    doc["exclusive"],
                    # A backend that knows no modification times (REST) reports 0:
                    # then the writer's own clock is all there is to judge age by.
                    now - (info.mtime or doc["time_ns"] / 1e9),
                )
            )
        except (ObjectNotFound, DamagedObject, KeyError, TypeError, ValueError):
            continue  # released meanwhile, or not ours to read
    return out


class Lock:
    """A lock object held by this process: refreshed in the background, deleted on release."""

    def __init__(self, repo: Repository, name: str, doc: dict[str, object]) -> None:
        self.repo = repo
        self.name = name
        self._doc = doc
        self._refreshed = _boottime()
        self._stop = threading.Event()
        self._mutex = threading.Lock()
        self._thread = threading.Thread(target=self._refresh_loop, daemon=True, name="lock")
        self._thread.start()
        repo.lock_guard = self.check

    @classmethod
    def acquire(cls, repo: Repository, *, is_exclusive: bool, retry_for: float = 0.0) -> Lock:
        """Write our lock, then look for conflicting live locks (docs/design.md, locks);
        on conflict remove ours and try again with jittered backoff until retry_for ends."""
        deadline = time.monotonic() + retry_for
        delay = 0.5
        while True:
            doc: dict[str, object] = {
                "hostname": hostname(),
                "pid": os.getpid(),
                "boot_id": boot_id(),
                "time_ns": time.time_ns(),
                "exclusive": is_exclusive,
            }
            name = repo.write_object(Kind.LOCK, ObjectType.LOCK, msgpack.packb(doc))
            conflict = _conflict(repo, name, is_exclusive=is_exclusive)
            if conflict is None:
                return cls(repo, name, doc)
            repo.backend.delete(Handle(Kind.LOCK, name))
            left = deadline - time.monotonic()
            if left <= 0:
                raise RepositoryLocked(f"repository is locked: {conflict.describe()}")
            time.sleep(min(left, delay * random.uniform(0.5, 1.5)))  # noqa: S311 - jitter
            delay = min(delay * 2, 30.0)

    def _refresh_loop(self) -> None:
        while not self._stop.wait(REFRESH_EVERY):
            try:
                self.refresh()
            except RepoError:
                continue  # the age of the last refresh tells check() it is overdue

    def refresh(self) -> None:
        """Write a fresh lock object, then remove the old one."""
        with self._mutex:
            doc = dict(self._doc, time_ns=time.time_ns())
            name = self.repo.write_object(Kind.LOCK, ObjectType.LOCK, msgpack.packb(doc))
            old, self.name = self.name, name
            self.repo.backend.delete(Handle(Kind.LOCK, old))
            self._refreshed = _boottime()

    def check(self) -> None:
        """Refuse to go on when others may consider this lock stale (docs/design.md, locks):
        its refresh is overdue (by a clock that counts suspend) or it is gone."""
        if _boottime() - self._refreshed > STALE_AFTER - REFRESH_EVERY:
            raise LockLost("the repository lock was not refreshed in time; aborting")
        try:
            self.repo.backend.stat(Handle(Kind.LOCK, self.name))
        except ObjectNotFound as exc:
            raise LockLost("the repository lock was removed by another process; aborting") from exc

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        self.repo.lock_guard = None
        with self._mutex:
            self.repo.backend.delete(Handle(Kind.LOCK, self.name))


def _conflict(repo: Repository, own: str, *, is_exclusive: bool) -> LockInfo | None:
    for other in read_locks(repo):
        if other.name == own or other.is_stale():
            continue
        if is_exclusive or other.is_exclusive:
            return other
    return None


def _boottime() -> float:
    clock = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)
    return time.clock_gettime(clock)


@contextlib.contextmanager
def locked(repo: Repository, *, is_exclusive: bool, retry_for: float = 0.0) -> Iterator[Lock]:
    """Hold a lock for the duration of a with block."""
    lock = Lock.acquire(repo, is_exclusive=is_exclusive, retry_for=retry_for)
    try:
        yield lock
    finally:
        lock.release()


def remove_locks(repo: Repository, *, is_all: bool) -> list[LockInfo]:
    """unlock: delete stale locks, or every lock."""
    removed = []
    for info in read_locks(repo):
        if is_all or info.is_stale():
            repo.backend.delete(Handle(Kind.LOCK, info.name))
            removed.append(info)
    return removed
