"""Argon2id itself, and a derivation started ahead of need.

Imports nothing heavy, so that a command can start its key derivation before the
rest of hutch is imported (cli/early.py): Argon2id releases the GIL, and importing
is most of what a short command does besides it.

The implementation is the reference one with its SIMD kernels, through
argon2-cffi-bindings: the same output as OpenSSL's, in about four fifths of the
time, and importable in a millisecond where `cryptography`'s KDF module takes
fifteen.
"""

from __future__ import annotations

import os
import threading

from _argon2_cffi_bindings import ffi, lib

KEY_SIZE = 32
# Parameters come from key files, which anyone with write access to the
# repository can plant: cap memory at 1 GiB so opening one cannot exhaust RAM.
MAX_MEMORY_KIB = 1024 * 1024
MAX_ITERATIONS = 64
MAX_LANES = 64

Inputs = tuple[bytes, bytes, int, int, int]
"""password, salt, memory in KiB, iterations, lanes"""


def problem(memory_kib: int, iterations: int, lanes: int) -> str | None:
    """Why these parameters are refused, or None when they are within the limits."""
    if not 1 <= lanes <= MAX_LANES:
        return f"KDF lanes {lanes} outside [1, {MAX_LANES}]"
    if not 1 <= iterations <= MAX_ITERATIONS:
        return f"KDF iterations {iterations} outside [1, {MAX_ITERATIONS}]"
    # Argon2 itself needs at least 8 KiB per lane.
    low = 8 * lanes
    if not low <= memory_kib <= MAX_MEMORY_KIB:
        return f"KDF memory {memory_kib} KiB outside [{low}, {MAX_MEMORY_KIB}]"
    return None


def argon2id(inputs: Inputs) -> bytes:
    """The 32-byte Argon2id (version 1.3) output; the caller has checked the parameters."""
    password, salt, memory_kib, iterations, lanes = inputs
    out = ffi.new("uint8_t[]", KEY_SIZE)
    pwd = ffi.new("uint8_t[]", password)
    slt = ffi.new("uint8_t[]", salt)
    # More threads than cores only adds switches; the lanes, not the threads,
    # define the output.
    threads = max(1, min(lanes, os.cpu_count() or 1))
    ctx = ffi.new(
        "argon2_context *",
        {
            "out": out,
            "outlen": KEY_SIZE,
            "pwd": pwd,
            "pwdlen": len(password),
            "salt": slt,
            "saltlen": len(salt),
            "secret": ffi.NULL,
            "secretlen": 0,
            "ad": ffi.NULL,
            "adlen": 0,
            "t_cost": iterations,
            "m_cost": memory_kib,
            "lanes": lanes,
            "threads": threads,
            "version": lib.ARGON2_VERSION_NUMBER,
            "allocate_cbk": ffi.NULL,
            "free_cbk": ffi.NULL,
            "flags": lib.ARGON2_DEFAULT_FLAGS,
        },
    )
    code = lib.argon2_ctx(ctx, lib.Argon2_id)
    if code != lib.ARGON2_OK:
        message = ffi.string(lib.argon2_error_message(code)).decode()
        if code == lib.ARGON2_MEMORY_ALLOCATION_ERROR:
            raise MemoryError(message)
        raise ValueError(f"Argon2id: {message}")
    return bytes(ffi.buffer(out, KEY_SIZE))


class _Started:
    def __init__(self, inputs: Inputs) -> None:
        self.inputs = inputs
        self.key: bytes | None = None
        self.thread = threading.Thread(target=self._run, name="argon2id")

    def _run(self) -> None:
        # Any error is left for the caller to meet again when it derives in its own
        # thread, which reports it; raised here it would print a traceback.
        try:
            self.key = argon2id(self.inputs)
        except Exception:
            self.key = None


_lock = threading.Lock()
_started: _Started | None = None


def start(inputs: Inputs) -> None:
    """Begin argon2id(inputs) in a thread and return at once; finish() takes the result."""
    global _started  # one derivation in flight per process
    started = _Started(inputs)
    with _lock:
        previous, _started = _started, started
    if previous is not None:
        previous.thread.join()
    started.thread.start()


def finish(inputs: Inputs) -> bytes | None:
    """The key of a started derivation with these inputs; None if none was started.

    Waits for any started derivation, even of other inputs: two at once would hold
    twice the memory the peak-RSS bound allows for one.
    """
    global _started
    with _lock:
        started, _started = _started, None
    if started is None:
        return None
    started.thread.join()
    return started.key if started.inputs == inputs else None
