"""The rclone backend: `rclone serve restic` on a loopback port, spoken to as a REST server."""

from __future__ import annotations

import atexit
import ctypes
import dataclasses
import http.client
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, TypeVar

from repo.backend import BackendOptions
from repo.backend.rest import RestBackend, parse_rest_location
from repo.errors import BackendError, TransientError
from repo.pipes import end_process
from repo.types import FileInfo, Handle, Kind

T = TypeVar("T")
# rclone may contact a cloud remote before it listens; a local folder takes ~0.1 s.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
# rclone 1.60 logs "... Serving restic REST API on http://127.0.0.1:PORT/"; later versions
# put the address list in brackets.
_SERVING = re.compile(rb"Serving restic REST API on \[?(https?://[^\s\]]+)")
_LOG_PREFIX = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (?:[A-Z]+\s*: )?")
PR_SET_PDEATHSIG = 1


def _death_signal() -> Callable[[], None] | None:
    """What the child runs between fork and exec so that Linux sends it SIGTERM when hutch
    dies, even by SIGKILL: a server holding a login to the repository never outlives us.
    prctl is looked up here, in the parent, as the child must not take loader locks."""
    if sys.platform != "linux":
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def set_death_signal() -> None:  # pragma: no cover - runs in the child
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return set_death_signal


class RcloneServer:
    """A running `rclone serve restic` child listening on a loopback port."""

    def __init__(self, process: subprocess.Popen[bytes], log: IO[bytes], url: str) -> None:
        self.process = process
        self.url = url
        self._log = log

    def last_line(self) -> str:
        """rclone's last line on stderr, without its timestamp."""
        return _last_line(self._log)

    def is_running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Terminate rclone (kill it if it lingers) and drop its log."""
        if self.process.poll() is None:
            self.process.terminate()
            end_process(self.process, STOP_TIMEOUT)
        self._log.close()


def _last_line(log: IO[bytes]) -> str:
    log.seek(0)
    lines = [line for line in log.read().decode(errors="replace").splitlines() if line.strip()]
    return _LOG_PREFIX.sub("", lines[-1]).strip() if lines else "no output"


def _is_listening(url: str) -> bool:
    where = parse_rest_location(url)
    try:
        with socket.create_connection((where.host, where.port), timeout=1.0):
            return True
    except OSError:
        return False


def _check_login_required(url: str, target: str) -> None:
    """Refuse a server that answers without a login: an rclone that ignored RCLONE_USER
    would otherwise open the repository to every local user."""
    where = parse_rest_location(url)
    if where.scheme != "http":
        return
    conn = http.client.HTTPConnection(where.host, where.port, timeout=5.0)
    try:
        conn.request("HEAD", where.path + "config")
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        raise BackendError(f"rclone:{target}: rclone does not answer: {exc}") from exc
    finally:
        conn.close()
    if status != 401:
        raise BackendError(f"rclone:{target}: rclone serves without a login; refusing to use it")


def start_rclone(
    target: str,
    *,
    user: str,
    password: str,
    extra_args: Sequence[str] = (),
    timeout: float = START_TIMEOUT,
) -> RcloneServer:
    """Start `rclone serve restic TARGET` on a free 127.0.0.1 port and wait until it listens.

    The login travels in rclone's environment (RCLONE_USER, RCLONE_PASS), which other
    users cannot read, rather than on its command line, which `ps` shows to everyone.
    """
    program = shutil.which("rclone")
    if program is None:
        raise BackendError(f"rclone:{target}: rclone is not installed")
    argv = [program, "serve", "restic", "--addr", "127.0.0.1:0", *extra_args, "--", target]
    env = {**os.environ, "RCLONE_USER": user, "RCLONE_PASS": password}
    log = tempfile.TemporaryFile()  # noqa: SIM115 - owned by the RcloneServer
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=env,
            # Its own session, so a Ctrl-C meant for hutch does not stop the server while
            # hutch still writes its index on the way out.
            start_new_session=True,
            preexec_fn=_death_signal(),  # noqa: PLW1509 - only a prctl call, see above
        )
    except OSError as exc:
        log.close()
        raise BackendError(f"rclone:{target}: cannot run rclone: {exc.strerror}") from exc
    try:
        url = _wait_until_serving(process, log, timeout, target)
    except BaseException:
        RcloneServer(process, log, "").stop()
        raise
    return RcloneServer(process, log, url)


def _wait_until_serving(
    process: subprocess.Popen[bytes], log: IO[bytes], timeout: float, target: str
) -> str:
    deadline = time.monotonic() + timeout
    url = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BackendError(f"rclone:{target}: rclone exited: {_last_line(log)}")
        if not url:
            log.seek(0)
            match = _SERVING.search(log.read())
            url = match.group(1).decode() if match else ""
        if url and _is_listening(url):
            _check_login_required(url, target)
            return url
        time.sleep(0.05)
    raise BackendError(f"rclone:{target}: rclone did not start serving within {timeout:g} s")


class RcloneBackend:
    """A repository reached through a private `rclone serve restic` child."""

    def __init__(self, location: str, server: RcloneServer, rest: RestBackend) -> None:
        self.location = location
        self.server = server
        self._rest = rest
        atexit.register(self.close)

    def _call(self, func: Callable[[], T]) -> T:
        try:
            return func()
        except TransientError as exc:
            # A dead child will not come back: say why now instead of retrying for minutes.
            if not self.server.is_running():
                message = f"{self.location}: rclone exited: {self.server.last_line()}"
                raise BackendError(message) from exc
            raise

    def create(self) -> None:
        self._call(self._rest.create)

    def exists(self) -> bool:
        return self._call(self._rest.exists)

    def read(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        return self._call(lambda: self._rest.read(handle, offset, length))

    def write(self, handle: Handle, data: bytes | bytearray | memoryview) -> None:
        self._call(lambda: self._rest.write(handle, data))

    def list(self, kind: Kind) -> Iterator[FileInfo]:
        return self._call(lambda: self._rest.list(kind))

    def stat(self, handle: Handle) -> FileInfo:
        return self._call(lambda: self._rest.stat(handle))

    def delete(self, handle: Handle) -> None:
        self._call(lambda: self._rest.delete(handle))

    def close(self) -> None:
        atexit.unregister(self.close)
        self._rest.close()
        self.server.stop()


def open_rclone(location: str, options: BackendOptions, *, create: bool = False) -> RcloneBackend:
    """The backend for `rclone:REMOTE:PATH` (or a local path): a private rclone server
    with a random login on a loopback port, closed with the backend."""
    user, password = secrets.token_urlsafe(12), secrets.token_urlsafe(24)
    server = start_rclone(location, user=user, password=password)
    name = f"rclone:{location}"
    where = dataclasses.replace(parse_rest_location(server.url), user=user, password=password)
    backend = RcloneBackend(name, server, RestBackend(where, options, location=name))
    if create:
        try:
            backend.create()
        except BaseException:
            backend.close()
            raise
    return backend
