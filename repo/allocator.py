"""Tuning of the C allocator, which holds every buffer a backup or restore handles."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import cast

# glibc's mallopt parameter for the number of arenas (malloc.h).
_M_ARENA_MAX = -8


@functools.cache
def use_one_arena() -> bool:
    """Have every thread allocate from glibc's main arena; True if that took effect.

    Reader, compression and upload threads each get an arena of their own by default,
    and every arena keeps the megabyte-sized blocks freed into it for reuse: on a
    two-core machine that doubled a backup's resident memory for no speed. The
    threads allocate a few large blocks each, so sharing one arena costs no waiting.
    Call it before the threads start; elsewhere than glibc it does nothing.
    """
    import ctypes  # noqa: PLC0415 - here, after the key is derived: about 1 MiB resident

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, 1))


@functools.cache
def _malloc_trim() -> Callable[[int], object] | None:
    import ctypes  # noqa: PLC0415 - see use_one_arena

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return cast(Callable[[int], object], trim)


def release_free_memory() -> None:
    """Return the heap's free memory to the system (glibc's malloc_trim); elsewhere
    than glibc it does nothing."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
