"""Repository locks: shared for backup and reads, exclusive for prune (docs/design.md, locks)."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

import msgpack

from crypto import ObjectType
from repo.errors import DamagedObject, ObjectNotFound, RepositoryLocked
from repo.repository import Repository
from repo.types import Handle, Kind

STALE_AFTER = 30 * 60


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
        same_boot = self.hostname == socket.gethostname() and self.boot_id == boot_id()
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
                    now - info.mtime,
                )
            )
        except (ObjectNotFound, DamagedObject, KeyError, TypeError, ValueError):
            continue  # released meanwhile, or not ours to read
    return out


class Lock:
    """A lock object held by this process; release() deletes it."""

    def __init__(self, repo: Repository, name: str) -> None:
        self.repo = repo
        self.name = name

    @classmethod
    def acquire(cls, repo: Repository, *, is_exclusive: bool) -> Lock:
        """Write our lock, then look for conflicting live locks (docs/design.md, locks)."""
        doc = {
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "boot_id": boot_id(),
            "time_ns": time.time_ns(),
            "exclusive": is_exclusive,
        }
        name = repo.write_object(Kind.LOCK, ObjectType.LOCK, msgpack.packb(doc))
        for other in read_locks(repo):
            if other.name == name or other.is_stale():
                continue
            if is_exclusive or other.is_exclusive:
                repo.backend.delete(Handle(Kind.LOCK, name))
                raise RepositoryLocked(f"repository is locked: {other.describe()}")
        return cls(repo, name)

    def release(self) -> None:
        self.repo.backend.delete(Handle(Kind.LOCK, self.name))
