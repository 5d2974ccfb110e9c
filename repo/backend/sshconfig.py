"""sftp locations and the OpenSSH client configuration (~/.ssh/config) that routes them.

Pure parsing, no paramiko: paramiko's own SSHConfig ignores `Include` and does not act
on `ProxyJump`, so the subset of ssh_config(5) a backup connection needs is read here,
with OpenSSH's rules: the first value obtained wins (IdentityFile accumulates), `Host`
matches the name as given, `Match host` the HostName found so far, an `Include`
inside a Host block applies only when that block does, and whichever of ProxyJump and
ProxyCommand comes first disables the other.
"""

from __future__ import annotations

import getpass
import glob
import os
import posixpath
import re
import shlex
import socket
import urllib.parse
from dataclasses import dataclass, field

from repo.errors import BackendError

SSH_PORT = 22
# OpenSSH's READCONF_MAX_DEPTH: Include nesting deeper than this is a loop.
MAX_INCLUDE_DEPTH = 16
# Keywords whose rest of line is taken verbatim, as OpenSSH does (a shell command).
VERBATIM = frozenset({"proxycommand"})
# Keywords that take several values on one line; kept whole, split when used.
MULTI_VALUE = frozenset({"userknownhostsfile"})


@dataclass(frozen=True, slots=True)
class SftpLocation:
    """A parsed sftp location: user and port only when given, the path on the server."""

    host: str
    path: str
    user: str | None = None
    port: int | None = None


@dataclass(frozen=True, slots=True)
class JumpHost:
    """One hop of a ProxyJump list: `[user@]host[:port]` or `ssh://[user@]host[:port]`."""

    host: str
    user: str | None = None
    port: int | None = None


@dataclass(frozen=True, slots=True)
class HostConfig:
    """How to reach one host alias after ~/.ssh/config is applied."""

    alias: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...] = ()
    is_identities_only: bool = False
    proxy_jump: tuple[JumpHost, ...] = ()
    proxy_command: str | None = None
    known_hosts_files: tuple[str, ...] = ()


def parse_location(text: str) -> SftpLocation:
    """`[USER@]HOST:PATH` (PATH relative to the login folder unless it starts with /) or
    `//[USER@]HOST[:PORT]/PATH` (an absolute PATH; `/~/PATH` is relative), the part of an
    sftp: location after `sftp:`."""
    if text.startswith("//"):
        return _parse_url(text)
    user, at, rest = text.rpartition("@")
    if rest.startswith("["):
        host, bracket, path = rest[1:].partition("]")
        if not bracket or not path.startswith(":"):
            raise BackendError(f"sftp:{text}: expected sftp:[USER@][HOST]:PATH")
        path = path[1:]
    else:
        host, _, path = rest.partition(":")
    path = path.removeprefix("~/")
    if not host or not path or (at and not user):
        raise BackendError(f"sftp:{text}: expected sftp:[USER@]HOST:PATH")
    return SftpLocation(host, _clean_path(path), user or None)


def _parse_url(text: str) -> SftpLocation:
    parts = urllib.parse.urlsplit(f"sftp:{text}")
    try:
        port = parts.port
    except ValueError as exc:
        raise BackendError(f"sftp:{text}: invalid port") from exc
    path = urllib.parse.unquote(parts.path)
    path = path[3:] if path.startswith("/~/") else "/" + path.lstrip("/")
    if not parts.hostname or path.strip("/") == "":
        raise BackendError(f"sftp:{text}: expected sftp://[USER@]HOST[:PORT]/PATH")
    user = urllib.parse.unquote(parts.username) if parts.username else None
    # urlsplit lowercases the host; an ssh_config alias is matched case-insensitively anyway.
    return SftpLocation(parts.hostname, _clean_path(path), user, port)


def _clean_path(path: str) -> str:
    cleaned = posixpath.normpath(path)
    if cleaned in (".", "..") or cleaned.startswith("../"):
        raise BackendError(f"{path}: not a repository path")
    return cleaned


def parse_jump(value: str) -> tuple[JumpHost, ...]:
    """A ProxyJump value: comma-separated hops, nearest first; `none` is no hop."""
    if value.lower() == "none":
        return ()
    hops = []
    for item in value.split(","):
        spec = item.strip()
        if spec.startswith("ssh://"):
            spec = spec.removeprefix("ssh://").rstrip("/")
        user, _, hostport = spec.rpartition("@")
        host, port = _split_port(hostport, value)
        if not host:
            raise BackendError(f"ProxyJump {value}: expected [user@]host[:port]")
        hops.append(JumpHost(host, user or None, port))
    return tuple(hops)


def _split_port(hostport: str, context: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif hostport.count(":") == 1:
        host, _, port_text = hostport.partition(":")
    else:
        host, port_text = hostport, ""
    if not port_text:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise BackendError(f"{context}: invalid port {port_text!r}")
    return host, int(port_text)


# -- ssh_config ----------------------------------------------------------------------


@dataclass(slots=True)
class _Found:
    """Values obtained so far while reading the config for one host."""

    values: dict[str, str] = field(default_factory=dict)
    identity_files: list[str] = field(default_factory=list)
    is_proxy_set: bool = False

    def take(self, key: str, value: str) -> None:
        if key == "identityfile":
            self.identity_files.append(value)
        elif key in ("proxyjump", "proxycommand"):
            # ssh_config(5): whichever is specified first prevents the other.
            if not self.is_proxy_set:
                self.values[key] = value
                self.is_proxy_set = True
        else:
            self.values.setdefault(key, value)


@dataclass(frozen=True, slots=True)
class _Query:
    """What a config lookup is for: the name as given, and the login user so far."""

    alias: str
    user: str | None
    local_user: str
    home: str


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    escaped = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.compile(escaped, re.IGNORECASE | re.DOTALL)


def match_patterns(name: str, patterns: list[str]) -> bool:
    """ssh_config(5) PATTERNS: some pattern matches and no negated (`!`) one does."""
    is_match = False
    for item in patterns:
        for pattern in item.split(","):
            is_negated = pattern.startswith("!")
            if _pattern_regex(pattern.removeprefix("!")).fullmatch(name):
                if is_negated:
                    return False
                is_match = True
    return is_match


def _match_criteria(args: list[str], query: _Query, found: _Found) -> bool:
    """A `Match` line: every criterion holds. `exec` and `canonical` never match (hutch
    runs no commands to decide, and does not canonicalise names)."""
    index = 0
    while index < len(args):
        word = args[index].lower()
        is_negated = word.startswith("!")
        word = word.removeprefix("!")
        if word in ("all", "final", "canonical"):
            holds = word != "canonical"
            index += 1
        else:
            value = args[index + 1] if index + 1 < len(args) else ""
            holds = _criterion(word, value.split(","), query, found)
            index += 2
        if holds == is_negated:
            return False
    return True


def _criterion(word: str, patterns: list[str], query: _Query, found: _Found) -> bool:
    subject = {
        "host": _expand(found.values.get("hostname", query.alias), {"h": query.alias}),
        "originalhost": query.alias,
        "user": query.user or found.values.get("user", query.local_user),
        "localuser": query.local_user,
    }.get(word)
    return subject is not None and match_patterns(subject, patterns)


def _split_line(line: str) -> tuple[str, list[str], str] | None:
    """Keyword, arguments and the verbatim rest of a config line (None for blank ones)."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    match = re.match(r"([^\s=]+)\s*(?:=\s*|\s+|$)(.*)", stripped)
    if match is None:
        return None
    keyword, rest = match.group(1).lower(), match.group(2).strip()
    try:
        args = [] if keyword in VERBATIM else shlex.split(rest, comments=True)
    except ValueError as exc:
        raise BackendError(f"ssh config: {stripped}: {exc}") from exc
    return keyword, args, rest


def _read_file(path: str, query: _Query, found: _Found, *, is_never: bool, depth: int) -> None:
    """Apply one config file; `is_never` for a file included from an inactive block."""
    if depth > MAX_INCLUDE_DEPTH:
        raise BackendError(f"{path}: ssh config Include nested too deeply")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise BackendError(f"{path}: cannot read ssh config: {exc.strerror}") from exc
    # Lines before the first Host or Match apply, unless the Include itself did not.
    is_active = not is_never
    for line in lines:
        parsed = _split_line(line)
        if parsed is None:
            continue
        keyword, args, rest = parsed
        if keyword == "host":
            is_active = not is_never and match_patterns(query.alias, args)
        elif keyword == "match":
            is_active = not is_never and _match_criteria(args, query, found)
        elif keyword == "include":
            for included in _include_paths(args, query.home):
                _read_file(included, query, found, is_never=not is_active, depth=depth + 1)
        elif is_active and args:
            found.take(keyword, shlex.join(args) if keyword in MULTI_VALUE else args[0])
        elif is_active and keyword in VERBATIM and rest:
            found.take(keyword, rest)


def _include_paths(args: list[str], home: str) -> list[str]:
    """Include arguments: globs, `~` for home, relative ones under ~/.ssh (ssh_config(5))."""
    paths: list[str] = []
    for arg in args:
        pattern = home + arg[1:] if arg.startswith("~/") else arg
        if not os.path.isabs(pattern):
            pattern = os.path.join(home, ".ssh", pattern)
        paths.extend(sorted(glob.glob(pattern)))
    return paths


def resolve_host(
    alias: str,
    *,
    home: str,
    user: str | None = None,
    port: int | None = None,
    proxy_jump: tuple[JumpHost, ...] | None = None,
) -> HostConfig:
    """How ssh would reach `alias` under `home`/.ssh/config; `user`, `port` and
    `proxy_jump` given here override the file, as ssh's command line options do."""
    local_user = _local_user()
    query = _Query(alias, user, local_user, home)
    found = _Found()
    _read_file(os.path.join(home, ".ssh", "config"), query, found, is_never=False, depth=0)
    values = found.values
    hostname = _expand(values.get("hostname", alias), {"h": alias, "n": alias})
    final_user = user or values.get("user") or local_user
    final_port = port or _config_port(values.get("port"), alias)
    tokens = {
        "h": hostname,
        "n": alias,
        "p": str(final_port),
        "r": final_user,
        "u": local_user,
        "d": home,
        "l": socket.gethostname().split(".")[0],
    }
    jumps = parse_jump(values.get("proxyjump", "none")) if proxy_jump is None else proxy_jump
    command = values.get("proxycommand")
    return HostConfig(
        alias=alias,
        hostname=hostname,
        port=final_port,
        user=final_user,
        identity_files=tuple(_path(p, home, tokens) for p in found.identity_files),
        is_identities_only=values.get("identitiesonly", "no").lower() == "yes",
        proxy_jump=jumps,
        proxy_command=None
        if proxy_jump is not None or not command or command.lower() == "none"
        else _expand(command, tokens),
        known_hosts_files=_known_hosts(values.get("userknownhostsfile"), home, tokens),
    )


def _config_port(value: str | None, alias: str) -> int:
    if value is None:
        return SSH_PORT
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise BackendError(f"ssh config for {alias}: invalid Port {value!r}")
    return int(value)


def _known_hosts(value: str | None, home: str, tokens: dict[str, str]) -> tuple[str, ...]:
    user_files = shlex.split(value) if value else ["~/.ssh/known_hosts", "~/.ssh/known_hosts2"]
    system = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
    return (*(_path(p, home, tokens) for p in user_files if p.lower() != "none"), *system)


def _path(value: str, home: str, tokens: dict[str, str]) -> str:
    expanded = _expand(value, tokens)
    if expanded == "~" or expanded.startswith("~/"):
        return home + expanded[1:]
    return expanded


def _expand(value: str, tokens: dict[str, str]) -> str:
    """ssh_config(5) TOKENS: %h, %p, %r, %n, %u, %d, %l and %%; others are left alone."""
    return re.sub(
        r"%(.)", lambda m: "%" if m.group(1) == "%" else tokens.get(m.group(1), m.group(0)), value
    )


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError) as exc:
        raise BackendError("cannot tell the local user name: give USER@ in the location") from exc
