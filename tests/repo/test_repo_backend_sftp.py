"""The sftp backend: locations, ~/.ssh/config routing, host keys, and lost connections."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from servers import unavailable
from servers.sftp import TEST_OPTIONS, SshServer

from repo.backend import TEMP_MARK, Backend, BackendOptions, open_backend
from repo.backend.retry import RetryBackend
from repo.backend.sshconfig import (
    HostConfig,
    JumpHost,
    SftpLocation,
    parse_jump,
    parse_location,
    resolve_host,
)
from repo.errors import BackendError, TransientError
from repo.types import Handle, Kind

NAME = "ab" * 32


# -- locations -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host:repo", SftpLocation("host", "repo")),
        ("user@host:/srv/repo/", SftpLocation("host", "/srv/repo", "user")),
        ("u@h@host:~/backups/r", SftpLocation("host", "backups/r", "u@h")),
        ("[::1]:repo", SftpLocation("::1", "repo")),
        ("//host/srv/repo", SftpLocation("host", "/srv/repo")),
        ("//me@host:2222//srv/repo", SftpLocation("host", "/srv/repo", "me", 2222)),
        ("//me%40corp@[::1]:22/~/repo", SftpLocation("::1", "repo", "me@corp", 22)),
        ("//host/a%20b", SftpLocation("host", "/a b")),
    ],
)
def test_parse_location(text: str, expected: SftpLocation) -> None:
    """Both location forms parse to host, path, and user and port only when given."""
    assert parse_location(text) == expected


@pytest.mark.parametrize(
    "text", ["host", "host:", ":repo", "@host:repo", "//host", "//host/", "//host:x/r", "h:../r"]
)
def test_parse_location_rejects(text: str) -> None:
    """Locations without host or path, with a bad port or leaving the login folder fail."""
    with pytest.raises(BackendError, match=r"sftp:|not a repository path"):
        parse_location(text)


def test_parse_jump() -> None:
    """ProxyJump lists hops nearest first, with optional users, ports and ssh:// form."""
    assert parse_jump("a, me@b:2200,ssh://c:23,[::1]:24") == (
        JumpHost("a"),
        JumpHost("b", "me", 2200),
        JumpHost("c", None, 23),
        JumpHost("::1", None, 24),
    )
    assert parse_jump("none") == ()
    with pytest.raises(BackendError, match="invalid port"):
        parse_jump("a:99999")


# -- ~/.ssh/config ---------------------------------------------------------------------


def _home(tmp_path: Path, config: str, **included: str) -> str:
    ssh = tmp_path / ".ssh"
    (ssh / "conf.d").mkdir(parents=True)
    (ssh / "config").write_text(config)
    for name, text in included.items():
        (ssh / "conf.d" / name).write_text(text)
    return str(tmp_path)


def test_resolve_without_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a config: the name as given, port 22, the local user, default known_hosts."""
    monkeypatch.setenv("USER", "alice")
    cfg = resolve_host("example.org", home=str(tmp_path))
    assert (cfg.hostname, cfg.port, cfg.user) == ("example.org", 22, "alice")
    assert cfg.identity_files == ()
    assert cfg.known_hosts_files[0] == f"{tmp_path}/.ssh/known_hosts"


def test_resolve_include_glob_and_tokens(tmp_path: Path) -> None:
    """Include globs relative to ~/.ssh apply, HostName expands %h, IdentityFile expands
    ~ and %r and accumulates, and the first value obtained wins."""
    home = _home(
        tmp_path,
        "Include conf.d/*.conf\nHost *\n    Port 2200\n    IdentityFile ~/.ssh/id_%r\n",
        **{
            "10-box.conf": "Host box !bad\n  HostName %h.example.org\n  User bob\n"
            "  IdentityFile ~/.ssh/box_key\n",
            "20-all.conf": "Host *\n  User carol\n  Port 2222\n",
            "skip.txt": "Host *\n  Port 1\n",
        },
    )
    cfg = resolve_host("box", home=home)
    assert cfg == HostConfig(
        alias="box",
        hostname="box.example.org",
        port=2222,
        user="bob",
        identity_files=(f"{home}/.ssh/box_key", f"{home}/.ssh/id_bob"),
        known_hosts_files=cfg.known_hosts_files,
    )
    other = resolve_host("other", home=home, user="dan", port=2022)
    assert (other.hostname, other.port, other.user) == ("other", 2022, "dan")


def test_resolve_include_inside_host_block(tmp_path: Path) -> None:
    """An Include inside a Host block applies only to that host, and ends with the file."""
    home = _home(
        tmp_path,
        "Host box\n    Include conf.d/box.conf\n    Port 2201\nHost *\n    Port 2299\n",
        **{"box.conf": "User bob\nHost *\n  HostName everywhere\n"},
    )
    box = resolve_host("box", home=home)
    assert (box.user, box.hostname, box.port) == ("bob", "everywhere", 2201)
    other = resolve_host("other", home=home, user="x")
    assert (other.hostname, other.port) == ("other", 2299)


def test_resolve_match_and_proxies(tmp_path: Path) -> None:
    """Match host sees the HostName so far; the first of ProxyJump and ProxyCommand wins."""
    home = _home(
        tmp_path,
        "Host box\n    HostName 10.0.0.5\n    ProxyCommand nc %h %p\n"
        "Match host 10.0.0.*\n    ProxyJump me@gate:2200\n    User inner\n"
        "Host gate\n    ProxyJump a,b\n    UserKnownHostsFile ~/kh1 /kh2\n",
    )
    box = resolve_host("box", home=home)
    assert (box.proxy_command, box.proxy_jump, box.user) == ("nc 10.0.0.5 22", (), "inner")
    gate = resolve_host("gate", home=home)
    assert gate.proxy_jump == (JumpHost("a"), JumpHost("b"))
    assert gate.known_hosts_files[:2] == (f"{home}/kh1", "/kh2")
    forced = resolve_host("gate", home=home, proxy_jump=())
    assert (forced.proxy_jump, forced.proxy_command) == ((), None)


# -- against a real sshd ---------------------------------------------------------------


def _open(location: str, options: BackendOptions = TEST_OPTIONS) -> Backend:
    from repo.backend.sftp import open_sftp  # noqa: PLC0415 - paramiko only where needed

    return open_sftp(location.removeprefix("sftp:"), options, create=True)


@pytest.fixture
def opened() -> Iterator[Callable[..., Backend]]:
    """Open sftp backends; all are closed after the test."""
    backends: list[Backend] = []

    def make(location: str, options: BackendOptions = TEST_OPTIONS) -> Backend:
        backend = _open(location, options)
        backends.append(backend)
        return backend

    yield make
    for backend in backends:
        backend.close()


def _connections(server: SshServer, expected: int) -> int:
    """sshd's connection count (its direct children) once it settles on `expected`."""
    deadline = time.monotonic() + 5
    while True:
        pid = server.pid
        count = len(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
        if count == expected or time.monotonic() > deadline:
            return count
        time.sleep(0.02)


def _use(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


def test_alias_from_included_config_with_identity_file(
    sshd_server: SshServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    opened: Callable[..., Backend],
) -> None:
    """An alias defined in an included file supplies HostName, Port, User and the only
    key that logs in (IdentityFile under a non-default name)."""
    home = sshd_server.make_home(
        tmp_path / "home", config="Include ~/.ssh/conf.d/*\n", has_key=False
    )
    (home / ".ssh" / "conf.d").mkdir()
    shutil.copy(sshd_server.client_key, home / ".ssh" / "backup_key")
    (home / ".ssh" / "conf.d" / "box").write_text(
        f"Host box\n  HostName 127.0.0.1\n  Port {sshd_server.port}\n"
        f"  User {sshd_server.user}\n  IdentityFile ~/.ssh/backup_key\n"
    )
    _use(home, monkeypatch)
    folder = sshd_server.new_folder()
    backend = opened(f"sftp:box:{folder}")
    backend.write(Handle(Kind.DATA, NAME), b"via alias")
    assert (folder / "data" / "ab" / NAME).read_bytes() == b"via alias"


def test_proxy_jump(
    sshd_server: SshServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    opened: Callable[..., Backend],
) -> None:
    """ProxyJump reaches the target through a direct-tcpip channel of the jump host
    (here the same sshd, which then sees two connections)."""
    config = (
        f"Host target\n  HostName 127.0.0.1\n  Port {sshd_server.port}\n"
        f"  ProxyJump {sshd_server.user}@127.0.0.1:{sshd_server.port}\n"
    )
    _use(sshd_server.make_home(tmp_path / "home", config=config), monkeypatch)
    assert _connections(sshd_server, 0) == 0
    backend = opened(f"sftp:target:{sshd_server.new_folder()}")
    backend.write(Handle(Kind.KEY, NAME), b"jumped")
    assert backend.read(Handle(Kind.KEY, NAME)) == b"jumped"
    assert _connections(sshd_server, 2) == 2


def test_proxy_command(
    sshd_server: SshServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    opened: Callable[..., Backend],
) -> None:
    """ProxyCommand (`ssh -W %h:%p`) carries the connection through its stdin and stdout."""
    if not shutil.which("ssh"):
        unavailable("the ssh client is missing (Debian: openssh-client)")
    home = tmp_path / "home"
    ssh = (
        f"ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -i {sshd_server.client_key}"
        f" -o UserKnownHostsFile={home}/.ssh/known_hosts -o GlobalKnownHostsFile=/dev/null"
        f" -p {sshd_server.port} {sshd_server.user}@127.0.0.1"
    )
    config = f"Host piped\n  HostName 127.0.0.1\n  Port {sshd_server.port}\n"
    config += f"  ProxyCommand {ssh} -W %h:%p\n"
    _use(sshd_server.make_home(home, config=config), monkeypatch)
    assert _connections(sshd_server, 0) == 0
    backend = opened(f"sftp:piped:{sshd_server.new_folder()}")
    backend.write(Handle(Kind.LOCK, NAME), b"piped")
    assert [f.name for f in backend.list(Kind.LOCK)] == [NAME]
    assert _connections(sshd_server, 2) == 2
    backend.close()
    assert _connections(sshd_server, 0) == 0


def test_agent_key(
    sshd_server: SshServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    opened: Callable[..., Backend],
) -> None:
    """A key held by the SSH agent logs in when no key file is at hand."""
    if not (shutil.which("ssh-agent") and shutil.which("ssh-add")):
        unavailable("ssh-agent is missing (Debian: openssh-client)")
    _use(sshd_server.make_home(tmp_path / "home", has_key=False), monkeypatch)
    agent_socket = tmp_path / "agent.sock"
    agent = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(agent_socket)], stdout=subprocess.DEVNULL
    )
    try:
        while not agent_socket.exists():
            time.sleep(0.02)
        env = {**os.environ, "SSH_AUTH_SOCK": str(agent_socket)}
        subprocess.run(["ssh-add", "-q", str(sshd_server.client_key)], env=env, check=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(agent_socket))
        backend = opened(sshd_server.url(sshd_server.new_folder()))
        assert not backend.exists()
    finally:
        agent.terminate()
        agent.wait()


@pytest.mark.parametrize(
    ("key", "words"), [(None, "no key to offer"), ("other_host_key", "no key was accepted")]
)
def test_no_usable_key_fails_without_prompting(
    sshd_server: SshServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    key: str | None,
    words: str,
) -> None:
    """Without a key that logs in, opening fails at once; no password is asked for."""
    home = sshd_server.make_home(tmp_path / "home", has_key=False)
    if key:
        shutil.copy(sshd_server.base / key, home / ".ssh" / "id_ed25519")
    _use(home, monkeypatch)
    with pytest.raises(BackendError, match=rf"authentication failed \({words}.*never with a pass"):
        _open(sshd_server.url(sshd_server.new_folder()))


def test_unknown_host_key_is_refused(
    sshd_server: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host missing from known_hosts is refused, and the message says how to trust it."""
    _use(sshd_server.make_home(tmp_path / "home", known_hosts=""), monkeypatch)
    hint = f"`ssh -p {sshd_server.port} {sshd_server.user}@127.0.0.1`"
    with pytest.raises(BackendError, match=r"is not in .*known_hosts") as info:
        _open(sshd_server.url(sshd_server.new_folder()))
    assert hint in str(info.value)
    assert "\n" not in str(info.value)
    assert (tmp_path / "home" / ".ssh" / "known_hosts").read_text() == ""


def test_changed_host_key_is_refused(
    sshd_server: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host whose key differs from known_hosts is refused as a possible attack."""
    wrong = sshd_server.known_hosts_line(sshd_server.other_host_key)
    _use(sshd_server.make_home(tmp_path / "home", known_hosts=wrong), monkeypatch)
    with pytest.raises(BackendError, match=r"CHANGED.*ssh-keygen -R"):
        _open(sshd_server.url(sshd_server.new_folder()))


def test_refused_connection_fails_at_once(sftp_home: Path) -> None:
    """A server that is down when the command starts fails at once, not after retries."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(BackendError, match=f"127.0.0.1 port {port}: connection refused"):
        open_backend(f"sftp://me@127.0.0.1:{port}/repo", options=TEST_OPTIONS)
    assert time.monotonic() - start < 5


def test_silent_server_times_out(sftp_home: Path) -> None:
    """A server that accepts but never speaks fails after the connect timeout."""
    options = BackendOptions(connect_timeout=0.5)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(BackendError, match=f"127.0.0.1 port {port}: no SSH handshake"):
            _open(f"sftp://me@127.0.0.1:{port}/repo", options)
        assert time.monotonic() - start < 5


def test_dropped_connection_is_retried(sshd_server: SshServer, sftp_backend: Backend) -> None:
    """Killing the server's session mid-run costs a retry, not the command."""
    handle = Handle(Kind.DATA, NAME)
    sftp_backend.write(handle, b"before the drop")
    assert sshd_server.signal_sessions(signal.SIGKILL) > 0
    assert sftp_backend.read(handle) == b"before the drop"
    sftp_backend.write(Handle(Kind.DATA, "cd" * 32), b"after the drop")
    assert {f.name for f in sftp_backend.list(Kind.DATA)} == {NAME, "cd" * 32}


def test_hung_server_times_out_then_reconnects(sshd_server: SshServer, sftp_home: Path) -> None:
    """A session that stops answering raises TransientError after the read timeout; the
    next call connects anew."""
    options = BackendOptions(connect_timeout=5, read_timeout=1)
    backend = _open(sshd_server.url(sshd_server.new_folder()), options)
    try:
        backend.write(Handle(Kind.INDEX, NAME), b"index")
        sshd_server.signal_sessions(signal.SIGSTOP)
        start = time.monotonic()
        with pytest.raises(TransientError, match=r"no answer from 127\.0\.0\.1 within 1 s"):
            backend.stat(Handle(Kind.INDEX, NAME))
        assert time.monotonic() - start < 5
        sshd_server.signal_sessions(signal.SIGKILL)
        assert backend.stat(Handle(Kind.INDEX, NAME)).size == 5
    finally:
        sshd_server.signal_sessions(signal.SIGCONT)
        backend.close()


def test_layout_and_temp_files(sshd_server: SshServer, sftp_home: Path) -> None:
    """Objects land where the local backend puts them, with no temporary files left, and
    leftover temporary files are not listed."""
    folder = sshd_server.new_folder() / "nested"
    backend = _open(sshd_server.url(folder))
    try:
        backend.write(Handle(Kind.DATA, NAME), b"pack")
        backend.write(Handle(Kind.CONFIG, "config"), b"cfg")
        assert (folder / "data" / "ab" / NAME).read_bytes() == b"pack"
        assert (folder / "config").read_bytes() == b"cfg"
        assert oct((folder / "config").stat().st_mode & 0o777) == oct(0o600)
        assert [p for p in folder.rglob("*") if TEMP_MARK in p.name] == []
        (folder / "data" / "ab" / f"{NAME}{TEMP_MARK}123").write_bytes(b"partial")
        assert [f.name for f in backend.list(Kind.DATA)] == [NAME]
        assert backend.exists()
    finally:
        backend.close()


def test_large_object_ranges(sftp_backend: Backend) -> None:
    """Objects larger than one SFTP request read back whole and by range."""
    data = os.urandom(3 * 1024 * 1024 + 17)
    handle = Handle(Kind.DATA, NAME)
    sftp_backend.write(handle, memoryview(data))
    assert sftp_backend.read(handle) == data
    assert sftp_backend.read(handle, 100_000, 1_000_000) == data[100_000:1_100_000]
    assert sftp_backend.read(handle, len(data) - 5, 100) == data[-5:]


def test_threads_share_one_backend(sshd_server: SshServer, sftp_backend: Backend) -> None:
    """Several threads write and read through one backend at once."""
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(8):
                data = f"{n}-{i}".encode() * 1000
                handle = Handle(Kind.DATA, f"{n:02x}{i:062x}")
                sftp_backend.write(handle, data)
                assert sftp_backend.read(handle) == data
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(list(sftp_backend.list(Kind.DATA))) == 48
    assert _connections(sshd_server, 1) == 1


def test_open_backend_dispatches_sftp(sshd_server: SshServer, sftp_home: Path) -> None:
    """open_backend routes sftp: locations here and wraps them in the retry layer."""
    location = sshd_server.url(sshd_server.new_folder())
    backend = open_backend(location, create=True, options=TEST_OPTIONS)
    try:
        assert isinstance(backend, RetryBackend)
        assert backend.location == location
        assert not backend.exists()
        assert list(backend.list(Kind.SNAPSHOT)) == []
    finally:
        backend.close()
