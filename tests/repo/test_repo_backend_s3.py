"""The s3 backend (repo.backend.s3): locations, layout, bucket creation and error mapping."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from servers.s3 import new_bucket_name, s3_client

from repo.backend import Backend, BackendOptions, open_backend
from repo.backend.retry import RetryBackend
from repo.backend.s3 import BucketNotFound, S3Backend, S3Location, open_s3, parse_location
from repo.errors import BackendError, ObjectNotFound, TransientError
from repo.types import Handle, Kind

FAST = BackendOptions(connect_timeout=1, read_timeout=0.5, retry_deadline=5)
CONFIG = Handle(Kind.CONFIG, "config")
NAME = "3f" + "a1" * 31


# -- locations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bucket", S3Location(None, "bucket", "")),
        ("bucket/", S3Location(None, "bucket", "")),
        ("my.bucket/a/b/", S3Location(None, "my.bucket", "a/b")),
        ("https://s3.example.com/bkt", S3Location("https://s3.example.com", "bkt", "")),
        ("https://s3.example.com/bkt/p", S3Location("https://s3.example.com", "bkt", "p")),
        ("http://127.0.0.1:9000/bkt/x//y/", S3Location("http://127.0.0.1:9000", "bkt", "x/y")),
        ("HTTPS://Host.example/bkt", S3Location("https://Host.example", "bkt", "")),
    ],
)
def test_parse_location(text: str, expected: S3Location) -> None:
    """Endpoint URLs, bare AWS buckets and prefixes split into endpoint, bucket and prefix."""
    assert parse_location(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no bucket"),
        ("https://host.example", "no bucket"),
        ("https://host.example/", "no bucket"),
        ("https:///bucket", "invalid endpoint"),
        ("https://host.example:99999/bucket", "invalid endpoint"),
        ("https://key:secret@host.example/bucket", "invalid endpoint"),
        ("https://host.example/bucket?x=1", "query"),
        ("b", "invalid bucket"),
        ("bad bucket/p", "invalid bucket"),
        ("bucket/a/../b", "segments"),
    ],
)
def test_parse_location_rejects(text: str, message: str) -> None:
    """Malformed locations fail with a one-line error naming the location."""
    with pytest.raises(BackendError, match=message) as caught:
        parse_location(text)
    assert str(caught.value).startswith(f"s3:{text}: ")
    assert "\n" not in str(caught.value)


def test_object_keys_follow_the_local_layout() -> None:
    """Keys are the local layout's relative paths, under the prefix when there is one."""
    with_prefix = S3Location(None, "b", "p/q")
    assert with_prefix.key(CONFIG) == "p/q/config"
    assert with_prefix.key(Handle(Kind.DATA, NAME)) == f"p/q/data/3f/{NAME}"
    assert with_prefix.key(Handle(Kind.SNAPSHOT, NAME)) == f"p/q/snapshots/{NAME}"
    bare = S3Location(None, "b", "")
    assert bare.key(Handle(Kind.KEY, NAME)) == f"keys/{NAME}"
    assert bare.folder(Kind.LOCK) == "locks/"


def test_objects_land_under_the_prefix(s3_server: str, s3_backend: Backend) -> None:
    """On the server, every kind of object has the key the local layout would give it."""
    for kind in (Kind.KEY, Kind.DATA, Kind.INDEX, Kind.SNAPSHOT, Kind.LOCK):
        s3_backend.write(Handle(kind, NAME), b"x")
    s3_backend.write(CONFIG, b"c")
    where = parse_location(s3_backend.location.removeprefix("s3:"))
    client = s3_client(s3_server)
    listed = client.list_objects_v2(Bucket=where.bucket, Prefix=f"{where.prefix}/")
    client.close()
    keys = {item["Key"].removeprefix(f"{where.prefix}/") for item in listed["Contents"]}
    expected = {"config", f"data/3f/{NAME}"} | {
        f"{k}/{NAME}" for k in ("keys", "index", "snapshots", "locks")
    }
    assert keys == expected


# -- buckets ---------------------------------------------------------------------------


def test_init_creates_the_bucket(s3_server: str) -> None:
    """With create=True the missing bucket reads as no repository and the first write makes it."""
    bucket = new_bucket_name()
    backend = open_backend(f"s3:{s3_server}/{bucket}/repo", create=True, options=FAST)
    assert not backend.exists()
    assert list(backend.list(Kind.KEY)) == []
    backend.write(Handle(Kind.KEY, NAME), b"key")
    backend.write(CONFIG, b"config")
    assert backend.exists()
    client = s3_client(s3_server)
    assert client.get_object(Bucket=bucket, Key=f"repo/keys/{NAME}")["Body"].read() == b"key"
    client.close()
    backend.close()


def test_missing_bucket_without_create(s3_server: str) -> None:
    """Without create a missing bucket is no repository, and a write names the bucket."""
    bucket = new_bucket_name()
    backend = open_backend(f"s3:{s3_server}/{bucket}", options=FAST)
    assert not backend.exists()
    assert list(backend.list(Kind.SNAPSHOT)) == []
    backend.delete(Handle(Kind.LOCK, NAME))
    with pytest.raises(BackendError, match=f"bucket {bucket} does not exist"):
        backend.write(Handle(Kind.LOCK, NAME), b"lock")
    backend.close()


# -- reads and listings ------------------------------------------------------------------


def test_range_read_of_a_large_object(s3_backend: Backend) -> None:
    """A byte range from the middle of a megabyte object comes back exactly."""
    data = bytes(range(256)) * 4096
    handle = Handle(Kind.DATA, NAME)
    s3_backend.write(handle, data)
    assert s3_backend.read(handle, 500_000, 1234) == data[500_000:501_234]
    assert s3_backend.read(handle, len(data) - 10) == data[-10:]


@pytest.mark.slow
def test_listing_more_than_one_page(s3_backend: Backend) -> None:
    """A listing of more than 1000 objects (one S3 page) yields every one of them."""
    names = {f"{i:064x}" for i in range(1100)}
    with ThreadPoolExecutor(7) as pool:  # the connection pool's size: options.connections + 2
        list(pool.map(lambda n: s3_backend.write(Handle(Kind.LOCK, n), b"l"), names))
    assert {f.name for f in s3_backend.list(Kind.LOCK)} == names


def test_missing_object_is_object_not_found(s3_backend: Backend) -> None:
    """read, ranged read and stat of an absent object raise ObjectNotFound naming it."""
    handle = Handle(Kind.INDEX, NAME)
    for call in (
        lambda: s3_backend.read(handle),
        lambda: s3_backend.read(handle, 5, 0),
        lambda: s3_backend.stat(handle),
    ):
        with pytest.raises(ObjectNotFound, match=f"index/{NAME}"):
            call()


# -- failures ----------------------------------------------------------------------------


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port bound but not listening: connecting is refused, and nobody else can take it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_closed_port_fails_fast() -> None:
    """An endpoint nobody listens on fails at once with a one-line BackendError."""
    with closed_port() as port:
        backend = open_backend(f"s3:http://127.0.0.1:{port}/bucket/p", options=FAST)
        start = time.monotonic()
        with pytest.raises(BackendError, match="cannot connect") as caught:
            backend.exists()
    assert time.monotonic() - start < 10
    assert not isinstance(caught.value, TransientError)
    assert "\n" not in str(caught.value)


def test_missing_credentials_are_named(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no credentials anywhere the error says how to provide them."""
    # s3_env already points the config files nowhere and turns instance metadata off.
    for name in ("ACCESS_KEY_ID", "SECRET_ACCESS_KEY", "CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(f"AWS_{name}", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    backend = open_backend(f"s3:{s3_server}/{new_bucket_name()}", options=FAST)
    with pytest.raises(BackendError, match="AWS_ACCESS_KEY_ID"):
        backend.exists()


@dataclass
class Reply:
    """One canned HTTP answer of the stub server."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Stub:
    """An HTTP server that answers requests from a list of canned replies, the last repeating."""

    replies: list[Reply]
    endpoint: str = ""
    requests: list[str] = field(default_factory=list)
    hang: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None

    def stop(self) -> None:
        """Stop answering and close the listening socket (idempotent)."""
        self.hang.set()
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def _error(status: int, code: str) -> Reply:
    xml = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>m</Message></Error>"
    return Reply(status, xml.encode(), {"Content-Type": "application/xml"})


@pytest.fixture
def stub(s3_env: dict[str, str]) -> Iterator[Stub]:
    """A stub S3 server on 127.0.0.1 for faults moto cannot produce."""
    state = Stub([Reply(200)])
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.1 so that botocore's `Expect: 100-continue` is answered, not waited out.
        protocol_version = "HTTP/1.1"

        def answer(self) -> None:
            self.close_connection = True  # a stopped stub must refuse, not serve kept-alive
            with lock:
                state.requests.append(f"{self.command} {self.path}")
                reply = state.replies.pop(0) if len(state.replies) > 1 else state.replies[0]
            if reply.status == 0:  # never answer: the client's read timeout must fire
                state.hang.wait(10)
                return
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self.send_response(reply.status)
            self.send_header("Connection", "close")
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if "Content-Length" not in reply.headers:
                self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)

        do_GET = do_HEAD = do_PUT = do_DELETE = answer

        def log_message(self, format: str, *args: object) -> None:
            return None

    state.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=state.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.endpoint = f"http://127.0.0.1:{state.server.server_address[1]}"
    yield state
    state.stop()
    thread.join()


def _stub_backend(stub: Stub) -> S3Backend:
    return open_s3(f"{stub.endpoint}/bucket/p", FAST)


def test_server_error_once_is_retried(stub: Stub) -> None:
    """A 500 answer is transient: RetryBackend asks again and gets the object."""
    stub.replies = [_error(500, "InternalError"), Reply(200, b"hello")]
    backend = RetryBackend(_stub_backend(stub), deadline=5)
    assert backend.read(CONFIG) == b"hello"
    assert stub.requests == ["GET /bucket/p/config"] * 2


@pytest.mark.parametrize(
    ("reply", "error", "message"),
    [
        (_error(503, "SlowDown"), TransientError, "503"),
        (_error(400, "RequestTimeout"), TransientError, "RequestTimeout"),
        (_error(403, "AccessDenied"), BackendError, "access denied"),
        (_error(403, "InvalidAccessKeyId"), BackendError, "check the credentials"),
        (_error(400, "InvalidArgument"), BackendError, "InvalidArgument"),
        (_error(404, "NoSuchKey"), ObjectNotFound, "config: not found"),
        (_error(404, "NoSuchBucket"), BucketNotFound, "bucket bucket does not exist"),
        (Reply(0), TransientError, "broke"),
    ],
)
def test_error_mapping(stub: Stub, reply: Reply, error: type[Exception], message: str) -> None:
    """S3 error answers and timeouts map to transient, missing and plain backend errors."""
    stub.replies = [reply]
    with pytest.raises(BackendError, match=message) as caught:
        _stub_backend(stub).read(CONFIG)
    assert type(caught.value) is error
    assert "\n" not in str(caught.value)


def test_refused_after_an_answer_is_transient(stub: Stub) -> None:
    """Once the server has answered, a refused connection is a blip worth retrying."""
    stub.replies = [_error(404, "NoSuchKey")]
    backend = _stub_backend(stub)
    assert not backend.exists()
    stub.stop()
    with pytest.raises(
        TransientError, match=r"cannot reach http://127\.0\.0\.1:\d+ \(connection refused\)"
    ):
        backend.read(CONFIG)


def test_rewrite_without_conditional_writes(stub: Stub) -> None:
    """A server without If-None-Match support gets a stat first; the same size is success."""
    stored = Reply(200, headers={"Content-Length": "3"})
    stub.replies = [_error(501, "NotImplemented"), Reply(404), Reply(200), stored]
    backend = _stub_backend(stub)
    backend.write(Handle(Kind.LOCK, NAME), b"abc")
    backend.write(Handle(Kind.LOCK, NAME), b"abc")
    put, head = f"PUT /bucket/p/locks/{NAME}", f"HEAD /bucket/p/locks/{NAME}"
    assert stub.requests == [put, head, put, head]
