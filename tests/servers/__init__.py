"""Storage servers for the backend tests, started by session fixtures on 127.0.0.1."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(reason: str) -> NoReturn:
    """A server that cannot be started skips its tests loudly here, and fails them in CI."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"server test cannot run in CI: {reason}")
    pytest.skip(f"SERVER UNAVAILABLE: {reason}")
