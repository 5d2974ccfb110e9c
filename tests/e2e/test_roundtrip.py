"""Backup and restore of an awkward tree: every file type, odd names, metadata, sparse data."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import Hutch, hutch_bin_path, hutch_env, restored_path

MIB = 1 << 20
GIB = 1 << 30
DEPTH = 40
LATIN1_NAME = b"caf\xe9"
LONG_NAME = b"n" * 255
ODD_NAMES = (b"new\nline", b"-dash", b"star*", b"[br]", b"back\\slash", b"\x01ctl", b" space ")
SPARSE_DATA = (0, 333 * MIB + 12345, GIB - MIB)
UID, GID = 1234, 5678
CHARDEV = os.makedev(42, 300)  # a minor above 255 needs the split encoding of dev_t
BASE_NS = 1_600_000_000 * 1_000_000_000


@dataclass
class Tree:
    """The awkward source tree and the repository it was backed up into."""

    hutch: Hutch
    base: Path
    src: Path
    has_xattrs: bool


def _seek_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """The (start, end) data extents of an open file, holes left out."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, end
        pos = end


def _set_xattr(path: Path, name: str, value: bytes) -> bool:
    try:
        os.setxattr(path, name, value, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EPERM):
            return False
        raise
    return True


def _make_tree(src: Path) -> bool:
    """Create the awkward tree; returns whether the file system took user xattrs."""
    special = src / "special"
    special.mkdir(parents=True)
    raw = os.fsencode(special)
    (special / os.fsdecode(LATIN1_NAME)).write_bytes(b"latin-1 named content\n")
    (special / os.fsdecode(LONG_NAME)).write_bytes(b"a name of 255 bytes\n")
    for name in ODD_NAMES:
        with open(raw + b"/" + name, "wb") as f:
            f.write(name)
    os.symlink(LATIN1_NAME, raw + b"/rel-link")
    os.symlink(b"/etc/hostname", raw + b"/abs-link")
    os.symlink(b"does/not/exist", raw + b"/dangling-link")
    (special / "hard1").write_bytes(os.urandom(5000))
    os.link(special / "hard1", special / "hard2")
    os.mkfifo(special / "fifo", 0o640)
    os.mknod(special / "chardev", stat.S_IFCHR | 0o620, CHARDEV)
    (special / "empty").write_bytes(b"")
    (special / "emptydir").mkdir()
    (special / "mode751").write_bytes(b"#!/bin/sh\n")
    (special / "setuid").write_bytes(b"setuid program\n")
    sticky = special / "sticky"
    sticky.mkdir()
    (sticky / "inside.txt").write_bytes(b"in the sticky dir\n")
    deep = src
    for level in range(DEPTH):
        deep = deep / f"level{level:02d}"
    deep.mkdir(parents=True)
    (deep / "bottom.txt").write_bytes(b"forty levels down\n")
    with open(src / "sparse.img", "wb") as f:
        for offset in SPARSE_DATA:
            f.seek(offset)
            f.write(os.urandom(MIB))
        f.truncate(GIB)
    sub = src / "sub"
    sub.mkdir()
    (sub / "one.txt").write_bytes(b"one\n")
    (sub / "two.dat").write_bytes(os.urandom(300_000))
    (sub / "inner").mkdir()
    (sub / "inner" / "three.txt").write_bytes(b"three\n")
    for path in (special / "setuid", special / "mode751", sticky, sub / "one.txt"):
        os.lchown(path, UID, GID)
    os.lchown(special / "rel-link", UID, GID)
    os.chmod(special / "mode751", 0o751)
    os.chmod(special / "setuid", 0o4755)
    os.chmod(sticky, 0o1777)
    has_xattrs = _set_xattr(special / "empty", "user.x", b"value\x00\xff")
    if has_xattrs:
        _set_xattr(sub, "user.dir", b"on a directory")
    # Odd nanoseconds on every entry, set bottom-up so folders keep theirs.
    top = os.fsencode(src)
    entries = [p for p, _, _ in os.walk(top, topdown=False)]
    entries += [os.path.join(d, n) for d, _, fs in os.walk(top) for n in fs]
    for i, entry in enumerate(sorted(entries, key=lambda p: -p.count(b"/"))):
        ns = BASE_NS + i * 1_000_000_007 + 123_456_789
        os.utime(entry, ns=(ns, ns), follow_symlinks=False)
    return has_xattrs


def _xattrs(path: bytes) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in names if n.startswith("user.")}


def _describe(root: Path) -> dict[bytes, dict[str, Any]]:
    """Everything that must survive a round trip, per path relative to root."""
    raw = os.fsencode(root)
    out: dict[bytes, dict[str, Any]] = {}
    for folder, dirs, files in os.walk(raw):
        for name in [*dirs, *files] if folder != raw else [b".", *dirs, *files]:
            path = os.path.normpath(os.path.join(folder, name))
            st = os.lstat(path)
            doc: dict[str, Any] = {
                "fmt": stat.S_IFMT(st.st_mode),
                "mode": oct(stat.S_IMODE(st.st_mode)),
                "uid": st.st_uid,
                "gid": st.st_gid,
                "mtime_ns": st.st_mtime_ns,
                "xattrs": _xattrs(path),
            }
            if stat.S_ISREG(st.st_mode):
                doc["size"] = st.st_size
                if st.st_size < GIB:
                    with open(path, "rb") as f:
                        doc["sha256"] = hashlib.file_digest(f, "sha256").hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                doc["target"] = os.readlink(path)
            elif stat.S_ISCHR(st.st_mode):
                doc["rdev"] = st.st_rdev
            out[os.path.relpath(path, raw)] = doc
    return out


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    """The awkward tree, backed up once for every test of this module."""
    base = tmp_path_factory.mktemp("roundtrip")
    hutch = Hutch(hutch_bin_path(), base / "repo", hutch_env(base))
    hutch.run("init")
    has_xattrs = _make_tree(base / "src")
    hutch.run("backup", base / "src")
    return Tree(hutch, base, base / "src", has_xattrs)


@pytest.fixture(scope="module")
def restored(tree: Tree) -> Path:
    """The whole snapshot restored once with --sparse; returns where src landed."""
    target = tree.base / "full"
    tree.hutch.run("restore", "latest", "--target", target, "--sparse")
    return restored_path(target, tree.src)


def test_restore_reproduces_every_entry(tree: Tree, restored: Path) -> None:
    """A sparse restore gives back every entry with its type, mode, owner, times and bytes."""
    out = restored
    expected, got = _describe(tree.src), _describe(out)
    assert sorted(got) == sorted(expected)
    for rel, doc in expected.items():
        assert got[rel] == doc, rel
    assert got[b"special/setuid"]["mode"] == oct(0o4755)
    assert got[b"special/sticky"]["mode"] == oct(0o1777)
    assert (got[b"special/setuid"]["uid"], got[b"special/setuid"]["gid"]) == (UID, GID)
    assert got[b"special/rel-link"]["uid"] == UID
    assert got[b"special/" + LATIN1_NAME]["mtime_ns"] % 1000 != 0
    assert got[b"special/chardev"]["rdev"] == CHARDEV
    if tree.has_xattrs:
        assert got[b"special/empty"]["xattrs"] == {"user.x": b"value\x00\xff"}
        assert got[b"sub"]["xattrs"] == {"user.dir": b"on a directory"}
    one, two = os.lstat(out / "special/hard1"), os.lstat(out / "special/hard2")
    assert one.st_ino == two.st_ino
    assert one.st_nlink == 2
    assert stat.S_ISFIFO(os.lstat(out / "special/fifo").st_mode)


def test_sparse_restore_keeps_holes(tree: Tree, restored: Path) -> None:
    """--sparse restores a 1 GiB file with a few MiB of data as a file with holes, byte-exact."""
    sparse = restored / "sparse.img"
    st = os.stat(sparse)
    assert st.st_size == GIB
    assert st.st_blocks * 512 < 64 * MIB
    with open(tree.src / "sparse.img", "rb") as f_src, open(sparse, "rb") as f_out:
        src_fd, out_fd = f_src.fileno(), f_out.fileno()
        # Outside the data extents of both files everything reads as zero, so
        # comparing the bytes of the extents of each proves the files equal.
        extents = [*_seek_extents(src_fd, GIB), *_seek_extents(out_fd, GIB)]
        assert extents
        for start, end in extents:
            assert os.pread(src_fd, end - start, start) == os.pread(out_fd, end - start, start)
    for offset in SPARSE_DATA:
        with open(sparse, "rb") as f:
            f.seek(offset)
            assert f.read(16) != bytes(16)


def test_dump_non_utf8_file_and_folder_as_tar(tree: Tree) -> None:
    """dump writes a file with a non-UTF-8 name as raw bytes, and a folder as a matching tar."""
    h = tree.hutch
    raw_src = os.fsencode(tree.src)
    got = h.run("dump", "latest", raw_src + b"/special/" + LATIN1_NAME).stdout
    assert got == b"latin-1 named content\n"
    stream = h.run("dump", "latest", tree.src / "sub").stdout
    with tarfile.open(
        fileobj=io.BytesIO(stream), mode="r:", encoding="utf-8", errors="surrogateescape"
    ) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {
            "sub",
            "sub/one.txt",
            "sub/two.dat",
            "sub/inner",
            "sub/inner/three.txt",
        }
        assert members["sub"].isdir()
        assert members["sub/one.txt"].uid == UID
        for name in ("sub/one.txt", "sub/two.dat", "sub/inner/three.txt"):
            member = tar.extractfile(members[name])
            assert member is not None
            assert member.read() == (tree.src / name).read_bytes(), name


def test_dump_tar_of_special_entries(tree: Tree) -> None:
    """The tar of a folder keeps odd names, links, FIFOs and device numbers."""
    stream = tree.hutch.run("dump", "latest", tree.src / "special").stdout
    with tarfile.open(
        fileobj=io.BytesIO(stream), mode="r:", encoding="utf-8", errors="surrogateescape"
    ) as tar:
        members = {os.fsencode(m.name): m for m in tar.getmembers()}
        latin = members[b"special/" + LATIN1_NAME]
        extracted = tar.extractfile(latin)
        assert extracted is not None
        assert extracted.read() == b"latin-1 named content\n"
        assert b"special/" + LONG_NAME in members
        for name in ODD_NAMES:
            odd = tar.extractfile(members[b"special/" + name])
            assert odd is not None
            assert odd.read() == name
        assert members[b"special/emptydir"].isdir()
        assert members[b"special/sticky"].mode == 0o1777
        assert members[b"special/setuid"].mode == 0o4755
        assert members[b"special/rel-link"].issym()
        assert os.fsencode(members[b"special/rel-link"].linkname) == LATIN1_NAME
        assert members[b"special/fifo"].isfifo()
        hard = {members[b"special/hard1"], members[b"special/hard2"]}
        assert sorted(m.type for m in hard) == sorted([tarfile.REGTYPE, tarfile.LNKTYPE])
        dev = members[b"special/chardev"]
        assert dev.ischr()
        assert (dev.devmajor, dev.devminor) == (os.major(CHARDEV), os.minor(CHARDEV))


def test_restore_subfolder_lands_directly_in_target(tree: Tree) -> None:
    """`restore latest:/abs/sub` puts the contents of sub directly into the target."""
    target = tree.base / "subonly"
    tree.hutch.run("restore", f"latest:{tree.src}/sub", "--target", target, "--verify")
    assert sorted(os.listdir(target)) == ["inner", "one.txt", "two.dat"]
    assert (target / "inner" / "three.txt").read_bytes() == b"three\n"
    assert (target / "two.dat").read_bytes() == (tree.src / "sub" / "two.dat").read_bytes()


def _files_below(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_symlink() or not p.is_dir()}


def test_restore_include_and_exclude_select_files(tree: Tree) -> None:
    """--include restores only the matching files, --exclude leaves the matching ones out."""
    h = tree.hutch
    inc = tree.base / "inc"
    h.run("restore", "latest", "--target", inc, "--include", "*.txt")
    assert _files_below(restored_path(inc, tree.src)) == {
        "sub/one.txt",
        "sub/inner/three.txt",
        "special/sticky/inside.txt",
        "/".join(f"level{i:02d}" for i in range(DEPTH)) + "/bottom.txt",
    }
    exc = tree.base / "exc"
    h.run(
        "restore",
        "latest",
        "--target",
        exc,
        "--exclude",
        "level00",
        "--exclude",
        "sparse.img",
        "--exclude",
        f"{tree.src}/sub/*.txt",
        "--exclude",
        "special/[hf]*",
        "--exclude",
        "special/mode75?",
    )
    got = _files_below(restored_path(exc, tree.src))
    assert got == {
        "special/" + os.fsdecode(LATIN1_NAME),
        "special/" + os.fsdecode(LONG_NAME),
        "special/rel-link",
        "special/abs-link",
        "special/dangling-link",
        "special/chardev",
        "special/empty",
        "special/setuid",
        "special/sticky/inside.txt",
        "sub/two.dat",
        "sub/inner/three.txt",
    } | {"special/" + os.fsdecode(name) for name in ODD_NAMES}


def test_restore_never_follows_a_planted_symlink(tree: Tree, tmp_path: Path) -> None:
    """A symlink already in the target never makes restore write outside the target."""
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    first = str(tree.src).lstrip("/").split("/", 1)[0]
    os.symlink(outside, target / first)
    tree.hutch.run("restore", "latest", "--target", target, "--include", "one.txt")
    assert list(outside.iterdir()) == []
    # The planted link itself was replaced by the real folder, not followed.
    assert not (target / first).is_symlink()
    assert (target / first).is_dir()


def test_restore_never_writes_through_a_planted_hard_link(tree: Tree, tmp_path: Path) -> None:
    """A hard link already in the target is replaced, never written through."""
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"must stay as it is\n")
    target = tmp_path / "target"
    planted = target / "one.txt"
    planted.parent.mkdir()
    os.link(outside, planted)
    tree.hutch.run("restore", f"latest:{tree.src}/sub", "--target", target)
    assert outside.read_bytes() == b"must stay as it is\n"
    assert planted.read_bytes() == b"one\n"
