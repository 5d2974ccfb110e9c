"""The S3 backend: a repository under a bucket and key prefix on AWS or any S3-compatible server."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

# boto3 is imported at the top here because this whole module is imported only when an
# s3: location is opened (repo.backend.open_backend defers it).
import boto3
import botocore.config
import botocore.exceptions as bce
import urllib3

from repo.backend import TEMP_MARK, BackendOptions
from repo.errors import BackendError, ObjectNotFound, TransientError
from repo.types import FileInfo, Handle, Kind

T = TypeVar("T")
DEFAULT_REGION = "us-east-1"
# Legacy us-east-1 buckets may hold capitals and run to 255 characters; the server
# judges the finer rules, this only keeps a URL's odd characters out of bucket names.
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{2,254}")
# urllib3 buries the socket error as "...: [Errno 111] Connection refused')".
_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")
_NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404"})
_DENIED = frozenset(
    {"AccessDenied", "Forbidden", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
    | {"ExpiredToken", "InvalidToken", "AllAccessDisabled"}
)
_SLOW_DOWN = frozenset(
    {"SlowDown", "RequestTimeout", "Throttling", "ThrottlingException", "RequestThrottled"}
    | {"InternalError", "ServiceUnavailable", "ConditionalRequestConflict"}
)


class BucketNotFound(BackendError):
    """The location's bucket does not exist (init creates it)."""


@dataclass(frozen=True, slots=True)
class S3Location:
    """Where a repository lives: endpoint (None for AWS), bucket and key prefix."""

    endpoint: str | None
    bucket: str
    prefix: str

    def key(self, handle: Handle) -> str:
        """The object key of a handle: the local layout's relative path under the prefix."""
        if handle.kind is Kind.CONFIG:
            relative = "config"
        elif handle.kind is Kind.DATA:
            relative = f"data/{handle.name[:2]}/{handle.name}"
        else:
            relative = f"{handle.kind.value}/{handle.name}"
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def folder(self, kind: Kind) -> str:
        """The key prefix every object of one kind starts with."""
        return f"{self.prefix}/{kind.value}/" if self.prefix else f"{kind.value}/"


def parse_location(text: str) -> S3Location:
    """Split `https://HOST[:PORT]/BUCKET[/PREFIX]`, `http://…` or `BUCKET[/PREFIX]` (AWS)."""
    endpoint, path = None, text
    if text.lower().startswith(("http://", "https://")):
        endpoint, path = _split_url(text)
    segments = [s for s in path.split("/") if s]
    if not segments:
        raise BackendError(f"s3:{text}: no bucket given: use s3:BUCKET[/PREFIX]")
    bucket, *rest = segments
    if not _BUCKET.fullmatch(bucket):
        raise BackendError(f"s3:{text}: invalid bucket name {bucket!r}")
    if any(s in {".", ".."} for s in rest):
        raise BackendError(f"s3:{text}: the key prefix may not contain . or .. segments")
    return S3Location(endpoint, bucket, "/".join(rest))


def _split_url(text: str) -> tuple[str, str]:
    """An endpoint URL's `scheme://host[:port]` and its path."""
    parts = urlsplit(text)
    try:
        has_valid_port = parts.port is None or parts.port > 0
    except ValueError:
        has_valid_port = False
    # Credentials come from the usual AWS chain, never from the location.
    if not parts.hostname or not has_valid_port or "@" in parts.netloc:
        raise BackendError(f"s3:{text}: invalid endpoint: use s3:https://HOST[:PORT]/BUCKET")
    if parts.query or parts.fragment:
        raise BackendError(f"s3:{text}: a location takes no ?query or #fragment")
    return f"{parts.scheme}://{parts.netloc}", parts.path


def open_s3(location: str, options: BackendOptions, *, create: bool = False) -> S3Backend:
    """The backend for an `s3:` location (the part after `s3:`); init passes create=True."""
    where = parse_location(location)
    client, region = _make_client(where, options, f"s3:{location}")
    return S3Backend(f"s3:{location}", where, client, region=region, create=create)


def _make_client(where: S3Location, options: BackendOptions, location: str) -> tuple[Any, str]:
    settings: dict[str, Any] = {
        "connect_timeout": options.connect_timeout,
        "read_timeout": options.read_timeout,
        # boto3 would retry for minutes on its own; RetryBackend retries under one deadline.
        "retries": {"max_attempts": 1, "mode": "standard"},
        "max_pool_connections": options.connections + 2,
    }
    if where.endpoint:
        # Self-hosted servers rarely have wildcard DNS for virtual-host buckets, and many
        # S3-compatible stores reject the CRC headers boto3 adds by default since 1.36.
        settings["s3"] = {"addressing_style": "path"}
        settings["request_checksum_calculation"] = "when_required"
        settings["response_checksum_validation"] = "when_required"
    verify: bool | str | None = options.cacert
    if options.is_insecure_tls:
        verify = False
        _silence_insecure_warnings()
    try:
        session = boto3.session.Session()
        region = session.region_name or DEFAULT_REGION
        client = session.client(
            "s3",
            region_name=region,
            endpoint_url=where.endpoint,
            verify=verify,
            config=botocore.config.Config(**settings),
        )
    except bce.BotoCoreError as exc:
        raise BackendError(f"{location}: {_one_line(exc)}") from exc
    return client, region


def _silence_insecure_warnings() -> None:
    # The user chose --insecure-tls; a warning on every request would drown the output.
    warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)


def _connect_failure(exc: BaseException) -> str:
    """Why a connection failed, in a few words: `connection refused`, `timed out`, …"""
    if isinstance(exc, bce.ConnectTimeoutError):
        return "timed out"
    inner = getattr(exc, "kwargs", {}).get("error")
    found = _ERRNO_TEXT.search(str(inner))
    return found.group(1).strip().lower() if found else "failed"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class S3Backend:
    """Objects under `PREFIX/` in one bucket, named like the local layout's files."""

    def __init__(
        self, location: str, where: S3Location, client: Any, *, region: str, create: bool
    ) -> None:
        self.location = location
        self.where = where
        self._client = client
        self._region = region
        self._is_create = create
        # Until the server has answered once, a refused connection is a wrong location,
        # not a blip: fail at once instead of retrying until the deadline.
        self._has_answered = False
        # Conditional writes (If-None-Match) keep writes create-only in one request;
        # servers that refuse them get a stat before each write instead, and servers that
        # ignore them overwrite: harmless, as names are hashes of the content.
        self._has_conditional_put = True

    # -- error translation: the one place botocore's exceptions become ours ---------------

    def _call(self, what: str, handle: Handle | None, func: Callable[[], T]) -> T:
        try:
            result = func()
        except bce.ClientError as exc:
            self._has_answered = True
            raise self._client_error(what, handle, exc) from exc
        except (bce.BotoCoreError, OSError) as exc:
            raise self._transport_error(what, exc) from exc
        self._has_answered = True
        return result

    def _client_error(self, what: str, handle: Handle | None, exc: Any) -> BackendError:
        code, status = _error_code(exc)
        if code == "NoSuchBucket":
            return BucketNotFound(
                f"{self.location}: {what}: bucket {self.where.bucket} does not exist"
            )
        if handle is not None and (code in _NOT_FOUND or status == 404):
            return ObjectNotFound(f"{handle}: not found")
        if code in _SLOW_DOWN or status >= 500:
            return TransientError(f"server error {status} ({code})")
        if code in _DENIED or status == 403:
            return BackendError(
                f"{self.location}: {what}: access denied ({code}): "
                "check the credentials and the bucket's permissions"
            )
        message = exc.response.get("Error", {}).get("Message") or ""
        return BackendError(f"{self.location}: {what}: {code} {message}".rstrip())

    def _transport_error(self, what: str, exc: BaseException) -> BackendError:
        where = f"{self.location}: {what}"
        endpoint = self._client.meta.endpoint_url
        if isinstance(exc, bce.ConnectionError) and not isinstance(exc, bce.SSLError):
            reason = _connect_failure(exc)
            if not self._has_answered:
                return BackendError(f"{where}: cannot connect to {endpoint} ({reason})")
            return TransientError(f"cannot reach {endpoint} ({reason})")
        if isinstance(exc, bce.HTTPClientError | bce.IncompleteReadError | OSError):
            # Read timeouts, resets and bodies cut short: the server was there a moment ago.
            return TransientError(f"connection to {endpoint} broke: {_one_line(exc)}")
        if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
            return BackendError(
                f"{where}: no usable AWS credentials: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or configure ~/.aws/credentials"
            )
        return BackendError(f"{where}: {_one_line(exc)}")

    # -- the Backend protocol ---------------------------------------------------------------

    def exists(self) -> bool:
        try:
            self._head(Handle(Kind.CONFIG, "config"), "open")
        except (ObjectNotFound, BucketNotFound):
            # A missing bucket usually answers a HEAD with a bare 404: no repository either way.
            return False
        return True

    def _head(self, handle: Handle, what: str) -> dict[str, Any]:
        key = self.where.key(handle)
        head: dict[str, Any] = self._call(
            what, handle, lambda: self._client.head_object(Bucket=self.where.bucket, Key=key)
        )
        return head

    def read(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        if length == 0:
            self._head(handle, f"read {handle}")  # absent objects still raise
            return b""
        if offset == 0 and length is None:
            return self._get(handle, None)[0]
        last = "" if length is None else str(offset + length - 1)
        data, is_ranged = self._get(handle, f"bytes={offset}-{last}")
        if is_ranged:
            return data
        # The server ignored the Range header and sent the whole object.
        return data[offset:] if length is None else data[offset : offset + length]

    def _get(self, handle: Handle, byte_range: str | None) -> tuple[bytes, bool]:
        """The object's bytes (or a range), and whether the server honoured the range."""
        args = {"Bucket": self.where.bucket, "Key": self.where.key(handle)}
        if byte_range:
            args["Range"] = byte_range

        def get() -> tuple[bytes, bool]:
            try:
                reply = self._client.get_object(**args)
            except bce.ClientError as exc:
                if _error_code(exc)[0] == "InvalidRange" or _error_code(exc)[1] == 416:
                    return b"", True  # a range wholly past the end: nothing there
                raise
            with reply["Body"] as body:
                return body.read(), "ContentRange" in reply

        return self._call(f"read {handle}", handle, get)

    def write(self, handle: Handle, data: bytes | bytearray | memoryview) -> None:
        body = bytes(data)
        try:
            self._put(handle, body)
        except BucketNotFound:
            # Only init may make the bucket: a backup must not recreate a deleted one.
            if not self._is_create:
                raise
            self._create_bucket()
            self._put(handle, body)

    def _put(self, handle: Handle, body: bytes) -> None:
        """Create the object; an existing one of the same size counts as written."""
        bucket, key = self.where.bucket, self.where.key(handle)

        def put() -> None:
            if self._has_conditional_put:
                try:
                    self._client.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")
                    return
                except bce.ClientError as exc:
                    code, status = _error_code(exc)
                    if code == "NotImplemented" or status == 501:
                        self._has_conditional_put = False
                    elif code != "PreconditionFailed" and status != 412:
                        raise
            if self._stored_size(bucket, key) == len(body):
                return  # a retried upload, or the same content written by another client
            self._client.put_object(Bucket=bucket, Key=key, Body=body)

        self._call(f"write {handle}", handle, put)

    def _stored_size(self, bucket: str, key: str) -> int | None:
        try:
            size: int = self._client.head_object(Bucket=bucket, Key=key)["ContentLength"]
        except bce.ClientError as exc:
            code, status = _error_code(exc)
            if code in _NOT_FOUND or status == 404:
                return None
            raise
        return size

    def _create_bucket(self) -> None:
        args: dict[str, Any] = {"Bucket": self.where.bucket}
        if self._region != DEFAULT_REGION:
            # Outside us-east-1, AWS wants the region restated in the request body.
            args["CreateBucketConfiguration"] = {"LocationConstraint": self._region}

        def create() -> None:
            try:
                self._client.create_bucket(**args)
            except bce.ClientError as exc:
                if _error_code(exc)[0] != "BucketAlreadyOwnedByYou":
                    raise

        self._call(f"create bucket {self.where.bucket}", None, create)

    def list(self, kind: Kind) -> Iterator[FileInfo]:
        folder = self.where.folder(kind)
        pages = self._call(f"list {kind.value}", None, lambda: self._pages(folder))
        for page in pages:
            for item in page:
                rest = item["Key"][len(folder) :]
                # data/ holds one level of <2 hex>/ folders; the other kinds none.
                folder_part, _, name = rest.rpartition("/")
                if bool(folder_part) != (kind is Kind.DATA) or "/" in folder_part:
                    continue
                if not name or TEMP_MARK in name:
                    continue
                yield FileInfo(name, item["Size"], item["LastModified"].timestamp())

    def _pages(self, folder: str) -> Sequence[Sequence[dict[str, Any]]]:
        """Every page of a listing, fetched before any is used, so errors surface in _call."""
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            pages = paginator.paginate(Bucket=self.where.bucket, Prefix=folder)
            return [page.get("Contents", []) for page in pages]
        except bce.ClientError as exc:
            if _error_code(exc)[0] == "NoSuchBucket":
                return []  # no bucket, no repository: an empty listing like a missing folder
            raise

    def stat(self, handle: Handle) -> FileInfo:
        head = self._head(handle, f"stat {handle}")
        return FileInfo(handle.name, head["ContentLength"], head["LastModified"].timestamp())

    def delete(self, handle: Handle) -> None:
        key = self.where.key(handle)

        def delete() -> None:
            try:
                self._client.delete_object(Bucket=self.where.bucket, Key=key)
            except bce.ClientError as exc:
                code, status = _error_code(exc)
                if code not in _NOT_FOUND and code != "NoSuchBucket" and status != 404:
                    raise

        self._call(f"delete {handle}", handle, delete)

    def close(self) -> None:
        self._client.close()


def _error_code(exc: Any) -> tuple[str, int]:
    """A ClientError's S3 error code and HTTP status."""
    response = exc.response
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return code, status
