"""The s3 server for backend tests: moto in a child process on 127.0.0.1 (session fixture)."""

from __future__ import annotations

import importlib.util
import itertools
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from repo.backend import Backend, BackendOptions, open_backend
from servers import unavailable

# moto's threaded server bound to port 0 tells us the port it got, so no port can be raced.
_LAUNCH = """
import logging, sys
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()  # serve until the test session closes our stdin
server.stop()
"""
_buckets = itertools.count()
_prefixes = itertools.count()


def s3_env_for(home: Path) -> dict[str, str]:
    """AWS variables that point boto3 at moto's fake credentials and at no real config."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        # A developer's ~/.aws must not leak in (a profile's region or endpoint).
        "AWS_CONFIG_FILE": str(home / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@pytest.fixture(scope="session")
def s3_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The AWS variables, set in this process for the session and returned for child processes."""
    env = s3_env_for(tmp_path_factory.mktemp("aws"))
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            mp.delenv(name, raising=False)
        for name, value in env.items():
            mp.setenv(name, value)
        yield env


@pytest.fixture(scope="session")
def s3_server(s3_env: dict[str, str]) -> Iterator[str]:
    """The endpoint URL (`http://127.0.0.1:PORT`) of a moto S3 server for the session."""
    if importlib.util.find_spec("moto") is None:
        unavailable("moto is not installed (pip install 'moto[server]')")
    proc = subprocess.Popen(
        [sys.executable, "-c", _LAUNCH],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        port = proc.stdout.readline().strip()
        if not port.isdigit():
            unavailable(f"moto server did not start (exit status {proc.wait(10)})")
        endpoint = f"http://127.0.0.1:{port}"
        _wait_until_answers(endpoint)
        yield endpoint
    finally:
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def _wait_until_answers(endpoint: str) -> None:
    # Bound before it printed its port; one answer, even an error, proves it also serves.
    try:
        with urllib.request.urlopen(f"{endpoint}/", timeout=10) as reply:  # noqa: S310 - ours
            reply.read()
    except urllib.error.HTTPError:
        pass
    except OSError as exc:
        unavailable(f"moto server does not answer at {endpoint}: {exc}")


def new_bucket_name() -> str:
    """A bucket name not used before in this test session."""
    return f"hutch-test-{os.getpid()}-{next(_buckets)}"


def s3_client(endpoint: str) -> Any:
    """A plain boto3 client of the test server, for checks behind the backend's back."""
    import boto3  # noqa: PLC0415 - boto3 only for the tests that use s3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def make_bucket(location: str) -> None:
    """Create the bucket of an `s3:http://…/BUCKET/…` location directly, as an admin would."""
    from repo.backend.s3 import parse_location  # noqa: PLC0415 - boto3 only when used

    where = parse_location(location.removeprefix("s3:"))
    assert where.endpoint is not None
    client = s3_client(where.endpoint)
    client.create_bucket(Bucket=where.bucket)
    client.close()


@pytest.fixture(scope="session")
def s3_bucket(s3_server: str) -> str:
    """A bucket shared by the session; each test works under its own key prefix in it."""
    name = new_bucket_name()
    make_bucket(f"s3:{s3_server}/{name}")
    return name


@pytest.fixture
def s3_location(s3_server: str, s3_bucket: str) -> str:
    """A fresh `s3:` location: an unused key prefix in the shared, existing bucket."""
    return f"s3:{s3_server}/{s3_bucket}/t{next(_prefixes)}/repo"


@pytest.fixture
def s3_backend(s3_location: str) -> Iterator[Backend]:
    """An empty repository location on the s3 server, opened as a backend."""
    options = BackendOptions(connect_timeout=5, read_timeout=10, retry_deadline=10)
    backend = open_backend(s3_location, create=True, options=options)
    yield backend
    backend.close()
