"""Helpers of the tests of the process-shared synchronisation primitives
(tests/test_sync_*.py).

Children run ``_child_main`` (tests/conftest.py), which sends back what their
target returns (or the traceback of what it raised) over a pipe, so a hung or
crashed child shows up as a failed assertion, never as a hung test.
Coordination between the test and its children uses plain polling of
AtomicInt32 loads (``wait_value``), never the blocking calls under test, so a
lost wake-up fails a test with a message instead of hanging it.

Times are taken with time.monotonic_ns(), which is CLOCK_MONOTONIC and so
comparable between processes: a child measures a latency from a timestamp
the parent stored just before it acted.

Layout offsets used for white-box checks (the ``waiters`` hints) come from
include/shmring.h and docs/PROTOCOL.md section 4 (checked by
test_sync_misuse.py::test_layout_offsets_match_header).  Module-level
functions here run in child processes (spawn re-imports this module).
"""

from __future__ import annotations

import os
import signal
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import shmring
from shmring import AtomicInt32, AtomicInt64, Mutex, Segment, Semaphore, SpinLock

from conftest import FORK, Kid, Kids

INCLUDE = shmring.get_include()

# Upper bound on any single wait of the test on its children.
STEP = 20.0

# Offsets in the 4096-byte ``segment`` fixture's payload.
LOCK = 0  # the primitive under test (up to 24 bytes)
AUX = 64  # a second primitive (a Condition's Mutex, ...)
AUX2 = 128
COUNTER = 256  # a plain 8-byte little-endian integer, not atomic
STAMP = 512  # AtomicInt64: a monotonic_ns timestamp stored by the parent
FLAG = 576  # AtomicInt32: step flag
FLAG2 = 580
READY = 640  # AtomicInt32: how many children are ready
DONE = 644  # AtomicInt32: how many children are done
PEAK = 648  # AtomicInt32
PAYLOAD = 1024  # 1 KiB of data published under a flag

# Field offsets inside the primitives (include/shmring.h).
SEM_WAITERS = 4
MUTEX_WORD = 8  # the futex word: 0, or MUTEX_SLEEPERS when a waiter may sleep
MUTEX_SLEEPERS = 2
MUTEX_STATE = 16
EVENT_WAITERS = 4
COND_SEQ = 0
COND_WAITERS = 4


def u32(seg: Segment, off: int) -> int:
    value: int = struct.unpack_from("<I", seg.buf, off)[0]
    return value


def read_counter(seg: Segment, off: int = COUNTER) -> int:
    return int.from_bytes(seg.buf[off : off + 8], "little")


def write_counter(seg: Segment, value: int, off: int = COUNTER) -> None:
    seg.buf[off : off + 8] = value.to_bytes(8, "little")


def wait_value(atom: AtomicInt32 | AtomicInt64, value: int, timeout: float = STEP, what: str = "") -> None:
    """Poll ``atom`` (plain loads, no futex) until it holds ``value``."""
    deadline = time.monotonic() + timeout
    while atom.load() != value:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what or 'flag'}: still {atom.load()} after {timeout} s, expected {value}")
        time.sleep(0.001)


def wait_until(pred: Callable[[], Any], timeout: float = STEP, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.001)


def proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat[stat.rindex(")") + 2]


def ms(ns: int) -> float:
    return ns / 1e6


def make_lock(kind: str, seg: Segment, off: int = LOCK) -> SpinLock | Mutex | Semaphore:
    if kind == "spin":
        return SpinLock(seg, off)
    if kind == "mutex":
        return Mutex(seg, off)
    assert kind == "semaphore"
    return Semaphore(seg, off, value=1)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.monotonic()
    r = fn()
    return r, time.monotonic() - t0


# -- mutual exclusion ------------------------------------------------------------------


def _increment_under(lock: Any, seg: Segment, go: AtomicInt32, m: int) -> int:
    wait_value(go, 1, what="go")
    buf = seg.buf
    for i in range(m):
        lock.acquire()
        try:
            v = int.from_bytes(buf[COUNTER : COUNTER + 8], "little")
            if i % 64 == 0:
                os.sched_yield()  # give a racing process every chance to get in
            buf[COUNTER : COUNTER + 8] = (v + 1).to_bytes(8, "little")
        finally:
            lock.release()
    return m


# -- a holder killed while holding -------------------------------------------------------


def _hold_forever(lock: Any, seg: Segment, flag: AtomicInt32) -> None:
    assert lock.acquire()
    write_counter(seg, 0xDEAD)  # a half-done update for the next holder to repair
    flag.store(1)
    time.sleep(120)


def _start_holder(kids: Kids, lock: Any, seg: Segment, ctx: Any = FORK) -> Kid:
    flag = AtomicInt32(seg, FLAG)
    flag.store(0)
    holder = kids.start(ctx, _hold_forever, lock, seg, flag)
    wait_value(flag, 1, what="holder took the lock")
    assert lock.holder() == (holder.pid, True)
    return holder


def _kill(kid: Kid, reap: bool = True) -> None:
    kid.kill()
    if reap:
        kid.proc.join(10)
        assert kid.proc.exitcode == -signal.SIGKILL
    else:  # leave it a zombie: a zombie holds nothing
        wait_until(lambda: proc_state(kid.pid) == "Z", what=f"{kid.pid} is a zombie")
