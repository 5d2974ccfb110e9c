"""The target side of a restore: directory descriptors that never follow symlinks,
metadata, special files, comparing and removing what the target holds."""

from __future__ import annotations

import array
import collections
import contextlib
import errno
import os
import stat
import struct
import sys

from repo.tree import Node

OPEN_DIRS = 128

# FS_IOC_GETFLAGS and FS_IOC_SETFLAGS (linux/fs.h: _IOR/_IOW('f', 1/2, long)), numbered
# as the generic ioctl layout has them; machines of other layouts (powerpc, mips, sparc)
# are left out rather than risk another request's number. The kernel reads and writes
# an int.
_IOC_GENERIC = {"x86_64", "aarch64", "arm64", "riscv64", "s390x", "loongarch64"}
_HAS_FLAGS = sys.platform == "linux" and os.uname().machine in _IOC_GENERIC
_LONG = struct.calcsize("l")
_GETFLAGS = (2 << 30) | (_LONG << 16) | (ord("f") << 8) | 1
_SETFLAGS = (1 << 30) | (_LONG << 16) | (ord("f") << 8) | 2
TOPDIR_FL = 0x00020000


class Dirs:
    """Open directory descriptors below the target, opened component by component
    with O_NOFOLLOW so a symlink planted in the target is never followed.

    Only the thread that owns it calls it; a descriptor handed to a worker is pinned
    until the worker is done with it, so it is never closed (and its number reused for
    another folder) under that worker."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self._fds: collections.OrderedDict[tuple[bytes, ...], int] = collections.OrderedDict()
        self._pins: dict[tuple[bytes, ...], int] = {}

    def fd(self, rel: tuple[bytes, ...]) -> int:
        fd = self._get(rel)
        self._evict(rel)
        return fd

    def _get(self, rel: tuple[bytes, ...]) -> int:
        if not rel:
            return self.root_fd
        fd = self._fds.get(rel)
        if fd is not None:
            self._fds.move_to_end(rel)
            return fd
        parent = self._get(rel[:-1])
        fd = os.open(rel[-1], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
        self._fds[rel] = fd
        return fd

    def _evict(self, keep: tuple[bytes, ...]) -> None:
        """Close the least recently used unpinned descriptors down to OPEN_DIRS, never
        `keep`, the one just asked for."""
        extra = len(self._fds) - OPEN_DIRS
        if extra <= 0:
            return
        # Oldest first, and the oldest are seldom pinned: a look at a few, not at all.
        idle: list[tuple[bytes, ...]] = []
        for rel in self._fds:
            if rel not in self._pins and rel != keep:
                idle.append(rel)
                if len(idle) == extra:
                    break
        for rel in idle:
            os.close(self._fds.pop(rel))

    def pin(self, rel: tuple[bytes, ...]) -> int:
        """The folder's descriptor, kept open until as many unpin() calls."""
        fd = self.fd(rel)
        self._pins[rel] = self._pins.get(rel, 0) + 1
        return fd

    def unpin(self, rel: tuple[bytes, ...]) -> None:
        left = self._pins.pop(rel) - 1
        if left:
            self._pins[rel] = left

    def existing(self, rel: tuple[bytes, ...]) -> int | None:
        """The directory's descriptor, or None when it is not (yet) a real directory."""
        try:
            return self.fd(rel)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a symlink where a directory should be
                return None
            raise

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._pins.clear()


def mark_top(fd: int) -> bool:
    """Mark a folder the top of a directory hierarchy (chattr +T) for ext4's Orlov
    allocator, which then places each folder made in it in the block group with the
    fewest folders and enough free inodes, as it does for a folder made at the root.

    False where nothing was changed: not Linux, a file system without the flag, or a
    folder marked already."""
    flags = _flags(fd)
    if flags is None or flags & TOPDIR_FL:
        return False
    return _set_flags(fd, flags | TOPDIR_FL)


def mark_top_at(parent: int, name: bytes) -> bool:
    """mark_top() on the folder `name` in `parent`, never following a symlink; False
    also when it cannot be opened (the mark is only a hint)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
    except OSError:
        return False
    try:
        return mark_top(fd)
    finally:
        os.close(fd)


def unmark_top(fd: int) -> None:
    """Take mark_top()'s mark off, leaving every other flag as it is now (the kernel
    may have set some meanwhile: a growing folder's index); OSError if it stays."""
    flags = _flags(fd)
    if flags is not None and flags & TOPDIR_FL:
        import fcntl  # noqa: PLC0415 - Linux only, as _flags()

        fcntl.ioctl(fd, _SETFLAGS, array.array("i", [flags & ~TOPDIR_FL]))


def _flags(fd: int) -> int | None:
    if not _HAS_FLAGS:
        return None
    import fcntl  # noqa: PLC0415 - Linux only

    flags = array.array("i", [0])
    try:
        fcntl.ioctl(fd, _GETFLAGS, flags, True)
    except OSError:
        return None
    return flags[0]


def _set_flags(fd: int, flags: int) -> bool:
    import fcntl  # noqa: PLC0415 - Linux only, as _flags()

    try:
        fcntl.ioctl(fd, _SETFLAGS, array.array("i", [flags]))
    except OSError:
        return False
    return True


def lstat_at(parent: int | None, name: bytes) -> os.stat_result | None:
    if parent is None:
        return None
    try:
        return os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None


def apply_fd_metadata(fd: int, node: Node) -> None:
    """Owner, mode, xattrs and times, in that order (chown clears set-id bits)."""
    with contextlib.suppress(PermissionError):  # not root: keep our own, as restic does
        os.fchown(fd, node.uid, node.gid)
    os.fchmod(fd, node.mode)
    for name, value in node.xattrs:
        try:
            os.setxattr(fd, name, value)
        except OSError as exc:
            if exc.errno not in (errno.ENOTSUP, errno.EPERM, errno.EACCES):
                raise
    os.utime(fd, ns=(node.atime_ns or node.mtime_ns, node.mtime_ns))


def remove_entry(parent: int, name: bytes) -> None:
    """Delete a file, link or whole folder below `parent`, never following a symlink."""
    try:
        os.unlink(name, dir_fd=parent)
        return
    except FileNotFoundError:
        return
    except (IsADirectoryError, PermissionError) as exc:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            raise OSError(exc.errno, exc.strerror) from exc
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
    try:
        for entry in list(os.scandir(fd)):
            remove_entry(fd, os.fsencode(entry.name))
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent)


def make_special(parent: int, name: bytes, node: Node, *, is_new: bool = False) -> None:
    """Create a symlink, FIFO or device node in place of whatever is there (nothing,
    when the caller says it is new: decided create, as in a folder just made)."""
    try:
        if not is_new:
            os.unlink(name, dir_fd=parent)
    except FileNotFoundError:
        pass
    except IsADirectoryError as exc:
        raise OSError(errno.EEXIST, "a directory is in the way") from exc
    if node.type == "symlink":
        os.symlink(node.target or b"", name, dir_fd=parent)
    elif node.type == "fifo":
        os.mkfifo(name, 0o600, dir_fd=parent)
    elif node.type in ("chardev", "blockdev"):
        kind = stat.S_IFCHR if node.type == "chardev" else stat.S_IFBLK
        os.mknod(name, kind | 0o600, node.rdev, dir_fd=parent)
    else:
        raise OSError(errno.ENOTSUP, f"cannot restore a {node.type}")
    with contextlib.suppress(PermissionError):  # not root: as above
        os.chown(name, node.uid, node.gid, dir_fd=parent, follow_symlinks=False)
    if node.type != "symlink":
        os.chmod(name, node.mode, dir_fd=parent)
    times = (node.atime_ns or node.mtime_ns, node.mtime_ns)
    os.utime(name, ns=times, dir_fd=parent, follow_symlinks=False)


def special_matches(st: os.stat_result, parent: int, name: bytes, node: Node) -> bool:
    """Whether an existing symlink, FIFO or device is already what the snapshot holds."""
    kinds = {
        "symlink": stat.S_ISLNK,
        "fifo": stat.S_ISFIFO,
        "chardev": stat.S_ISCHR,
        "blockdev": stat.S_ISBLK,
    }
    test = kinds.get(node.type)
    if test is None or not test(st.st_mode):
        return False
    if node.type == "symlink":
        return os.readlink(name, dir_fd=parent) == (node.target or b"")
    if node.type in ("chardev", "blockdev"):
        return st.st_rdev == node.rdev
    return True
