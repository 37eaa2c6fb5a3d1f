"""Blocking calls of every primitive: timeouts kept, Ctrl-C within 100 ms
(with no waiter count left behind), almost no CPU while asleep, and a
segment that refuses to close while a thread waits on a primitive in it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import shmring
from shmring import AtomicFlag, AtomicInt32, AtomicInt64, Condition, Event, Mutex, Segment, Semaphore, SpinLock

from _sync_helpers import (
    AUX, AUX2, COND_WAITERS, EVENT_WAITERS, FLAG, LOCK, MUTEX_WORD, SEM_WAITERS, STAMP, _timed, ms, u32,
    wait_value,
)
from conftest import CONTEXTS, FORK, Kids


def test_wait_timeouts(segment: Segment) -> None:
    event = Event(segment, 0)
    mutex = Mutex(segment, AUX)
    cond = Condition(segment, 8, lock=mutex)
    a64, a32, flag = AtomicInt64(segment, AUX2), AtomicInt32(segment, AUX2 + 8), AtomicFlag(segment, AUX2 + 12)
    a64.store(7)
    a32.store(-3)

    def cond_wait() -> bool:
        with cond:
            r = cond.wait(0.1)
            assert mutex.holder() == (os.getpid(), True), "Condition.wait must return with the lock held"
            return r

    for what, fn in {
        "Event.wait": lambda: event.wait(0.1),
        "Condition.wait": cond_wait,
        "AtomicInt64.wait": lambda: a64.wait(7, 0.1),
        "AtomicInt32.wait": lambda: a32.wait(-3, 0.1),
        "AtomicFlag.wait_set": lambda: flag.wait_set(0.1),
    }.items():
        r, t = _timed(fn)
        assert r is False, what
        assert 0.09 <= t < 1.0, (what, t)
    assert mutex.holder() is None
    # timeout=0 answers at once; a value that already differs returns True at once
    for what, fn, expected in [
        ("Event.wait(0)", lambda: event.wait(0), False),
        ("AtomicInt64.wait(7, 0)", lambda: a64.wait(7, 0), False),
        ("AtomicInt64.wait(8)", lambda: a64.wait(8), True),
        ("AtomicInt32.wait(0)", lambda: a32.wait(0), True),
    ]:
        r, t = _timed(fn)
        assert r is expected and t < 0.05, (what, r, t)
    for bad in (-1, -0.001, float("nan")):
        with pytest.raises(ValueError):
            event.wait(bad)
        with pytest.raises(ValueError):
            a64.wait(7, bad)
    with pytest.raises(TypeError):
        event.wait("1")  # type: ignore[arg-type]
    event.set()
    assert _timed(lambda: event.wait())[0] is True


# -- Ctrl-C ------------------------------------------------------------------------

INTERRUPTIBLE = ["mutex", "semaphore", "event", "condition", "atomic32", "spin"]


class Board:
    """The primitives of the Ctrl-C and CPU tests, in one segment."""

    def __init__(self, seg: Segment) -> None:
        self.seg = seg
        self.mutex = Mutex(seg, LOCK)
        self.sem = Semaphore(seg, AUX)
        self.event = Event(seg, AUX + 8)  # 16 bytes
        self.cond_lock = Mutex(seg, AUX2 + 24)  # 24 bytes
        self.cond = Condition(seg, AUX2 + 48, lock=self.cond_lock)  # 16 bytes
        self.atom = AtomicInt32(seg, AUX + 24)
        self.spin = SpinLock(seg, AUX2)
        self.pred = AtomicInt32(seg, AUX2 + 16)
        self.flag = AtomicInt32(seg, FLAG)
        self.stamp = AtomicInt64(seg, STAMP)

    def block(self, kind: str, timeout: float | None = None) -> bool:
        """The blocking call of ``kind`` (with the lock taken back after)."""
        if kind == "mutex":
            r = self.mutex.acquire(timeout=timeout)
            if r:
                self.mutex.release()
            return r
        if kind == "semaphore":
            return self.sem.acquire(timeout=timeout)
        if kind == "event":
            return self.event.wait(timeout)
        if kind == "condition":
            with self.cond:
                if timeout is None:
                    self.cond.wait()
                    return True
                return bool(self.cond.wait_for(lambda: self.pred.load() == 1, timeout))
        if kind == "atomic32":
            return self.atom.wait(0, timeout)
        assert kind == "spin"
        r = self.spin.acquire(timeout=timeout)
        if r:
            self.spin.release()
        return r

    def block_state(self, kind: str) -> None:
        """Make ``kind``'s blocking call block (in another process)."""
        if kind == "mutex":
            assert self.mutex.acquire()
        elif kind == "spin":
            assert self.spin.acquire()

    def unblock(self, kind: str) -> None:
        if kind == "mutex":
            self.mutex.release()
        elif kind == "semaphore":
            self.sem.release()
        elif kind == "event":
            self.event.set()
        elif kind == "condition":
            with self.cond:
                self.pred.store(1)
                self.cond.notify_all()
        elif kind == "atomic32":
            self.atom.store(1)
            self.atom.notify()
        else:
            self.spin.release()

    def waiter_hints(self) -> dict[str, int]:
        return {
            "mutex": u32(self.seg, LOCK + MUTEX_WORD),
            "semaphore": u32(self.seg, AUX + SEM_WAITERS),
            "event": u32(self.seg, AUX + 8 + EVENT_WAITERS),
            "condition": u32(self.seg, AUX2 + 48 + COND_WAITERS),
            "condition lock": u32(self.seg, AUX2 + 24 + MUTEX_WORD),
        }


def _interrupted_child(board: Board, kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if kind == "condition":
        assert board.cond_lock.acquire()
    board.flag.store(1)
    try:
        if kind == "condition":
            board.cond.wait()
        else:
            board.block(kind)
        out["interrupted"] = False
        return out
    except KeyboardInterrupt:
        out["latency_ns"] = time.monotonic_ns() - board.stamp.load()
        out["interrupted"] = True
    if kind == "condition":
        # like threading.Condition: the lock is taken back before the exception
        out["holds_lock"] = board.cond_lock.holder() == (os.getpid(), True)
        board.cond_lock.release()
    board.flag.store(2)
    out["works_after"] = board.block(kind, timeout=10)
    return out


@pytest.mark.timeout(30)
@pytest.mark.parametrize("ctx", ["fork", "spawn"])
@pytest.mark.parametrize("kind", INTERRUPTIBLE)
def test_ctrl_c_interrupts_blocking_call(kind: str, ctx: str, segment: Segment, kids: Kids) -> None:
    board = Board(segment)
    board.block_state(kind)
    kid = kids.start(CONTEXTS[ctx], _interrupted_child, board, kind)
    wait_value(board.flag, 1, what="child about to block")
    time.sleep(0.3)  # let it get deep into the wait
    board.stamp.store(time.monotonic_ns())
    os.kill(kid.pid, signal.SIGINT)
    wait_value(board.flag, 2, timeout=5, what="child interrupted")
    board.unblock(kind)
    out = kid.result()
    assert out["interrupted"], out
    assert ms(out["latency_ns"]) < 100, f"KeyboardInterrupt came {ms(out['latency_ns']):.1f} ms after SIGINT"
    assert out["works_after"] is True, out
    if kind == "condition":
        assert out["holds_lock"], "Condition.wait raised without taking the lock back"
    hints = board.waiter_hints()
    assert all(v == 0 for v in hints.values()), f"waiter counts left behind by the interrupted wait: {hints}"
    assert board.mutex.holder() is None and board.spin.holder() is None and board.cond_lock.holder() is None


# -- CPU while waiting ----------------------------------------------------------------


def _cpu_of_wait(board: Board, kind: str) -> tuple[bool, float, float]:
    board.flag.store(1)
    cpu0, wall0 = time.process_time(), time.monotonic()
    r = board.block(kind, timeout=10)
    return r, time.process_time() - cpu0, time.monotonic() - wall0


@pytest.mark.parametrize("kind", ["mutex", "semaphore", "event", "condition", "atomic32"])
def test_sleeping_waiter_uses_little_cpu(kind: str, segment: Segment, kids: Kids) -> None:
    board = Board(segment)
    board.block_state(kind)
    kid = kids.start(FORK, _cpu_of_wait, board, kind)
    wait_value(board.flag, 1, what="waiter started")
    time.sleep(1.0)
    board.unblock(kind)
    r, cpu, wall = kid.result()
    assert r is True
    assert wall >= 0.8, wall
    assert cpu < 0.05 * wall, f"{kind} waiter used {cpu * 1000:.1f} ms of CPU in {wall:.2f} s"


def test_spinlock_waiter_eventually_acquires(segment: Segment, kids: Kids) -> None:
    board = Board(segment)
    board.block_state("spin")
    kid = kids.start(FORK, _cpu_of_wait, board, "spin")
    wait_value(board.flag, 1, what="waiter started")
    time.sleep(0.3)
    board.unblock("spin")
    r, cpu, wall = kid.result()
    assert r is True and wall >= 0.25
    assert board.spin.holder() is None


# -- closing the segment under a waiter ----------------------------------------------


@pytest.mark.parametrize("kind", INTERRUPTIBLE)
def test_close_segment_while_a_thread_waits(kind: str, new_name: Callable[[], str]) -> None:
    seg = Segment.create(new_name(), 4096)
    try:
        board = Board(seg)
        if kind in ("mutex", "spin"):
            # held by this very process, so the waiter thread blocks: the
            # token is per process, and a holder's own process may wait on it.
            board.block_state(kind)
        result: list[Any] = []
        started = threading.Event()

        def waiter() -> None:
            started.set()
            try:
                result.append(board.block(kind, timeout=20))
            except BaseException as e:  # noqa: BLE001
                result.append(e)

        t = threading.Thread(target=waiter, daemon=True)
        t.start()
        started.wait()
        time.sleep(0.3)
        assert not result, f"the wait returned early: {result}"
        with pytest.raises(shmring.BufferInUseError):
            seg.close()
        assert not seg.closed
        # the waiter is unharmed: wake it, and the primitive still works
        board.unblock(kind)
        t.join(10)
        assert not t.is_alive()
        assert result == [True], result
        seg.close()
        assert seg.closed
    finally:
        seg.close()  # the only user: this removes it
