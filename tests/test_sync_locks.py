"""SpinLock, Mutex and Semaphore as locks, with real processes (fork and
spawn children; see tests/_sync_helpers.py): mutual exclusion (no increment
lost), context managers, acquire timeouts, and a release by a process or a
caller that does not hold the lock.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from shmring import AtomicInt32, Mutex, Segment, Semaphore

from _sync_helpers import (
    FLAG, LOCK, MUTEX_STATE, MUTEX_WORD, SEM_WAITERS, _increment_under, _start_holder, _timed, make_lock,
    read_counter, u32,
)
from conftest import CONTEXTS, FORK, SPAWN, Kids


@pytest.mark.timeout(40)
@pytest.mark.parametrize("ctx", ["fork", "spawn"])
@pytest.mark.parametrize("kind", ["spin", "mutex", "semaphore"])
def test_mutual_exclusion(kind: str, ctx: str, segment: Segment, kids: Kids) -> None:
    n, m = 4, 20000 if kind == "spin" else 40000
    lock = make_lock(kind, segment)
    go = AtomicInt32(segment, FLAG)
    started = [kids.start(CONTEXTS[ctx], _increment_under, lock, segment, go, m) for _ in range(n)]
    go.store(1)
    assert [k.result(30) for k in started] == [m] * n
    assert read_counter(segment) == n * m, "increments were lost: two processes were in the critical section"
    if isinstance(lock, Semaphore):
        assert lock.value == 1
        assert u32(segment, LOCK + SEM_WAITERS) == 0
    else:
        assert lock.holder() is None
        assert not lock.locked()
    if isinstance(lock, Mutex):
        assert u32(segment, LOCK + MUTEX_WORD) == 0, "the last release clears the sleepers' mark"
        assert u32(segment, LOCK + MUTEX_STATE) == 0


def test_lock_context_managers(segment: Segment) -> None:
    for kind in ("spin", "mutex"):
        lock = make_lock(kind, segment, 0 if kind == "spin" else 64)
        with lock as got:
            assert got is True
            assert lock.holder() == (os.getpid(), True)
            assert lock.locked()
        assert lock.holder() is None
    sem = Semaphore(segment, 128, value=2)
    with sem:
        assert sem.value == 1
    assert sem.value == 2


def _acquire_timeout_in_child(lock: Any) -> list[tuple[Any, float]]:
    return [
        _timed(lambda: lock.acquire(timeout=0.1)),
        _timed(lambda: lock.acquire(blocking=False)),
        _timed(lambda: lock.acquire(timeout=0)),
    ]


@pytest.mark.parametrize("holder", ["self", "other process"])
@pytest.mark.parametrize("kind", ["spin", "mutex", "semaphore"])
def test_acquire_timeouts(kind: str, holder: str, segment: Segment, kids: Kids) -> None:
    lock = make_lock(kind, segment)
    assert lock.acquire() is True  # held (or, for the semaphore, emptied) by this process
    if holder == "self":
        results = _acquire_timeout_in_child(lock)
    else:
        results = kids.start(FORK, _acquire_timeout_in_child, lock).result()
    (r1, t1), (r2, t2), (r3, t3) = results
    assert r1 is False and 0.09 <= t1 < 1.0, (r1, t1)
    assert r2 is False and t2 < 0.05, (r2, t2)
    assert r3 is False and t3 < 0.05, (r3, t3)
    with pytest.raises(ValueError):
        lock.acquire(blocking=False, timeout=1)
    with pytest.raises(ValueError):
        lock.acquire(False, 0)
    with pytest.raises(ValueError):
        lock.acquire(timeout=-0.5)
    lock.release()
    assert lock.acquire(timeout=0.1) is True
    lock.release()


def _try_release(lock: Any) -> str:
    try:
        lock.release()
    except RuntimeError as e:
        return f"RuntimeError: {e}"
    return "released"


@pytest.mark.parametrize("kind", ["spin", "mutex"])
def test_release_misuse(kind: str, segment: Segment, kids: Kids) -> None:
    lock = make_lock(kind, segment)
    with pytest.raises(RuntimeError):
        lock.release()
    assert lock.acquire()
    for ctx in (FORK, SPAWN):
        assert kids.start(ctx, _try_release, lock).result().startswith("RuntimeError")
        assert lock.holder() == (os.getpid(), True)
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()
    # held by a child: this process may not release it
    holder = _start_holder(kids, lock, segment)
    with pytest.raises(RuntimeError):
        lock.release()
    assert lock.holder() == (holder.pid, True)
