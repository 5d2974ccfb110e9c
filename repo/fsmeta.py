"""Reading a file system entry's metadata into a tree node."""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
from functools import lru_cache

from repo.tree import Node

_TYPES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "chardev",
    stat.S_IFBLK: "blockdev",
}


@lru_cache(maxsize=1024)
def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@lru_cache(maxsize=1024)
def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


def read_xattrs(path: bytes | int) -> list[tuple[bytes, bytes]]:
    """Extended attributes of a path (not following symlinks) or of an open file; none
    where unsupported."""
    is_open = isinstance(path, int)  # an open file's symlinks were not followed to open it
    try:
        names = os.listxattr(path, follow_symlinks=is_open)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EPERM, errno.EACCES, errno.ENODATA):
            return []
        raise
    out = []
    for name in sorted(names):
        try:
            value = os.getxattr(path, name, follow_symlinks=is_open)
        except OSError:
            continue
        out.append((os.fsencode(name), value))
    return out


def node_from_stat(
    name: bytes, path: bytes, st: os.stat_result, *, with_atime: bool, with_xattrs: bool = True
) -> Node:
    """A node with everything but content/subtree (and its extended attributes, unless
    `with_xattrs`); device and nlink only for hard links."""
    ntype = _TYPES.get(stat.S_IFMT(st.st_mode))
    if ntype is None:
        raise OSError(errno.EINVAL, "unsupported file type")
    node = Node(
        name=name,
        type=ntype,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        user=user_name(st.st_uid),
        group=group_name(st.st_gid),
        mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
        inode=st.st_ino,
    )
    if ntype == "file":
        node.size = st.st_size
    if ntype != "dir" and st.st_nlink > 1:
        node.device, node.nlink = st.st_dev, st.st_nlink
    if ntype in ("chardev", "blockdev"):
        node.rdev = st.st_rdev
    if ntype == "symlink":
        node.target = os.readlink(path)
    if with_atime:
        node.atime_ns = st.st_atime_ns
    if with_xattrs:
        node.xattrs = read_xattrs(path)
    return node
