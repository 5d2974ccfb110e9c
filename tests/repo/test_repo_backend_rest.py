"""The REST and rclone backends beyond the conformance suite: locations, failures, servers."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import ipaddress
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from servers import unavailable
from servers.rest import RestServer

from repo.backend import BackendOptions, open_backend
from repo.backend.rclone import open_rclone, start_rclone
from repo.backend.rest import RestBackend, RestLocation, parse_rest_location
from repo.errors import BackendError, TransientError
from repo.types import Handle, Kind

WRONG = "not-the-password"
TLS_PASSWORD = "p"
LOOPBACK = ipaddress.IPv4Address("127.0.0.1")
FAST = BackendOptions(connect_timeout=2.0, read_timeout=2.0, retry_deadline=5.0)


def _handle(kind: Kind, data: bytes) -> Handle:
    return Handle(kind, hashlib.sha256(data).hexdigest())


# -- parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://host/", RestLocation("http", "host", 80, "/")),
        ("http://host", RestLocation("http", "host", 80, "/")),
        ("https://host:8443/a/b", RestLocation("https", "host", 8443, "/a/b/")),
        (
            "http://u:p@10.0.0.1:8000/repo/",
            RestLocation("http", "10.0.0.1", 8000, "/repo/", "u", "p"),
        ),
        ("https://[::1]/r", RestLocation("https", "::1", 443, "/r/")),
        ("http://us%40er:p%3Aa%2Fss@h/", RestLocation("http", "h", 80, "/", "us@er", "p:a/ss")),
        ("http://user@h:1/", RestLocation("http", "h", 1, "/", "user", None)),
    ],
)
def test_parse_rest_location(text: str, expected: RestLocation) -> None:
    """Scheme, host, port (defaulted), path (slashed) and percent-decoded login come apart."""
    assert parse_rest_location(text) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("ftp://host/", "http:// or https://"),
        ("host:8000/repo", "http:// or https://"),
        ("http:///repo", "no host"),
        ("http://host:99999/", "invalid URL"),
        ("http://host/?x=1", "query"),
    ],
)
def test_parse_rest_location_rejects(text: str, words: str) -> None:
    """A malformed location is a BackendError naming it."""
    with pytest.raises(BackendError, match=words):
        parse_rest_location(text)


def test_location_hides_the_password() -> None:
    """The backend's location (used in every message) never shows the password."""
    backend = RestBackend(parse_rest_location("http://me:s3cret@h:81/r"), FAST)
    assert backend.location == "rest:http://me:***@h:81/r/"


# -- a stub server for failures a real server does not produce on demand -------------------


# The requests each stub server of the running test received, in order.
requests: list[list[str]] = []


class _Stub(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    answers: ClassVar[list[tuple[int, bytes]]] = []
    seen: ClassVar[list[str]] = []
    is_closing = False
    delay = 0.0

    def _answer(self) -> None:
        type(self).seen.append(f"{self.command} {self.path}")
        time.sleep(self.delay)
        status, body = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        # Close without announcing it, as a server dropping an idle keep-alive connection.
        self.close_connection = self.is_closing

    do_GET = do_HEAD = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def needs_rclone() -> None:
    """Skip (or fail in CI) where the rclone program is missing."""
    if shutil.which("rclone") is None:
        unavailable("rclone is not installed")


@pytest.fixture
def stub() -> Iterator[Callable[..., str]]:
    """Start a stub HTTP server with given answers; yields a function returning its URL."""
    servers: list[http.server.ThreadingHTTPServer] = []
    requests.clear()

    def start(*answers: tuple[int, bytes], is_closing: bool = False, delay: float = 0.0) -> str:
        handler = type(
            "Handler",
            (_Stub,),
            {"answers": list(answers), "seen": [], "is_closing": is_closing, "delay": delay},
        )
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        requests.append(handler.seen)
        return f"http://127.0.0.1:{server.server_address[1]}/repo/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_5xx_once_is_retried(stub: Callable[..., str]) -> None:
    """A 503 is transient: the retry wrapper asks again and succeeds."""
    url = stub((503, b"busy"), (200, b""))
    backend = open_backend(f"rest:{url}", options=FAST)
    try:
        assert backend.exists()
    finally:
        backend.close()
    assert requests[0] == ["HEAD /repo/config", "HEAD /repo/config"]


def test_5xx_that_persists_gives_up_within_the_deadline(stub: Callable[..., str]) -> None:
    """A server that keeps failing fails the call once the retry deadline has passed."""
    url = stub((500, b"broken"))
    options = BackendOptions(connect_timeout=1.0, read_timeout=1.0, retry_deadline=1.0)
    backend = open_backend(f"rest:{url}", options=options)
    start = time.monotonic()
    with pytest.raises(BackendError, match=r"server error 500.*gave up"):
        backend.exists()
    assert time.monotonic() - start < 5
    backend.close()


def test_server_ignoring_range_is_sliced(stub: Callable[..., str]) -> None:
    """A server that answers a range request with the whole object still gives the slice."""
    url = stub((200, bytes(range(100))))
    backend = RestBackend(parse_rest_location(url), FAST)
    handle = Handle(Kind.DATA, "ab" * 32)
    assert backend.read(handle, 10, 5) == bytes(range(10, 15))
    assert backend.read(handle, 95) == bytes(range(95, 100))
    backend.close()


def test_dropped_keep_alive_connection_is_reopened(stub: Callable[..., str]) -> None:
    """A server closing an idle connection costs a reconnect, not a transient failure."""
    url = stub((200, b"x"), is_closing=True)
    backend = RestBackend(parse_rest_location(url), FAST)
    for _ in range(3):
        assert backend.exists()
    backend.close()
    assert len(requests[0]) == 3


def test_read_timeout_is_transient(stub: Callable[..., str]) -> None:
    """A server that does not answer within the read timeout gives a TransientError."""
    url = stub((200, b""), delay=1.0)
    options = BackendOptions(connect_timeout=1.0, read_timeout=0.2)
    backend = RestBackend(parse_rest_location(url), options)
    with pytest.raises(TransientError, match=r"no answer within 0\.2 s"):
        backend.exists()
    backend.close()


def test_unexpected_status_names_object(stub: Callable[..., str]) -> None:
    """An answer outside the protocol is a BackendError with location, object and status."""
    url = stub((400, b"bad name\nmore"))
    backend = RestBackend(parse_rest_location(url), FAST)
    with pytest.raises(BackendError, match=r"rest:http://127.*: data/abab.*: HTTP 400 .*bad name$"):
        backend.read(Handle(Kind.DATA, "ab" * 32))
    backend.close()


# -- failing fast ---------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_closed_port_fails_fast() -> None:
    """A server that is down at start is one BackendError at once, not minutes of retries."""
    backend = open_backend(f"rest:http://127.0.0.1:{_closed_port()}/repo")
    start = time.monotonic()
    with pytest.raises(BackendError, match="cannot connect: connection refused") as info:
        backend.exists()
    assert not isinstance(info.value, TransientError)
    assert time.monotonic() - start < 10
    backend.close()


def test_wrong_password_is_authentication_failed(rest_server: RestServer) -> None:
    """A login the server refuses is a BackendError saying so, not retried."""
    backend = open_backend(rest_server.location("auth/", password=WRONG))
    with pytest.raises(BackendError, match="authentication failed") as info:
        backend.exists()
    assert WRONG not in str(info.value)
    backend.close()


# -- the append-only server ------------------------------------------------------------------


def test_append_only_server(rest_server: RestServer, append_only_server: RestServer) -> None:
    """Append-only: objects are created, an existing one is written again, locks are removed,
    and deleting anything else fails with a clear message."""
    open_backend(rest_server.location("ao/"), create=True).close()
    backend = open_backend(append_only_server.location("ao/"), options=FAST)
    data, lock = b"pack", b"lock"
    backend.write(_handle(Kind.DATA, data), data)
    backend.write(_handle(Kind.DATA, data), data)  # a retried upload
    backend.write(_handle(Kind.LOCK, lock), lock)
    backend.delete(_handle(Kind.LOCK, lock))
    assert list(backend.list(Kind.LOCK)) == []
    with pytest.raises(BackendError, match=r"data/[0-9a-f]{64}: the server refused to delete"):
        backend.delete(_handle(Kind.DATA, data))
    assert backend.read(_handle(Kind.DATA, data)) == data
    backend.close()


# -- rclone ---------------------------------------------------------------------------------


def test_rclone_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without the rclone program, rclone: locations fail with one clear line."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BackendError, match="rclone is not installed"):
        open_rclone(str(tmp_path), FAST)


@pytest.mark.usefixtures("needs_rclone")
def test_rclone_exiting_early_says_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An rclone that cannot serve the remote ends with its own last words."""
    (tmp_path / "rclone.conf").write_text("")
    monkeypatch.setenv("RCLONE_CONFIG", str(tmp_path / "rclone.conf"))
    with pytest.raises(BackendError, match=r"rclone:nosuchremote:x: rclone exited: .*nosuchremote"):
        open_rclone("nosuchremote:x", FAST)


@pytest.mark.usefixtures("needs_rclone")
def test_rclone_child_ends_with_close(tmp_path: Path) -> None:
    """close() stops the rclone child."""
    backend = open_rclone(str(tmp_path / "r"), FAST, create=True)
    process = backend.server.process
    assert backend.exists() is False
    backend.close()
    assert process.poll() is not None


@pytest.mark.usefixtures("needs_rclone")
def test_rclone_dying_midway_fails_at_once(tmp_path: Path) -> None:
    """A child that dies is reported as such at the next call, not retried for minutes."""
    backend = open_backend(f"rclone:{tmp_path / 'r'}", create=True)
    backend.exists()
    process = backend.inner.server.process  # type: ignore[attr-defined]
    process.kill()
    process.wait()
    start = time.monotonic()
    with pytest.raises(BackendError, match=r"rclone:.*: rclone exited"):
        backend.exists()
    assert time.monotonic() - start < 5
    backend.close()


@pytest.mark.usefixtures("needs_rclone")
def test_rclone_serving_without_login_is_refused(tmp_path: Path) -> None:
    """An rclone that serves without asking for the login is stopped, not used."""
    with pytest.raises(BackendError, match="serves without a login"):
        start_rclone(str(tmp_path), user="u", password=TLS_PASSWORD, extra_args=["--user", ""])


# -- TLS ------------------------------------------------------------------------------------


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(LOOPBACK)]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.mark.usefixtures("needs_rclone")
def test_https_with_cacert_and_insecure(tmp_path: Path) -> None:
    """An https server with a private CA: refused by default, trusted with --cacert, and
    reachable with insecure TLS."""
    cert, key = _self_signed(tmp_path)
    server = start_rclone(
        str(tmp_path / "root"),
        user="u",
        password=TLS_PASSWORD,
        extra_args=["--cert", str(cert), "--key", str(key)],
    )
    try:
        location = f"rest:{server.url.replace('https://', 'https://u:p@')}repo/"
        assert location.startswith("rest:https://")
        refused = open_backend(location, options=FAST)
        with pytest.raises(BackendError, match="TLS certificate not trusted"):
            refused.exists()
        refused.close()
        for options in (
            BackendOptions(cacert=str(cert)),
            BackendOptions(is_insecure_tls=True),
        ):
            backend = open_backend(location, options=options, create=True)
            data = os.urandom(100)
            backend.write(_handle(Kind.INDEX, data), data)
            assert backend.read(_handle(Kind.INDEX, data), 10, 10) == data[10:20]
            backend.close()
    finally:
        server.stop()


def test_missing_cacert_is_one_line(tmp_path: Path) -> None:
    """A --cacert file that cannot be read is a BackendError naming it."""
    with pytest.raises(BackendError, match=r"cannot load CA certificate .*nope\.pem"):
        open_backend("rest:https://h/", options=BackendOptions(cacert=str(tmp_path / "nope.pem")))


def test_invalid_location_error_hides_the_password() -> None:
    """A rejected URL is named in the error without its password."""
    with pytest.raises(BackendError) as caught:
        parse_rest_location("ftp://user:s3cret-pw@host/repo")
    assert "s3cret-pw" not in str(caught.value)
    assert "user:***@host" in str(caught.value)
