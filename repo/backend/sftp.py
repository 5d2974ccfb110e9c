"""The sftp backend: a repository on an SSH server, reached with paramiko.

Routing and authentication follow ~/.ssh/config and ~/.ssh/known_hosts as OpenSSH
would (repo.backend.sshconfig), but strictly: an unknown or changed host key is
refused, and no password is ever asked for. One SSH transport carries one SFTP
channel per thread, since the repository uploads packs from a background thread
while the main thread reads.
"""

from __future__ import annotations

import logging
import os
import posixpath
import secrets
import shlex
import socket
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import paramiko

from repo.backend import TEMP_MARK, BackendOptions
from repo.backend.sshconfig import HostConfig, SftpLocation, parse_location, resolve_host
from repo.errors import BackendError, ObjectNotFound, TransientError
from repo.pipes import end_process
from repo.types import FileInfo, Handle, Kind

T = TypeVar("T")
# paramiko reads at most this much per SFTP request; longer ranges are prefetched.
MAX_REQUEST = 32768
# Jump hosts reached through jump hosts: deeper than this is a ProxyJump loop.
MAX_HOPS = 8
# Seconds between keepalives, so NAT and firewalls keep an idle session (a backup
# reading unchanged files uploads nothing for minutes).
KEEPALIVE = 30
FILE_MODE = 0o600
# paramiko's words (a plain SSHException) when it has no key at all to offer.
NO_AUTH_METHODS = "No authentication methods available"
BANNER_ERROR = "Error reading SSH protocol banner"
# What paramiko says when its handshake timeout ends before the banner timeout does.
HANDSHAKE_TIMEOUTS = frozenset({"No existing session", "Negotiation failed."})
# paramiko logs a traceback at ERROR when a handshake fails; with no handler set up,
# Python would print it to stderr beside our one-line error. Applications that
# configure logging still receive these records.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
# Failures that mean the connection itself is gone or hung: retried on a new one.
CONNECTION_ERRORS = (
    TimeoutError,
    ConnectionError,
    EOFError,
    paramiko.SSHException,
    paramiko.SFTPError,
)


class _DialError(Exception):
    """Connecting failed; permanent failures (host key, login) are not worth retrying."""

    def __init__(self, message: str, *, is_permanent: bool = False) -> None:
        super().__init__(message)
        self.is_permanent = is_permanent


class _UnknownHostKey(Exception):
    def __init__(self, name: str, key: Any) -> None:
        super().__init__(name)
        self.name = name
        self.key = key


class _RefuseUnknownHosts:
    """paramiko's missing-host-key policy: never trust a key that known_hosts lacks."""

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        raise _UnknownHostKey(hostname, key)


class _ProxyProcess:
    """A ProxyCommand run by the shell with one end of a socket pair as stdin and stdout.

    paramiko.ProxyCommand cannot see its command exit (its recv spins on empty
    reads); over a socket pair the transport sees end of file like on any socket.
    """

    def __init__(self, command: str) -> None:
        self.socket, theirs = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                ["/bin/sh", "-c", f"exec {command}"], stdin=theirs.fileno(), stdout=theirs.fileno()
            )
        except OSError as exc:
            self.socket.close()
            raise _DialError(f"ProxyCommand {command}: {exc.strerror}") from exc
        finally:
            theirs.close()

    def close(self) -> None:
        self.socket.close()
        if self.process.poll() is None:
            self.process.terminate()
        end_process(self.process)


def _hint(host: str, user: str | None, port: int | None) -> str:
    """The ssh command line a user runs to reach the same host and check its key."""
    login = f"{user}@{host}" if user else host
    return f"ssh -p {port} {login}" if port else f"ssh {login}"


def _refused(exc: OSError) -> bool:
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return all(isinstance(e, ConnectionRefusedError) for e in exc.errors.values())
    return isinstance(exc, ConnectionRefusedError)


def _dial_error(exc: Exception, cfg: HostConfig, hint: str, timeout: float) -> _DialError:
    """Our one-line account of a failed SSH connection to one host."""
    if isinstance(exc, _UnknownHostKey):
        known = cfg.known_hosts_files[0] if cfg.known_hosts_files else "known_hosts"
        return _DialError(
            f"the host key of {exc.name} ({exc.key.get_name()} {exc.key.fingerprint}) is not in "
            f"{known}, and hutch never trusts a new host itself: run `{hint}` once to check "
            "the key and add it",
            is_permanent=True,
        )
    if isinstance(exc, paramiko.BadHostKeyException):
        return _DialError(
            f"the host key of {exc.hostname} has CHANGED (now {exc.key.get_name()} "
            f"{exc.key.fingerprint}): this may be a man-in-the-middle attack; if the change "
            f"is expected, run `ssh-keygen -R {shlex.quote(exc.hostname)}` and then `{hint}` "
            "once to add the new key",
            is_permanent=True,
        )
    if isinstance(exc, paramiko.AuthenticationException) or str(exc) == NO_AUTH_METHODS:
        what = "no key was accepted" if str(exc) != NO_AUTH_METHODS else "no key to offer"
        return _DialError(
            f"{cfg.user}@{cfg.hostname} port {cfg.port}: authentication failed ({what}: {exc}); "
            "hutch logs in with the SSH agent and identity files only, never with a password",
            is_permanent=True,
        )
    return _DialError(_network_reason(exc, cfg, timeout))


def _network_reason(exc: Exception, cfg: HostConfig, timeout: float) -> str:
    where = f"{cfg.hostname} port {cfg.port}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host {cfg.hostname}: {exc.strerror}"
    if isinstance(exc, OSError):
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {timeout:g} s"
        else:
            reason = "connection refused" if _refused(exc) else exc.strerror or str(exc)
        return f"cannot connect to {where}: {reason}"
    text = str(exc)
    if text.startswith(BANNER_ERROR) and isinstance(exc.__cause__ or exc.__context__, EOFError):
        return f"{where} closed the connection at once (not an SSH server, or too busy?)"
    if text.startswith(BANNER_ERROR) or text in HANDSHAKE_TIMEOUTS:
        return f"cannot connect to {where}: no SSH handshake within {timeout:g} s"
    return f"ssh connection to {where} failed: {text or type(exc).__name__}"


def _load_known_hosts(client: Any, paths: tuple[str, ...]) -> None:
    for path in paths:
        if not os.path.isfile(path):
            continue
        try:
            client.load_system_host_keys(path)
        except Exception as exc:  # paramiko raises assorted types for malformed lines
            raise _DialError(f"{path}: cannot read known hosts: {exc}", is_permanent=True) from exc


def _tunnel(
    cfg: HostConfig, options: BackendOptions, home: str, chain: list[Any], depth: int
) -> Any:
    """A socket-like route to cfg's host: a direct-tcpip channel from the last jump host
    (itself reached as ssh would: the earlier hops, or its own config), or a
    ProxyCommand; None to connect directly."""
    if cfg.proxy_jump:
        *before, last = cfg.proxy_jump
        jump = resolve_host(
            last.host, home=home, user=last.user, port=last.port, proxy_jump=tuple(before) or None
        )
        upstream = _dial(jump, _hint(last.host, last.user, last.port), options, home, chain, depth)
        try:
            return upstream.get_transport().open_channel(
                "direct-tcpip",
                (cfg.hostname, cfg.port),
                ("127.0.0.1", 0),
                timeout=options.connect_timeout,
            )
        except (paramiko.SSHException, OSError, EOFError) as exc:
            reason = getattr(exc, "text", None) or exc or type(exc).__name__
            message = f"jump host {jump.hostname} cannot reach {cfg.hostname} port {cfg.port}"
            raise _DialError(f"{message}: {reason}") from exc
    if cfg.proxy_command:
        proxy = _ProxyProcess(cfg.proxy_command)
        chain.append(proxy)
        return proxy.socket
    return None


def _dial(
    cfg: HostConfig, hint: str, options: BackendOptions, home: str, chain: list[Any], depth: int
) -> Any:
    """An authenticated SSHClient for one host; every client and proxy opened on the way
    is appended to `chain`, for the caller to close."""
    if depth > MAX_HOPS:
        raise _DialError(f"{cfg.alias}: more than {MAX_HOPS} jump hosts (a ProxyJump loop?)")
    sock = _tunnel(cfg, options, home, chain, depth + 1)
    client = paramiko.SSHClient()
    chain.append(client)
    _load_known_hosts(client, cfg.known_hosts_files)
    client.set_missing_host_key_policy(_RefuseUnknownHosts())
    timeout = options.connect_timeout
    try:
        client.connect(
            cfg.hostname,
            cfg.port,
            cfg.user,
            key_filename=[p for p in cfg.identity_files if os.path.isfile(p)] or None,
            allow_agent=not cfg.is_identities_only,
            # Like ssh: the default ~/.ssh/id_* keys only when the config names none.
            look_for_keys=not cfg.identity_files,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            channel_timeout=timeout,
            sock=sock,
        )
    except (_UnknownHostKey, paramiko.SSHException, OSError) as exc:
        raise _dial_error(exc, cfg, hint, timeout) from exc
    return client


class _Connection:
    """The SSH route to the server (jump hosts first) and the SFTP clients opened on it."""

    def __init__(self, chain: list[Any]) -> None:
        self._chain = chain
        self.transport = chain[-1].get_transport()
        self.transport.set_keepalive(KEEPALIVE)
        self._clients: list[Any] = []
        self._lock = threading.Lock()

    def is_active(self) -> bool:
        return bool(self.transport.is_active())

    def open_sftp(self, read_timeout: float) -> Any:
        client = paramiko.SFTPClient.from_transport(self.transport)
        if client is None:
            raise paramiko.SSHException("the server refused the sftp subsystem")
        # A hung server must surface as a timeout, not a backup that never ends.
        client.get_channel().settimeout(read_timeout)
        with self._lock:
            self._clients.append(client)
        return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for item in [*clients, *reversed(self._chain)]:
            try:
                item.close()
            except Exception:  # noqa: S112 - best effort: the route may already be gone
                continue


def _is_dir(sftp: Any, path: str) -> bool:
    try:
        return stat.S_ISDIR(sftp.stat(path).st_mode or 0)
    except FileNotFoundError:
        return False


def _entries(sftp: Any, path: str) -> list[Any]:
    try:
        return list(sftp.listdir_attr(path))
    except FileNotFoundError:
        return []


def _list(sftp: Any, root: str, kind: Kind) -> list[FileInfo]:
    """Every object of one kind; data objects sit in the 256 folders data/<2 hex>/."""
    folder = posixpath.join(root, kind.value)
    folders = [folder]
    if kind is Kind.DATA:
        entries = _entries(sftp, folder)
        folders = [
            posixpath.join(folder, e.filename) for e in entries if stat.S_ISDIR(e.st_mode or 0)
        ]
    found = []
    for path in folders:
        for entry in _entries(sftp, path):
            if TEMP_MARK in entry.filename or not stat.S_ISREG(entry.st_mode or 0):
                continue
            found.append(FileInfo(entry.filename, entry.st_size or 0, entry.st_mtime or 0))
    return found


def _fsync(f: Any) -> None:
    """Flush the file to the server's disk before it is renamed into place.

    paramiko has no call for OpenSSH's fsync@openssh.com extension; a server without
    it answers "unsupported", and the write goes on as restic's does.
    """
    try:
        f.sftp._request(paramiko.sftp.CMD_EXTENDED, "fsync@openssh.com", f.handle)
    except (OSError, paramiko.SFTPError) as exc:
        if isinstance(exc, CONNECTION_ERRORS):
            raise


class SftpBackend:
    """A repository folder on an SSH server: `config`, `keys/`, `data/<2 hex>/`, ..."""

    def __init__(self, where: SftpLocation, location: str, options: BackendOptions) -> None:
        self.location = location
        self._where = where
        self._root = where.path
        self._options = options
        self._home = os.path.expanduser("~")
        self._lock = threading.Lock()
        # Bounds concurrent transfers; each thread has its own SFTP channel.
        self._slots = threading.BoundedSemaphore(max(1, options.connections))
        self._local = threading.local()
        self._connection: _Connection | None = None
        self._known_dirs: set[str] = set()

    # -- connection ----------------------------------------------------------------------

    def _connect(self) -> _Connection:
        """The live connection, made anew if there is none or it died."""
        with self._lock:
            if self._connection is not None and self._connection.is_active():
                return self._connection
            if self._connection is not None:
                self._connection.close()
                self._connection = None
            where = self._where
            cfg = resolve_host(where.host, home=self._home, user=where.user, port=where.port)
            hint = _hint(where.host, where.user, where.port)
            chain: list[Any] = []
            try:
                _dial(cfg, hint, self._options, self._home, chain, depth=0)
            except BaseException:
                for item in reversed(chain):
                    item.close()
                raise
            self._connection = _Connection(chain)
            return self._connection

    def _drop(self, connection: _Connection) -> None:
        with self._lock:
            if self._connection is connection:
                self._connection = None
        connection.close()

    def _sftp(self) -> tuple[Any, _Connection]:
        """This thread's SFTP client on the live connection."""
        try:
            connection = self._connect()
        except _DialError as exc:
            if exc.is_permanent:
                raise BackendError(f"{self.location}: {exc}") from exc
            raise TransientError(str(exc)) from exc
        local = self._local
        if getattr(local, "connection", None) is not connection:
            try:
                local.sftp = connection.open_sftp(self._options.read_timeout)
            except CONNECTION_ERRORS as exc:
                self._drop(connection)
                raise TransientError(f"cannot open an sftp session: {exc}") from exc
            local.connection = connection
        return local.sftp, connection

    def _run(self, what: str, func: Callable[[Any], T]) -> T:
        """func(sftp) with errors translated: connection failures become TransientError
        (and the next call reconnects), SFTP errors BackendError naming `what`."""
        with self._slots:
            sftp, connection = self._sftp()
            try:
                return func(sftp)
            except CONNECTION_ERRORS as exc:
                self._drop(connection)
                raise TransientError(self._lost(exc)) from exc
            except OSError as exc:
                if not connection.is_active():
                    self._drop(connection)
                    raise TransientError(self._lost(exc)) from exc
                reason = exc.strerror or str(exc)
                if reason == "Failure":
                    reason = "the server reported a failure (disk full?)"
                raise BackendError(f"{what}: {reason}") from exc

    def _lost(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return f"no answer from {self._where.host} within {self._options.read_timeout:g} s"
        return f"connection to {self._where.host} lost ({exc or type(exc).__name__})"

    def open(self, *, create: bool) -> None:
        """Connect for the first time: any failure here is final, a server that is down
        when the command starts is not a blip worth a minute of retries."""
        try:
            self._sftp()
        except (TransientError, _DialError) as exc:
            raise BackendError(f"{self.location}: {exc}") from exc
        if create:
            try:
                self._run(self._root, lambda sftp: self._makedirs(sftp, self._root))
            except TransientError as exc:
                raise BackendError(f"{self.location}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    # -- objects ---------------------------------------------------------------------------

    def _path(self, handle: Handle) -> str:
        if handle.kind is Kind.CONFIG:
            return posixpath.join(self._root, "config")
        if handle.kind is Kind.DATA:
            return posixpath.join(self._root, "data", handle.name[:2], handle.name)
        return posixpath.join(self._root, handle.kind.value, handle.name)

    def exists(self) -> bool:
        def is_config(sftp: Any) -> bool:
            try:
                st = sftp.stat(posixpath.join(self._root, "config"))
            except FileNotFoundError:
                return False
            return stat.S_ISREG(st.st_mode or 0)

        return self._run(self.location, is_config)

    def read(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        return self._run(str(handle), lambda sftp: self._read(sftp, handle, offset, length))

    def _read(self, sftp: Any, handle: Handle, offset: int, length: int | None) -> bytes:
        try:
            f = sftp.open(self._path(handle), "rb")
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"{handle}: not found") from exc
        # On failure the handle is left to paramiko's __del__, which closes it without
        # waiting: an explicit close could hang another read timeout on a dead server.
        size = f.stat().st_size
        end = size if length is None else min(size, offset + length)
        count = max(end - offset, 0)
        f.seek(offset)
        if count > MAX_REQUEST:
            f.prefetch(end)  # all requests in flight at once, not one round trip each
        # Read in request-sized pieces: paramiko's read(n) grows its result by
        # concatenation, quadratic for a 16 MiB pack.
        parts = []
        got = 0
        while got < count:
            part = f.read(min(MAX_REQUEST, count - got))
            if not part:
                break
            parts.append(part)
            got += len(part)
        f.close()
        if got != count:
            raise BackendError(f"{handle}: read {got} of {count} bytes (object changed?)")
        return b"".join(parts)

    def write(self, handle: Handle, data: bytes | bytearray | memoryview) -> None:
        payload = bytes(data)
        self._run(str(handle), lambda sftp: self._write(sftp, handle, payload))

    def _write(self, sftp: Any, handle: Handle, data: bytes) -> None:
        final = self._path(handle)
        try:
            if sftp.stat(final).st_size == len(data):
                return  # written before, e.g. by an upload retried after a lost answer
        except FileNotFoundError:
            pass
        temp = f"{final}{TEMP_MARK}{secrets.token_hex(6)}"
        f = self._create(sftp, temp)
        try:
            f.set_pipelined(True)
            f.write(data)
            _fsync(f)
            f.close()
            written = sftp.stat(temp).st_size
            if written != len(data):
                raise BackendError(f"{handle}: the server stored {written} of {len(data)} bytes")
            sftp.posix_rename(temp, final)
        except (OSError, BackendError) as exc:
            if not isinstance(exc, CONNECTION_ERRORS):
                self._remove_quietly(sftp, temp)
            raise

    def _create(self, sftp: Any, path: str) -> Any:
        """Open a new file for writing, creating missing folders (data/<2 hex>/) on demand."""
        try:
            f = sftp.open(path, "wbx", bufsize=0)
        except FileNotFoundError:
            self._makedirs(sftp, posixpath.dirname(path))
            f = sftp.open(path, "wbx", bufsize=0)
        try:
            f.chmod(FILE_MODE)
        except CONNECTION_ERRORS:
            raise
        except OSError:
            pass  # some sftp-only hosts refuse chmod; the folder's permissions still apply
        return f

    def _makedirs(self, sftp: Any, path: str) -> None:
        if not path or path in self._known_dirs or posixpath.dirname(path) == path:
            return
        if not self._mkdir(sftp, path):
            self._makedirs(sftp, posixpath.dirname(path))
            if not self._mkdir(sftp, path):
                raise OSError(f"cannot create folder {path}")
        self._known_dirs.add(path)

    @staticmethod
    def _mkdir(sftp: Any, path: str) -> bool:
        """Whether the folder exists after trying to make it (another writer may have)."""
        try:
            sftp.mkdir(path)
        except CONNECTION_ERRORS:
            raise
        except OSError:
            return _is_dir(sftp, path)
        return True

    def _remove_quietly(self, sftp: Any, path: str) -> None:
        try:
            sftp.remove(path)
        except (OSError, paramiko.SSHException):
            return

    def list(self, kind: Kind) -> Iterator[FileInfo]:
        # Collected whole inside _run, so that errors are translated there.
        return iter(self._run(f"list {kind.value}", lambda sftp: _list(sftp, self._root, kind)))

    def stat(self, handle: Handle) -> FileInfo:
        def stat_one(sftp: Any) -> FileInfo:
            try:
                st = sftp.stat(self._path(handle))
            except FileNotFoundError as exc:
                raise ObjectNotFound(f"{handle}: not found") from exc
            return FileInfo(handle.name, st.st_size or 0, st.st_mtime or 0)

        return self._run(str(handle), stat_one)

    def delete(self, handle: Handle) -> None:
        def remove(sftp: Any) -> None:
            try:
                sftp.remove(self._path(handle))
            except FileNotFoundError:
                return

        self._run(str(handle), remove)


def open_sftp(location: str, options: BackendOptions, *, create: bool = False) -> SftpBackend:
    """The backend for `sftp:LOCATION`, connected (docs/usage.md, repository locations)."""
    backend = SftpBackend(parse_location(location), f"sftp:{location}", options)
    backend.open(create=create)
    return backend
