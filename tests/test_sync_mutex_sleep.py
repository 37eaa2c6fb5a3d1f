"""A contended Mutex (issue 14): its waiters really sleep (the lock is the
owner token, and the futex word is marked "waiters may sleep" by them,
docs/SYNC.md), the mark heals after a waiter killed asleep, and a holder
stopped by SIGSTOP stalls neither ``acquire(timeout=...)`` nor
``acquire(blocking=False)``.
"""

from __future__ import annotations

import os
import resource
import signal
import time
from typing import Any

import pytest

from shmring import AtomicInt32, Mutex, Segment

from _sync_helpers import LOCK, MUTEX_WORD, READY, proc_state, u32, wait_until, wait_value
from conftest import FORK, Kids

MUTEX_RESERVED0 = 12  # layout 2 counted sleepers here; zero since layout 3


def _acquire_and_measure(lock: Mutex, ready: AtomicInt32) -> dict[str, float]:
    """Block in acquire; report the CPU and wall seconds it took."""
    ready.fetch_add(1)
    t0, r0 = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF)
    assert lock.acquire(timeout=30)
    t1, r1 = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF)
    lock.release()
    return {"wall": t1 - t0, "cpu": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)}


def _acquire_for_ever(lock: Mutex, ready: AtomicInt32) -> None:
    ready.fetch_add(1)
    lock.acquire()
    time.sleep(120)


def _asleep(kids: list[Any]) -> bool:
    return all(proc_state(k.pid) == "S" for k in kids)


@pytest.mark.timeout(60)
def test_mutex_waiter_count_heals_after_a_waiter_killed_asleep(segment: Segment, kids: Kids) -> None:
    """Regression (issue 14): a waiter killed while asleep in acquire() left
    the mutex's count of sleepers at 1 for ever (one spare FUTEX_WAKE per
    release, for ever).  Now its mark costs the next release one spare wake,
    and that release clears it."""
    lock, ready = Mutex(segment, LOCK), AtomicInt32(segment, READY)
    assert lock.acquire()
    waiter = kids.start(FORK, _acquire_for_ever, lock, ready)
    wait_value(ready, 1, what="waiter started")
    wait_until(lambda: _asleep([waiter]), what="waiter asleep")
    time.sleep(0.05)
    waiter.kill()
    lock.release()
    for _ in range(3):  # uncontended: nothing marks the word again
        assert lock.acquire(timeout=5)
        lock.release()
    assert u32(segment, LOCK + MUTEX_RESERVED0) == 0, "a count of sleepers is left behind"
    assert u32(segment, LOCK + MUTEX_WORD) == 0, "the dead waiter's mark outlives the release"


@pytest.mark.timeout(60)
def test_contended_mutex_waiters_sleep_without_cpu(segment: Segment, kids: Kids) -> None:
    """Issue 14 (a bound; it held before the fix too): waiters blocked
    behind a holder that keeps the mutex ~1 s use next to no CPU (asleep on the futex word, waking only for
    the holder's liveness check every 10 ms), then all get it."""
    lock, ready = Mutex(segment, LOCK), AtomicInt32(segment, READY)
    n = 3
    assert lock.acquire()
    waiters = [kids.start(FORK, _acquire_and_measure, lock, ready) for _ in range(n)]
    wait_value(ready, n, what="waiters started")
    wait_until(lambda: _asleep(waiters), what="waiters asleep")
    time.sleep(1.0)
    lock.release()
    outs = [w.result(30) for w in waiters]
    for out in outs:
        assert out["wall"] >= 0.5, outs
        assert out["cpu"] < 0.1 * out["wall"], f"a blocked waiter used {out['cpu']:.3f} s CPU in {out['wall']:.2f} s"


def _hold_then_stop(lock: Mutex, ready: AtomicInt32) -> None:
    assert lock.acquire()
    ready.store(1)
    os.kill(os.getpid(), signal.SIGSTOP)
    lock.release()


@pytest.mark.timeout(60)
def test_mutex_acquire_with_timeout_returns_while_the_holder_is_stopped(segment: Segment, kids: Kids) -> None:
    """Issue 14 (checked; it held before the fix too): a holder stopped by
    SIGSTOP (Ctrl-Z, a debugger) while holding: acquire(blocking=False) answers at once and
    acquire(timeout=0.2) after ~0.2 s, both False; once continued, the holder
    releases and the lock is taken."""
    lock, ready = Mutex(segment, LOCK), AtomicInt32(segment, READY)
    holder = kids.start(FORK, _hold_then_stop, lock, ready)
    wait_value(ready, 1, what="holder holds")
    wait_until(lambda: proc_state(holder.pid) == "T", what="holder stopped")
    try:
        t0 = time.monotonic()
        assert lock.acquire(blocking=False) is False
        assert time.monotonic() - t0 < 0.1
        t0 = time.monotonic()
        assert lock.acquire(timeout=0.2) is False
        assert 0.15 < time.monotonic() - t0 < 2.0
    finally:
        os.kill(holder.pid, signal.SIGCONT)
    assert holder.result(10) is None
    assert lock.acquire(timeout=5)
    lock.release()
