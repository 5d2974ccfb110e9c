"""Storage backends: opaque named byte strings behind one small interface."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from repo.location import local_path
from repo.types import FileInfo, Handle, Kind

TEMP_MARK = ".tmp-"


class Backend(Protocol):
    """Moves opaque bytes; knows nothing of encryption or formats (docs/design.md, backends)."""

    location: str

    def read(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        """Return the object's bytes, or `length` bytes from `offset`; ObjectNotFound if absent."""
        ...

    def write(self, handle: Handle, data: bytes | bytearray | memoryview) -> None:
        """Create the object atomically; an existing object of the same size counts as success."""
        ...

    def list(self, kind: Kind) -> Iterator[FileInfo]:
        """Every object of one kind (temporary files excluded)."""
        ...

    def stat(self, handle: Handle) -> FileInfo:
        """Size and modification time; ObjectNotFound if absent."""
        ...

    def delete(self, handle: Handle) -> None:
        """Remove the object; a missing object is not an error."""
        ...

    def exists(self) -> bool:
        """Whether the repository location holds a config object."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class BackendOptions:
    """Settings of network backends (docs/usage.md, repository locations)."""

    connections: int = 5
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    # Retries of transient failures (timeouts, 5xx, resets) share this deadline, so an
    # unreachable server ends the command within two minutes even when each attempt
    # waits out the read timeout: 30 s + 45 s of retries + a last 30 s attempt.
    retry_deadline: float = 45.0
    limit_upload: int = 0  # KiB/s, 0 = unlimited
    limit_download: int = 0
    cacert: str | None = None
    is_insecure_tls: bool = False


def open_backend(
    location: str, *, create: bool = False, options: BackendOptions | None = None
) -> Backend:
    """The backend for a repository location: PATH, local:PATH, sftp:…, s3:…, rest:…,
    rclone:… (docs/usage.md). Network modules are imported only when used."""
    opts = options or BackendOptions()
    path = local_path(location)
    if path is not None:
        from repo.backend.local import LocalBackend  # noqa: PLC0415

        return LocalBackend(path, create=create)
    scheme, _, rest = location.partition(":")
    # Imports below are deferred on purpose: a local repository must not pay for
    # paramiko, boto3 or http at start-up.
    if scheme == "sftp":
        from repo.backend.sftp import open_sftp  # noqa: PLC0415

        return wrap(open_sftp(rest, opts, create=create), opts)
    if scheme == "s3":
        from repo.backend.s3 import open_s3  # noqa: PLC0415

        return wrap(open_s3(rest, opts, create=create), opts)
    if scheme == "rest":
        from repo.backend.rest import open_rest  # noqa: PLC0415

        return wrap(open_rest(rest, opts, create=create), opts)
    from repo.backend.rclone import open_rclone  # noqa: PLC0415 - the last network scheme

    return wrap(open_rclone(rest, opts, create=create), opts)


def wrap(backend: Backend, options: BackendOptions) -> Backend:
    """Retry transient failures of a network backend under one overall deadline, and
    pace it to the bandwidth limits."""
    from repo.backend.retry import RetryBackend  # noqa: PLC0415

    retrying: Backend = RetryBackend(backend, options.retry_deadline)
    if options.limit_upload or options.limit_download:
        from repo.backend.limit import LimitBackend  # noqa: PLC0415

        return LimitBackend(retrying, options.limit_upload, options.limit_download)
    return retrying
