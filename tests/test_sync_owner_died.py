"""A lock holder killed while holding (SpinLock, Mutex): the next acquirer, or
a waiter already blocked, gets OwnerDied with the lock granted and repairs;
a Mutex released unrepaired is not recoverable (LockNotRecoverable for
everyone).  ``with lock:`` after an owner died runs the lock's
on_owner_died repair, or gives the lock up and raises; ``with
lock.recovering() as died:`` lets the block repair.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from shmring import AtomicInt32, AtomicInt64, Condition, LockNotRecoverable, Mutex, OwnerDied, Segment, SpinLock

from _sync_helpers import (
    AUX, FLAG, LOCK, MUTEX_SLEEPERS, MUTEX_STATE, MUTEX_WORD, READY, STAMP, _kill, _start_holder, make_lock, ms,
    read_counter, u32, wait_until, wait_value, write_counter,
)
from conftest import CONTEXTS, FORK, SPAWN, Kids


def _acquire_expecting_owner_died(lock: Any, seg: Segment, consistent: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        lock.acquire()
        out["raised"] = None
    except OwnerDied:
        out["raised"] = "OwnerDied"
    out["holder"] = lock.holder()
    out["pid"] = os.getpid()
    out["data"] = read_counter(seg)
    write_counter(seg, 0)  # repair
    if consistent and isinstance(lock, Mutex):
        lock.mark_consistent()
    lock.release()
    return out


@pytest.mark.parametrize("reap", [True, False], ids=["reaped", "zombie"])
@pytest.mark.parametrize("who", ["parent", "fork child", "spawn child"])
@pytest.mark.parametrize("kind", ["spin", "mutex"])
def test_owner_died_on_next_acquire(kind: str, who: str, reap: bool, segment: Segment, kids: Kids) -> None:
    lock = make_lock(kind, segment)
    holder = _start_holder(kids, lock, segment)
    _kill(holder, reap)
    assert lock.holder() == (holder.pid, False)
    assert lock.locked()
    if who == "parent":
        with pytest.raises(OwnerDied):
            lock.acquire()
        assert lock.holder() == (os.getpid(), True), "OwnerDied must grant the lock"
        assert read_counter(segment) == 0xDEAD
        write_counter(segment, 0)
        assert lock.acquire(blocking=False) is False  # held by us now, not by a dead process
        if kind == "mutex":
            lock.mark_consistent()  # type: ignore[union-attr]
        lock.release()
    else:
        out = kids.start(FORK if who == "fork child" else SPAWN, _acquire_expecting_owner_died, lock, segment,
                         True).result()
        assert out["raised"] == "OwnerDied", out
        assert out["holder"] == (out["pid"], True), out
        assert out["data"] == 0xDEAD
    # the lock works normally again, here and elsewhere
    assert lock.holder() is None
    assert lock.acquire() is True
    lock.release()
    out = kids.start(FORK, _acquire_expecting_owner_died, lock, segment, False).result()
    assert out["raised"] is None, out
    if kind == "mutex":
        assert u32(segment, LOCK + MUTEX_STATE) == 0


def test_owner_died_reported_by_every_acquire_flavour(segment: Segment, kids: Kids) -> None:
    """Non-blocking and timed acquires take a dead holder's lock over too."""
    for kind, call in [("spin", "blocking=False"), ("spin", "timeout=0.5"), ("spin", "timeout=0"),
                       ("mutex", "blocking=False"), ("mutex", "timeout=0.5")]:
        lock = make_lock(kind, segment)
        _kill(_start_holder(kids, lock, segment))
        with pytest.raises(OwnerDied):
            if call == "blocking=False":
                lock.acquire(blocking=False)
            else:
                lock.acquire(timeout=float(call.split("=")[1]))
        assert lock.holder() == (os.getpid(), True), (kind, call)
        if kind == "mutex":
            lock.mark_consistent()  # type: ignore[union-attr]
        lock.release()


def test_mutex_acquire_timeout_zero_takes_over_dead_holder(segment: Segment, kids: Kids) -> None:
    """Regression: acquire(timeout=0) used to return False forever on a dead
    holder's Mutex (only the first, holder-blind check ran), while
    acquire(blocking=False) and SpinLock.acquire(timeout=0) raised OwnerDied."""
    lock = Mutex(segment, LOCK)
    _kill(_start_holder(kids, lock, segment))
    try:
        with pytest.raises(OwnerDied):
            lock.acquire(timeout=0)
    finally:
        if lock.holder() == (os.getpid(), True):
            lock.mark_consistent()
            lock.release()


def _blocked_acquire(lock: Any, seg: Segment, ready: AtomicInt32, stamp: AtomicInt64, consistent: bool
                     ) -> dict[str, Any]:
    out: dict[str, Any] = {"pid": os.getpid()}
    ready.fetch_add(1)
    try:
        lock.acquire()
        out["raised"] = None
    except (OwnerDied, LockNotRecoverable) as e:
        out["raised"] = type(e).__name__
    out["latency_ns"] = time.monotonic_ns() - stamp.load()
    if out["raised"] == "LockNotRecoverable":
        out["holder"] = lock.holder()
        return out
    out["holder"] = lock.holder()
    out["data"] = read_counter(seg)
    if out["raised"] == "OwnerDied":
        write_counter(seg, 0)
        if consistent and isinstance(lock, Mutex):
            lock.mark_consistent()
    time.sleep(0.01)
    lock.release()
    return out


@pytest.mark.parametrize("ctx", ["fork", "spawn"])
@pytest.mark.parametrize("kind", ["spin", "mutex"])
def test_blocked_waiter_gets_owner_died(kind: str, ctx: str, segment: Segment, kids: Kids) -> None:
    lock = make_lock(kind, segment)
    ready, stamp = AtomicInt32(segment, READY), AtomicInt64(segment, STAMP)
    holder = _start_holder(kids, lock, segment)
    waiter = kids.start(CONTEXTS[ctx], _blocked_acquire, lock, segment, ready, stamp, True)
    wait_value(ready, 1, what="waiter ready")
    if kind == "mutex":
        wait_until(lambda: u32(segment, LOCK + MUTEX_WORD) == MUTEX_SLEEPERS, what="waiter asleep")
    time.sleep(0.3)
    stamp.store(time.monotonic_ns())
    holder.kill()
    out = waiter.result()
    assert out["raised"] == "OwnerDied", out
    assert out["holder"] == (out["pid"], True)
    assert out["data"] == 0xDEAD
    assert ms(out["latency_ns"]) < 1000, f"OwnerDied came {ms(out['latency_ns']):.0f} ms after the kill"
    assert lock.acquire(timeout=5) is True
    lock.release()


@pytest.mark.parametrize("kind", ["spin", "mutex"])
def test_one_of_several_waiters_gets_owner_died(kind: str, segment: Segment, kids: Kids) -> None:
    lock = make_lock(kind, segment)
    ready, stamp = AtomicInt32(segment, READY), AtomicInt64(segment, STAMP)
    holder = _start_holder(kids, lock, segment)
    waiters = [kids.start(FORK, _blocked_acquire, lock, segment, ready, stamp, True) for _ in range(3)]
    wait_value(ready, 3, what="waiters ready")
    time.sleep(0.3)
    stamp.store(time.monotonic_ns())
    holder.kill()
    outs = [w.result() for w in waiters]
    assert sorted(str(o["raised"]) for o in outs) == ["None", "None", "OwnerDied"], outs
    assert all(o["data"] == 0 for o in outs if o["raised"] is None), "a waiter saw the unrepaired data"
    assert lock.holder() is None


@pytest.mark.parametrize("who", ["parent", "child"])
def test_mutex_not_recoverable_after_release_without_repair(who: str, segment: Segment, kids: Kids) -> None:
    mutex = Mutex(segment, LOCK)
    _kill(_start_holder(kids, mutex, segment))
    if who == "parent":
        with pytest.raises(OwnerDied):
            mutex.acquire()
        mutex.release()  # no mark_consistent(): the lock is done for
    else:
        out = kids.start(FORK, _acquire_expecting_owner_died, mutex, segment, False).result()
        assert out["raised"] == "OwnerDied"
    assert mutex.holder() is None
    assert u32(segment, LOCK + MUTEX_STATE) == 2
    for call in (lambda: mutex.acquire(), lambda: mutex.acquire(blocking=False), lambda: mutex.acquire(timeout=0.2),
                 lambda: mutex.acquire(timeout=0)):
        with pytest.raises(LockNotRecoverable):
            call()
        assert mutex.holder() is None, "a refused acquire must leave the lock free"
    with pytest.raises(RuntimeError):
        mutex.mark_consistent()
    with pytest.raises(RuntimeError):
        mutex.release()
    for ctx in (FORK, SPAWN):
        out = kids.start(ctx, _acquire_expecting_owner_died_or_nr, mutex).result()
        assert out == "LockNotRecoverable"


def _acquire_expecting_owner_died_or_nr(lock: Any) -> str:
    try:
        lock.acquire(timeout=5)
    except (OwnerDied, LockNotRecoverable) as e:
        return type(e).__name__
    lock.release()
    return "acquired"


def test_mutex_sleepers_woken_with_not_recoverable(segment: Segment, kids: Kids) -> None:
    mutex = Mutex(segment, LOCK)
    ready, stamp = AtomicInt32(segment, READY), AtomicInt64(segment, STAMP)
    _kill(_start_holder(kids, mutex, segment))
    with pytest.raises(OwnerDied):
        mutex.acquire()
    sleepers = [kids.start(ctx, _blocked_acquire, mutex, segment, ready, stamp, False) for ctx in (FORK, FORK, SPAWN)]
    wait_value(ready, 3, what="sleepers ready")
    wait_until(lambda: u32(segment, LOCK + MUTEX_WORD) == MUTEX_SLEEPERS, what="sleepers marked")
    time.sleep(0.2)
    stamp.store(time.monotonic_ns())
    mutex.release()  # without mark_consistent()
    outs = [s.result(5) for s in sleepers]
    for o in outs:
        assert o["raised"] == "LockNotRecoverable", outs
        assert ms(o["latency_ns"]) < 1000, outs
        assert o["holder"] is None
    assert mutex.holder() is None


def _die_holding_after_owner_died(lock: Mutex, seg: Segment, flag: AtomicInt32) -> None:
    try:
        lock.acquire()
    except OwnerDied:
        flag.store(1)
    time.sleep(120)


def test_mutex_owner_died_again_if_repairer_dies(segment: Segment, kids: Kids) -> None:
    """A holder that got OwnerDied and died without repairing: the next one
    is told the data is still inconsistent."""
    mutex = Mutex(segment, LOCK)
    _kill(_start_holder(kids, mutex, segment))
    flag = AtomicInt32(segment, FLAG)
    flag.store(0)
    second = kids.start(FORK, _die_holding_after_owner_died, mutex, segment, flag)
    wait_value(flag, 1, what="second holder got OwnerDied")
    _kill(second)
    with pytest.raises(OwnerDied):
        mutex.acquire()
    mutex.mark_consistent()
    mutex.release()
    assert mutex.acquire(blocking=False) is True
    mutex.release()


def test_mark_consistent_misuse(segment: Segment, kids: Kids) -> None:
    mutex = Mutex(segment, LOCK)
    with pytest.raises(RuntimeError):
        mutex.mark_consistent()  # free
    mutex.acquire()
    with pytest.raises(RuntimeError):
        mutex.mark_consistent()  # held normally
    mutex.release()
    _kill(_start_holder(kids, mutex, segment))
    with pytest.raises(OwnerDied):
        mutex.acquire()
    assert kids.start(FORK, _try_mark_consistent, mutex).result() == "RuntimeError", "only the holder may repair"
    mutex.mark_consistent()
    with pytest.raises(RuntimeError):
        mutex.mark_consistent()  # already done
    mutex.release()
    assert u32(segment, LOCK + MUTEX_STATE) == 0


def _try_mark_consistent(mutex: Mutex) -> str:
    try:
        mutex.mark_consistent()
    except RuntimeError:
        return "RuntimeError"
    return "ok"


# -- `with lock:` after an owner died: on_owner_died, recovering() ---------------------

REPAIRS = 652  # AtomicInt32: how many times a repair callable ran

ABANDONED_PID = 2**32 - 1  # holder() of a spin lock given up unrepaired (SHMRING_TOKEN_ABANDONED)


def _owner_pid(seg: Segment, off: int = LOCK) -> int:
    return int.from_bytes(seg.buf[off : off + 8], "little") >> 32


def _repair(seg: Segment, lock_seg: Segment | None = None, lock_off: int = LOCK) -> None:
    """A repair callable: checks it runs holding the lock (at ``lock_off`` of
    ``lock_seg``, by default of ``seg``), undoes the dead holder's half-done
    update in ``seg``, counts itself."""
    assert _owner_pid(lock_seg or seg, lock_off) == os.getpid(), "on_owner_died must run holding the lock"
    assert read_counter(seg) == 0xDEAD
    write_counter(seg, 0)
    AtomicInt32(seg, REPAIRS).fetch_add(1)


class _RepairFailed(Exception):
    pass


def _failing_repair(seg: Segment) -> None:
    assert _owner_pid(seg) == os.getpid()
    AtomicInt32(seg, REPAIRS).fetch_add(1)
    raise _RepairFailed("cannot repair now")


def _make_repairing(kind: str, seg: Segment, repair: Any) -> SpinLock | Mutex:
    return (SpinLock if kind == "spin" else Mutex)(seg, LOCK, on_owner_died=repair)


def _assert_given_up_unrepaired(kind: str, lock: Any, seg: Segment) -> None:
    """Not held by this process, and the next acquirer is told OwnerDied."""
    if kind == "mutex":
        assert lock.holder() is None
        assert u32(seg, LOCK + MUTEX_STATE) == 1, "still marked owner-died"
    else:
        assert lock.holder() == (ABANDONED_PID, False)


def _with_lock(lock: Any, seg: Segment) -> dict[str, Any]:
    """`with lock:` in a child: what it saw inside, or what it raised."""
    out: dict[str, Any] = {"pid": os.getpid()}
    try:
        with lock:
            out["holder"] = lock.holder()
            out["data"] = read_counter(seg)
        out["raised"] = None
    except BaseException as e:  # noqa: BLE001 - reported to the test
        out["raised"] = type(e).__name__
    out["after"] = lock.holder()
    return out


@pytest.mark.parametrize("kind", ["spin", "mutex"])
def test_with_lock_repairs_with_on_owner_died(kind: str, segment: Segment, kids: Kids) -> None:
    """The holder was SIGKILLed inside its critical section: `with lock:`
    calls the repair callable holding the lock, marks the lock consistent,
    enters the block, and releases it at the end; nobody is told again."""
    lock = _make_repairing(kind, segment, functools.partial(_repair, segment))
    _kill(_start_holder(kids, lock, segment))
    with lock as got:
        assert got is True
        assert lock.holder() == (os.getpid(), True)
        assert read_counter(segment) == 0, "the block runs after the repair"
    assert AtomicInt32(segment, REPAIRS).load() == 1
    assert lock.holder() is None
    if kind == "mutex":
        assert u32(segment, LOCK + MUTEX_STATE) == 0, "marked consistent"
    with lock:  # a normal acquisition: no repair
        pass
    out = kids.start(FORK, _with_lock, lock, segment).result()
    assert out["raised"] is None and out["holder"] == (out["pid"], True)
    assert AtomicInt32(segment, REPAIRS).load() == 1


@pytest.mark.parametrize("ctx", ["fork", "spawn"])
@pytest.mark.parametrize("kind", ["spin", "mutex"])
def test_with_lock_repairs_in_a_child_with_the_pickled_callback(kind: str, ctx: str, segment: Segment,
                                                                kids: Kids) -> None:
    """on_owner_died travels with the lock to a child (fork or spawn)."""
    lock = _make_repairing(kind, segment, functools.partial(_repair, segment))
    _kill(_start_holder(kids, lock, segment))
    out = kids.start(CONTEXTS[ctx], _with_lock, lock, segment).result()
    assert out["raised"] is None, out
    assert out["holder"] == (out["pid"], True) and out["data"] == 0 and out["after"] is None
    assert AtomicInt32(segment, REPAIRS).load() == 1
    assert lock.acquire(blocking=False) is True
    lock.release()


@pytest.mark.parametrize("kind", ["spin", "mutex"])
def test_with_lock_gives_the_lock_up_when_the_repair_raises(kind: str, segment: Segment, kids: Kids) -> None:
    """A repair that fails propagates its exception and leaves the lock free
    and still marked "owner died": the next holder repairs."""
    lock = _make_repairing(kind, segment, functools.partial(_failing_repair, segment))
    _kill(_start_holder(kids, lock, segment))
    with pytest.raises(_RepairFailed):
        with lock:
            pytest.fail("the block must not run when the repair failed")
    _assert_given_up_unrepaired(kind, lock, segment)
    good = _make_repairing(kind, segment, functools.partial(_repair, segment))
    out = kids.start(FORK, _with_lock, good, segment).result()  # another process: told, repairs
    assert out["raised"] is None and out["data"] == 0, out
    assert AtomicInt32(segment, REPAIRS).load() == 2
    assert lock.holder() is None


@pytest.mark.parametrize("kind", ["spin", "mutex"])
def test_with_lock_without_callback_raises_without_keeping_the_lock(kind: str, segment: Segment,
                                                                    kids: Kids) -> None:
    """Regression (issue 9): __enter__ raised OwnerDied with the lock
    granted, __exit__ never ran, and every other process waited for ever.
    Now `with` gives the lock up (still marked owner-died) and raises; a
    process that then uses the lock is told and gets it."""
    lock = make_lock(kind, segment)
    _kill(_start_holder(kids, lock, segment))
    with pytest.raises(OwnerDied, match="on_owner_died"):
        with lock:
            pytest.fail("the block must not run")
    _assert_given_up_unrepaired(kind, lock, segment)
    with pytest.raises(OwnerDied):  # told again: nobody repaired
        with lock:
            pass
    _assert_given_up_unrepaired(kind, lock, segment)
    good = _make_repairing(kind, segment, functools.partial(_repair, segment))
    out = kids.start(FORK, _with_lock, good, segment).result()
    assert out["raised"] is None and out["holder"] == (out["pid"], True) and out["data"] == 0, out
    assert lock.holder() is None
    with lock:
        assert read_counter(segment) == 0


def _recover_in_block(lock: Any, seg: Segment, fail: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"pid": os.getpid()}
    try:
        with lock.recovering() as died:
            out["died"] = died
            out["holder"] = lock.holder()
            if died:
                write_counter(seg, 0)
            if fail:
                raise _RepairFailed("in the block")
        out["raised"] = None
    except _RepairFailed:
        out["raised"] = "_RepairFailed"
    out["after"] = lock.holder()
    return out


@pytest.mark.parametrize("kind", ["spin", "mutex"])
def test_recovering_repairs_in_the_block(kind: str, segment: Segment, kids: Kids) -> None:
    """`with lock.recovering() as previous_owner_died:` tells the block to
    repair; leaving it normally marks the lock consistent and releases it."""
    lock = make_lock(kind, segment)
    _kill(_start_holder(kids, lock, segment))
    out = _recover_in_block(lock, segment, fail=False)
    assert out == {"pid": os.getpid(), "died": True, "holder": (os.getpid(), True), "raised": None,
                   "after": None}
    if kind == "mutex":
        assert u32(segment, LOCK + MUTEX_STATE) == 0
    out = kids.start(SPAWN, _recover_in_block, lock, segment, False).result()
    assert out["died"] is False and out["raised"] is None and out["after"] is None
    assert read_counter(segment) == 0


@pytest.mark.parametrize("kind", ["spin", "mutex"])
def test_recovering_gives_the_lock_up_when_the_block_raises(kind: str, segment: Segment, kids: Kids) -> None:
    """An exception in a recovering block after an owner died: the lock is
    given up still marked owner-died and the exception propagates; the next
    recovering block is told and repairs.  After a normal acquisition the
    exception just releases the lock."""
    lock = make_lock(kind, segment)
    _kill(_start_holder(kids, lock, segment))
    out = _recover_in_block(lock, segment, fail=True)
    assert out["died"] is True and out["raised"] == "_RepairFailed"
    _assert_given_up_unrepaired(kind, lock, segment)
    out = kids.start(FORK, _recover_in_block, lock, segment, False).result()
    assert out["died"] is True and out["raised"] is None and out["after"] is None, out
    out = _recover_in_block(lock, segment, fail=True)  # normal acquisition, then an exception
    assert out["died"] is False and out["raised"] == "_RepairFailed" and out["after"] is None
    if kind == "mutex":
        assert u32(segment, LOCK + MUTEX_STATE) == 0
    assert lock.acquire(blocking=False) is True
    lock.release()


@pytest.mark.parametrize("kind", ["spin", "mutex"])
def test_low_level_path_still_reports_owner_died_holding_the_lock(kind: str, segment: Segment,
                                                                  kids: Kids) -> None:
    """acquire() / mark_consistent() / release() are unchanged by
    on_owner_died: acquire raises OwnerDied with the lock granted and calls
    nothing."""
    lock = _make_repairing(kind, segment, functools.partial(_repair, segment))
    _kill(_start_holder(kids, lock, segment))
    with pytest.raises(OwnerDied, match="you hold it now"):
        lock.acquire()
    assert lock.holder() == (os.getpid(), True)
    assert AtomicInt32(segment, REPAIRS).load() == 0, "acquire() does not call on_owner_died"
    write_counter(segment, 0)
    if isinstance(lock, Mutex):
        lock.mark_consistent()
    lock.release()
    assert lock.holder() is None


def test_condition_with_block_uses_its_mutex_repair(segment: Segment, kids: Kids) -> None:
    mutex = Mutex(segment, LOCK, on_owner_died=functools.partial(_repair, segment))
    cond = Condition(segment, AUX, lock=mutex)
    _kill(_start_holder(kids, mutex, segment))
    with cond:
        assert mutex.holder() == (os.getpid(), True) and read_counter(segment) == 0
        cond.notify()
    assert mutex.holder() is None and u32(segment, LOCK + MUTEX_STATE) == 0


def _count_repair(data: Segment) -> None:
    assert read_counter(data) == 0xDEAD
    write_counter(data, 0)
    AtomicInt32(data, REPAIRS).fetch_add(1)


def test_named_locks_take_on_owner_died(new_name: Callable[[], str], kids: Kids) -> None:
    """Mutex.create(name, on_owner_died=...) and Mutex.open(name, on_owner_died=...)."""
    name = new_name()
    with Segment.create(new_name(), 4096) as data:
        mutex = Mutex.create(name, on_owner_died=functools.partial(_count_repair, data))
        try:
            opened = Mutex.open(name, on_owner_died=functools.partial(_count_repair, data))
            for n, handle in enumerate([opened, mutex], 1):
                AtomicInt32(data, FLAG).store(0)
                holder = kids.start(FORK, _hold_named, name, data)
                wait_value(AtomicInt32(data, FLAG), 1, what="holder took the named lock")
                _kill(holder)
                assert mutex.holder() == (holder.pid, False)
                with handle:
                    assert handle.holder() == (os.getpid(), True) and read_counter(data) == 0
                assert AtomicInt32(data, REPAIRS).load() == n
                assert mutex.holder() is None
            opened.close()
            with pytest.raises(TypeError):
                Mutex.open(name, on_owner_died=42)  # type: ignore[arg-type]
        finally:
            mutex.close()


def _hold_named(name: str, data: Segment) -> None:
    lock = Mutex.open(name)
    assert lock.acquire()
    write_counter(data, 0xDEAD)
    AtomicInt32(data, FLAG).store(1)
    time.sleep(120)
