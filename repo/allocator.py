"""Tuning of the C allocator, which holds every buffer a backup or restore handles."""

from __future__ import annotations

import functools

# Imported before the key derivation starts (cli/early.py), so without typing's cost.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_KEEP = 64 << 20


@functools.cache
def _mallopt() -> Callable[[int, int], int] | None:
    import ctypes  # noqa: PLC0415 - only where used: about 1 MiB resident

    try:
        mallopt: Callable[[int, int], int] = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    return mallopt


@functools.cache
def use_one_arena() -> bool:
    """Have every thread allocate from glibc's main arena; True if that took effect.

    Reader, compression and upload threads each get an arena of their own by default,
    and every arena keeps the megabyte-sized blocks freed into it for reuse: on a
    two-core machine that doubled a backup's resident memory for no speed. The
    threads allocate a few large blocks each, so sharing one arena costs no waiting.
    Call it before the threads start; elsewhere than glibc it does nothing.
    """
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(_M_ARENA_MAX, 1))


@functools.cache
def _malloc_trim() -> Callable[[int], object] | None:
    import ctypes  # noqa: PLC0415 - see use_one_arena

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    typed: Callable[[int], object] = trim
    return typed


def release_free_memory() -> None:
    """Return the heap's free memory to the system (glibc's malloc_trim); elsewhere
    than glibc it does nothing."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def keep_freed_memory() -> None:
    """Let malloc keep freed buffers for reuse instead of handing them back at once.

    Restore and dump allocate and free several MiB per pack range or blob (the read,
    the plaintext, the decompressed bytes), and backup as much per chunk (its copy, the
    compressed and the sealed bytes); by default glibc maps each such buffer anew and
    unmaps it when freed, so every page of it costs a page fault and zeroing again:
    about half a second of system time per GiB restored, and a tenth of a first
    backup's CPU time. Call it once the key
    derivation's 64 MiB is freed, so that is not what is kept; what stays is at most
    the largest set of buffers alive at once, which the peak resident size counts anyway.
    """
    mallopt = _mallopt()
    if mallopt is not None:  # elsewhere than glibc: its own defaults
        mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # glibc's largest; bigger stay mapped
        mallopt(_M_TRIM_THRESHOLD, _KEEP)
