"""Retries of transient backend failures, with exponential backoff under one deadline."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from repo.backend import Backend
from repo.errors import BackendError, TransientError
from repo.types import FileInfo, Handle, Kind

T = TypeVar("T")
FIRST_DELAY = 0.5
MAX_DELAY = 8.0


class RetryBackend:
    """Wraps a backend: a TransientError is retried until the shared deadline passes.

    The deadline counts from the first failure of a call, so a healthy long backup is
    never cut short, while a server that stays away fails the command in bounded time.
    """

    def __init__(self, inner: Backend, deadline: float) -> None:
        self.inner = inner
        self.location = inner.location
        self.deadline = deadline

    def _call(self, what: str, func: Callable[[], T]) -> T:
        give_up = 0.0
        delay = FIRST_DELAY
        while True:
            try:
                return func()
            except TransientError as exc:
                now = time.monotonic()
                give_up = give_up or now + self.deadline
                if now + delay > give_up:
                    message = f"{self.location}: {what}: {exc} (gave up retrying)"
                    raise BackendError(message) from exc
                time.sleep(delay * random.uniform(0.75, 1.25))  # noqa: S311 - jitter
                delay = min(delay * 2, MAX_DELAY)

    def read(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        return self._call(f"read {handle}", lambda: self.inner.read(handle, offset, length))

    def write(self, handle: Handle, data: bytes | bytearray | memoryview) -> None:
        self._call(f"write {handle}", lambda: self.inner.write(handle, data))

    def list(self, kind: Kind) -> Iterator[FileInfo]:
        # A listing is collected whole, so a retry never yields names twice.
        return iter(self._call(f"list {kind.value}", lambda: list(self.inner.list(kind))))

    def stat(self, handle: Handle) -> FileInfo:
        return self._call(f"stat {handle}", lambda: self.inner.stat(handle))

    def delete(self, handle: Handle) -> None:
        self._call(f"delete {handle}", lambda: self.inner.delete(handle))

    def exists(self) -> bool:
        return self._call("open", self.inner.exists)

    def close(self) -> None:
        self.inner.close()
