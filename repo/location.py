"""Telling a local repository location from a network one.

Imports nothing, so that cli/early.py can read a local repository's key file before
the rest of hutch is imported.
"""

NETWORK_SCHEMES = ("sftp", "s3", "rest", "rclone")


def local_path(location: str) -> str | None:
    """The folder of a local repository location (PATH or local:PATH); None for others."""
    if location.partition(":")[0] in NETWORK_SCHEMES:
        return None
    return location.removeprefix("local:")
