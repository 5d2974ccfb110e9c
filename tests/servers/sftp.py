"""The sftp server for backend tests: a private OpenSSH sshd on 127.0.0.1.

It runs as the current user with its own host key, trusts one generated client key,
and serves `internal-sftp`. A temporary home holds the matching ~/.ssh (the client
key, known_hosts, a config), so tests point HOME at it and touch no real ~/.ssh.
"""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from repo.backend import Backend, BackendOptions, wrap
from servers import unavailable

SSHD = "/usr/sbin/sshd"
START_TIMEOUT = 10.0
# Short enough that the failure tests run quickly, long enough for a loaded CI machine.
TEST_OPTIONS = BackendOptions(connect_timeout=5.0, read_timeout=10.0, retry_deadline=15.0)


@dataclass(frozen=True)
class SshServer:
    """A running sshd and the files a client needs to log in to it."""

    port: int
    user: str
    base: Path
    pid: int
    client_key: Path
    host_key: Path
    # A second key pair, to play a host whose key has changed.
    other_host_key: Path
    # The default home: ~/.ssh/id_ed25519, known_hosts and a `Host hutch-sftp` alias.
    home: Path

    def url(self, path: str | Path) -> str:
        """An `sftp://` location of an absolute path on this server."""
        return f"sftp://{self.user}@127.0.0.1:{self.port}/{str(path).lstrip('/')}"

    def known_hosts_line(self, key: Path | None = None) -> str:
        keytype, blob = (key or self.host_key).with_suffix(".pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {keytype} {blob}\n"

    def make_home(
        self, home: Path, *, config: str = "", known_hosts: str | None = None, has_key: bool = True
    ) -> Path:
        """A home folder with .ssh/: the client key as id_ed25519 (unless not `has_key`),
        known_hosts (this server's key unless given) and `config`."""
        ssh = home / ".ssh"
        ssh.mkdir(parents=True, exist_ok=True, mode=0o700)
        if has_key:
            shutil.copy(self.client_key, ssh / "id_ed25519")
            (ssh / "id_ed25519").chmod(0o600)
        lines = self.known_hosts_line() if known_hosts is None else known_hosts
        (ssh / "known_hosts").write_text(lines)
        (ssh / "config").write_text(config)
        return home

    def new_folder(self) -> Path:
        """A fresh absolute path on the server, not yet created."""
        return self.base / "storage" / f"repo-{secrets.token_hex(4)}"

    def session_pids(self) -> list[int]:
        """Every process sshd runs for its connections (the per-connection children)."""
        found: list[int] = []
        pending = [self.pid]
        while pending:
            pid = pending.pop()
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            found.extend(int(c) for c in children)
            pending.extend(int(c) for c in children)
        return found

    def signal_sessions(self, signum: int) -> int:
        """Send `signum` to every session process of this sshd; how many there were."""
        pids = self.session_pids()
        for pid in pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                continue
        return len(pids)


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hutch-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _sshd_config(base: Path, port: int) -> str:
    return f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {base}/host_key
PidFile {base}/sshd.pid
AuthorizedKeysFile {base}/authorized_keys
StrictModes no
UsePAM no
PermitRootLogin yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowTcpForwarding yes
MaxSessions 50
MaxStartups 50
Subsystem sftp internal-sftp
LogLevel ERROR
"""


def _wait_for_banner(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            unavailable(f"sshd exited at start: {log.read_text(errors='replace').strip()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.05)
    unavailable(f"sshd did not answer on port {port} within {START_TIMEOUT:g} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """One sshd for the whole session on a free loopback port, stopped at the end."""
    if not os.access(SSHD, os.X_OK) or not shutil.which("ssh-keygen"):
        unavailable(f"{SSHD} or ssh-keygen is missing (Debian: apt-get install openssh-server)")
    base = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "other_host_key", "client_key"):
        _keygen(base / name)
    shutil.copy(base / "client_key.pub", base / "authorized_keys")
    port = _free_port()
    (base / "sshd_config").write_text(_sshd_config(base, port))
    # sshd insists on its privilege separation folder, which Debian creates only at boot.
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    log = base / "sshd.log"
    with log.open("wb") as err:
        process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(base / "sshd_config")],
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
        )
    try:
        _wait_for_banner(port, process, log)
        server = SshServer(
            port=port,
            user=getpass.getuser(),
            base=base,
            pid=process.pid,
            client_key=base / "client_key",
            host_key=base / "host_key",
            other_host_key=base / "other_host_key",
            home=base / "home",
        )
        (base / "storage").mkdir()
        alias = f"Host hutch-sftp\n    HostName 127.0.0.1\n    Port {port}\n"
        server.make_home(server.home, config=alias)
        yield server
    finally:
        _stop(process)


@pytest.fixture
def sftp_home(sshd_server: SshServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME set to the server's default home for this test; no SSH agent is consulted."""
    monkeypatch.setenv("HOME", str(sshd_server.home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return sshd_server.home


@pytest.fixture
def sftp_backend(sshd_server: SshServer, sftp_home: Path) -> Iterator[Backend]:
    """An empty repository location on the sftp server, opened as open_backend does."""
    from repo.backend.sftp import open_sftp  # noqa: PLC0415 - paramiko only where needed

    location = sshd_server.url(sshd_server.new_folder()).removeprefix("sftp:")
    backend = wrap(open_sftp(location, TEST_OPTIONS, create=True), TEST_OPTIONS)
    yield backend
    backend.close()
