"""Fixtures shared by every test folder: the storage servers started on 127.0.0.1."""

pytest_plugins = ["servers.sftp", "servers.s3", "servers.rest"]
