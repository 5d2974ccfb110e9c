"""The REST backend: restic's rest-server protocol over HTTP/1.1 keep-alive (http.client)."""

from __future__ import annotations

import base64
import http.client
import json
import re
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

from repo.backend import BackendOptions
from repo.errors import BackendError, ObjectNotFound, TransientError
from repo.types import FileInfo, Handle, Kind

# restic's REST protocol: listings in v2 carry sizes; a v1 server answers with bare names.
LIST_V2 = "application/vnd.x.restic.rest.v2"
# Statuses worth retrying besides 5xx: request timeout and rate limiting.
RETRY_STATUSES = frozenset({408, 429})
# Failures of a reused keep-alive connection that mean the server closed it while idle.
STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


@dataclass(frozen=True, slots=True)
class RestLocation:
    """A parsed `rest:` location: where the server is, the repository's path, the login."""

    scheme: str
    host: str
    port: int
    path: str  # starts and ends with "/"
    user: str | None = None
    password: str | None = None

    def redacted(self) -> str:
        """The URL with the password hidden, for messages."""
        login = ""
        if self.user is not None:
            login = f"{urllib.parse.quote(self.user, safe='')}"
            login += ":***@" if self.password else "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{login}{host}:{self.port}{self.path}"


def parse_rest_location(text: str) -> RestLocation:
    """Parse `http(s)://[USER:PASS@]HOST[:PORT]/[PATH]` (user and password percent-encoded)."""
    # Error messages show the URL without its password.
    shown = re.sub(r"//([^/@:]*):[^/@]*@", r"//\1:***@", text)
    try:
        url = urllib.parse.urlsplit(text)
        port = url.port
    except ValueError as exc:
        raise BackendError(f"rest:{shown}: invalid URL: {exc}") from exc
    if url.scheme not in ("http", "https"):
        raise BackendError(f"rest:{shown}: the URL must start with http:// or https://")
    if not url.hostname:
        raise BackendError(f"rest:{shown}: the URL names no host")
    if url.query or url.fragment:
        raise BackendError(f"rest:{shown}: the URL must not carry a query or fragment")
    path = "/" + url.path.strip("/") + "/" if url.path.strip("/") else "/"
    user = None if url.username is None else urllib.parse.unquote(url.username)
    password = None if url.password is None else urllib.parse.unquote(url.password)
    default_port = 443 if url.scheme == "https" else 80
    return RestLocation(url.scheme, url.hostname, port or default_port, path, user, password)


def _tune(sock: socket.socket, read_timeout: float) -> None:
    sock.settimeout(read_timeout)
    # http.client sends a memoryview body apart from the headers; without NODELAY, Nagle's
    # algorithm and the server's delayed ACK would hold each upload back by ~40 ms.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _HTTPConnection(http.client.HTTPConnection):
    """Connects within the connect timeout, then waits at most read_timeout per read."""

    read_timeout = 60.0

    def connect(self) -> None:
        super().connect()
        _tune(self.sock, self.read_timeout)


class _HTTPSConnection(http.client.HTTPSConnection):
    """As _HTTPConnection, with TLS; the handshake counts against the connect timeout."""

    read_timeout = 60.0

    def connect(self) -> None:
        super().connect()
        _tune(self.sock, self.read_timeout)


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    reason: str
    body: bytes
    headers: http.client.HTTPMessage


def _ssl_context(options: BackendOptions, location: str) -> ssl.SSLContext:
    """System roots, or only --cacert's (restic's meaning); --insecure-tls skips checks."""
    try:
        context = ssl.create_default_context(cafile=options.cacert)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        message = f"{location}: cannot load CA certificate {options.cacert}: {reason}"
        raise BackendError(message) from exc
    if options.is_insecure_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


class RestBackend:
    """A repository on a rest-server: one keep-alive connection per thread.

    The protocol carries no modification times, so stat and list report 0 (unknown):
    locks here are judged by the age their writer recorded (docs/design.md, locks).
    """

    def __init__(
        self, where: RestLocation, options: BackendOptions, *, location: str | None = None
    ) -> None:
        self.where = where
        self.location = location or f"rest:{where.redacted()}"
        self._options = options
        self._context = _ssl_context(options, self.location) if where.scheme == "https" else None
        self._headers: dict[str, str] = {}
        if where.user is not None:
            login = f"{where.user}:{where.password or ''}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(login).decode()
        self._local = threading.local()
        self._mutex = threading.Lock()
        self._connections: list[http.client.HTTPConnection] = []
        # Until the server has answered once, "connection refused" means a wrong address or
        # a server that is down: fail at once instead of retrying for the whole deadline.
        self._is_reached = False

    # -- connections -----------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._new_connection()
            self._local.conn = conn
            with self._mutex:
                self._connections.append(conn)
        return conn

    def _new_connection(self) -> http.client.HTTPConnection:
        host, port, timeout = self.where.host, self.where.port, self._options.connect_timeout
        if self._context is not None:
            https = _HTTPSConnection(host, port, timeout=timeout, context=self._context)
            https.read_timeout = self._options.read_timeout
            return https
        conn = _HTTPConnection(host, port, timeout=timeout)
        conn.read_timeout = self._options.read_timeout
        return conn

    def _connect(self, conn: http.client.HTTPConnection) -> None:
        try:
            conn.connect()
        except ssl.SSLCertVerificationError as exc:
            message = f"{self.location}: TLS certificate not trusted: {exc.verify_message}"
            raise BackendError(message) from exc
        except ssl.SSLError as exc:
            message = f"{self.location}: TLS handshake failed: {exc.reason or exc}"
            raise BackendError(message) from exc
        except TimeoutError as exc:
            timeout = self._options.connect_timeout
            raise TransientError(f"connect timed out after {timeout:g} s") from exc
        except OSError as exc:
            if not self._is_reached:
                raise BackendError(f"{self.location}: cannot connect: {_reason(exc)}") from exc
            raise TransientError(f"cannot connect: {_reason(exc)}") from exc

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | bytearray | memoryview | None = None,
        headers: dict[str, str] | None = None,
    ) -> _Reply:
        """Send one request and read the whole answer; failures of the exchange are
        TransientErrors, and the connection is dropped so the next call reconnects."""
        for attempt in range(2):
            conn = self._connection()
            is_reused = conn.sock is not None
            if not is_reused:
                self._connect(conn)
            try:
                conn.request(method, path, body=body, headers={**self._headers, **(headers or {})})
                response = conn.getresponse()
                data = response.read()
            except STALE_CONNECTION as exc:
                conn.close()
                if is_reused and attempt == 0:
                    continue  # the server closed an idle keep-alive connection: reconnect
                raise TransientError(_reason(exc)) from exc
            except TimeoutError as exc:
                conn.close()
                timeout = self._options.read_timeout
                raise TransientError(f"no answer within {timeout:g} s") from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise TransientError(_reason(exc)) from exc
            self._is_reached = True
            return _Reply(response.status, response.reason, data, response.headers)
        raise AssertionError("unreachable")  # pragma: no cover

    def _path(self, handle: Handle) -> str:
        if handle.kind is Kind.CONFIG:
            return self.where.path + "config"
        return f"{self.where.path}{handle.kind.value}/{handle.name}"

    def _fail(self, reply: _Reply, what: str) -> BackendError:
        """The error for an answer the caller did not expect."""
        if reply.status == 404:
            return ObjectNotFound(f"{self.location}: {what}: not found")
        if reply.status == 401:
            return BackendError(f"{self.location}: authentication failed (HTTP 401)")
        if reply.status == 403:
            return BackendError(
                f"{self.location}: {what}: authentication failed: access denied (HTTP 403)"
            )
        if reply.status >= 500 or reply.status in RETRY_STATUSES:
            return TransientError(f"server error {reply.status} {reply.reason}")
        detail = reply.body[:200].decode(errors="replace").strip().splitlines()
        suffix = f": {detail[0]}" if detail else ""
        return BackendError(f"{self.location}: {what}: HTTP {reply.status} {reply.reason}{suffix}")

    # -- the Backend interface -------------------------------------------------------

    def create(self) -> None:
        """Ask the server to create the repository's folders (`POST /?create=true`)."""
        reply = self._request("POST", self.where.path + "?create=true")
        if reply.status != 200:
            raise self._fail(reply, "create repository")

    def exists(self) -> bool:
        reply = self._request("HEAD", self.where.path + "config")
        if reply.status == 404:
            return False
        if reply.status != 200:
            raise self._fail(reply, "config")
        return True

    def read(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        if length == 0:
            self.stat(handle)  # an absent object must still raise ObjectNotFound
            return b""
        headers = {}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            headers["Range"] = f"bytes={offset}-{end}"
        reply = self._request("GET", self._path(handle), headers=headers)
        if reply.status == 416:  # the range starts past the end
            return b""
        if reply.status == 206:
            return reply.body if length is None else reply.body[:length]
        if reply.status != 200:
            raise self._fail(reply, str(handle))
        if not headers:
            return reply.body
        # The server ignored the Range header and sent the whole object.
        return reply.body[offset:] if length is None else reply.body[offset : offset + length]

    def write(self, handle: Handle, data: bytes | bytearray | memoryview) -> None:
        # Objects are never modified: a retried upload whose first reply was lost finds
        # its object in place, and an append-only server would refuse the overwrite.
        try:
            if self.stat(handle).size == len(data):
                return
        except ObjectNotFound:
            pass
        headers = {"Content-Type": "application/octet-stream"}
        reply = self._request("POST", self._path(handle), body=data, headers=headers)
        if reply.status == 403:
            message = f"{self.location}: {handle}: the server refused the upload (HTTP 403)"
            raise BackendError(message)
        if reply.status != 200:
            raise self._fail(reply, str(handle))

    def list(self, kind: Kind) -> Iterator[FileInfo]:
        # Collected whole before yielding, so every error surfaces at the call.
        reply = self._request("GET", f"{self.where.path}{kind.value}/", headers={"Accept": LIST_V2})
        if reply.status == 404:  # the server has no folder for this kind yet
            return iter(())
        if reply.status != 200:
            raise self._fail(reply, f"list {kind.value}")
        try:
            entries = json.loads(reply.body)
            if not isinstance(entries, list):
                raise TypeError("not an array")
            out = []
            for entry in entries:
                if isinstance(entry, str):  # a v1 server: names only, so ask for each size
                    out.append(self.stat(Handle(kind, entry)))
                else:
                    # The protocol gives no modification times: 0 means unknown.
                    out.append(FileInfo(str(entry["name"]), int(entry["size"])))
        except (ValueError, TypeError, KeyError) as exc:
            raise BackendError(f"{self.location}: list {kind.value}: invalid answer") from exc
        return iter(out)

    def stat(self, handle: Handle) -> FileInfo:
        reply = self._request("HEAD", self._path(handle))
        if reply.status != 200:
            raise self._fail(reply, str(handle))
        try:
            size = int(reply.headers["Content-Length"])
        except (TypeError, ValueError) as exc:
            raise BackendError(f"{self.location}: {handle}: the server sent no size") from exc
        return FileInfo(handle.name, size)  # no modification time in the protocol

    def delete(self, handle: Handle) -> None:
        reply = self._request("DELETE", self._path(handle))
        if reply.status in (200, 204, 404):
            return
        if reply.status == 403:
            if handle.kind is Kind.LOCK:
                # A server may refuse to remove locks (docs/design.md, backends: append-only);
                # failing the command here would throw away finished work, and the lock is
                # left behind as a crashed holder's would be.
                return
            message = f"{self.location}: {handle}: the server refused to delete it"
            raise BackendError(f"{message} (HTTP 403; an append-only server?)")
        raise self._fail(reply, str(handle))

    def close(self) -> None:
        with self._mutex:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()


def open_rest(location: str, options: BackendOptions, *, create: bool = False) -> RestBackend:
    """The backend for `rest:URL`; with create, the server makes the repository's folders."""
    backend = RestBackend(parse_rest_location(location), options)
    if create:
        backend.create()
    return backend
