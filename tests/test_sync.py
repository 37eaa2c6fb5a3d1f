"""Process-shared synchronisation primitives (shmring.sync), with real processes.

Every multi-process test runs its children with multiprocessing "fork" or
"spawn" (primitives pickle: one inside a segment as (segment, offset), a
named one by its name) or as C programs (tests/c/sync_peer.c).  Children
run ``_child_main`` (tests/conftest.py), which sends back what their target
returns (or the traceback of what it raised) over a pipe, so a hung or
crashed child shows up as a failed assertion, never as a hung test; every
child is killed and joined by the ``kids`` fixture's teardown (a ``finally``).

Coordination between the test and its children uses plain polling of
AtomicInt32 loads (``wait_value``), never the blocking calls under test, so
a lost wake-up fails a test with a message instead of hanging it.

Times are taken with time.monotonic_ns(), which is CLOCK_MONOTONIC and so
comparable between processes: a child measures a latency from a timestamp
the parent stored just before it acted.

Layout offsets used for white-box checks (the ``waiters`` hints) come from
include/shmring.h and docs/PROTOCOL.md section 4.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import pickle
import random
import re
import shutil
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import shmring
from shmring import (
    AtomicFlag,
    AtomicInt32,
    AtomicInt64,
    Condition,
    Event,
    LockNotRecoverable,
    Mutex,
    OwnerDied,
    Segment,
    Semaphore,
    SpinLock,
)

from conftest import Kid, Kids

pytestmark = pytest.mark.timeout(60)

FORK = mp.get_context("fork")
SPAWN = mp.get_context("spawn")
CONTEXTS = {"fork": FORK, "spawn": SPAWN}

SHM = Path("/dev/shm")
C_DIR = Path(__file__).resolve().parent / "c"
INCLUDE = shmring.get_include()
CC = shutil.which("gcc")

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
MUTEX_SEQ = 8
MUTEX_WAITERS = 12
MUTEX_STATE = 16
EVENT_WAITERS = 4
COND_SEQ = 0
COND_WAITERS = 4

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
SEM_MAX = 2**31 - 1


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


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


@pytest.fixture
def named(new_name: Callable[[], str]) -> Iterator[Callable[..., Any]]:
    """Factory of named primitives owned by the test (closed at teardown)."""
    made: list[Any] = []

    def make(cls: Any, *args: Any) -> Any:
        prim = cls.create(new_name(), *args)
        made.append(prim)
        return prim

    try:
        yield make
    finally:
        for prim in made:
            prim.close()


def test_layout_offsets_match_header() -> None:
    """The white-box offsets used here, and the Python sizes, are the header's."""
    text = "".join(p.read_text() for p in sorted(Path(INCLUDE).rglob("*.h")))  # shmring.h and shmring/*.h
    sizes = {m.group(1): int(m.group(2)) for m in re.finditer(r"sizeof\(shmring_(\w+)\) == (\d+)", text)}
    assert sizes["sem"] == Semaphore.SIZE
    assert sizes["spinlock"] == SpinLock.SIZE
    assert sizes["mutex"] == Mutex.SIZE
    assert sizes["event"] == Event.SIZE
    assert sizes["cond"] == Condition.SIZE
    offsets = {(m.group(1), m.group(2)): int(m.group(3))
               for m in re.finditer(r"offsetof\(shmring_(\w+),\s*(\w+)\)\s*==\s*(\d+)", text)}
    assert offsets[("sem", "waiters")] == SEM_WAITERS
    assert offsets[("mutex", "seq")] == MUTEX_SEQ
    assert offsets[("mutex", "waiters")] == MUTEX_WAITERS
    assert offsets[("mutex", "state")] == MUTEX_STATE
    for struct_name, fields in (("event", ["flag", "waiters", "gen", "reserved"]),
                                ("cond", ["seq", "waiters", "wakeups", "reserved"])):
        body = re.search(r"typedef struct shmring_%s \{(.*?)\}" % struct_name, text, re.S)
        assert body is not None
        assert re.findall(r"uint32_t (\w+);", body.group(1)) == fields
    assert (EVENT_WAITERS, COND_SEQ, COND_WAITERS) == (4, 0, 4)


# ---------------------------------------------------------------------------
# 1. mutual exclusion
# ---------------------------------------------------------------------------


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
        assert u32(segment, LOCK + MUTEX_WAITERS) == 0
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


# ---------------------------------------------------------------------------
# 2. semaphores conserve permits
# ---------------------------------------------------------------------------


def _sem_worker(sem: Semaphore, holders: AtomicInt32, peak: AtomicInt32, go: AtomicInt32, k: int, rounds: int,
                seed: int) -> tuple[int, int, int]:
    rng = random.Random(seed)
    wait_value(go, 1, what="go")
    taken = misses = violations = 0
    for _ in range(rounds):
        how = rng.randrange(3)
        if how == 0:
            got = sem.acquire()
        elif how == 1:
            got = sem.acquire(timeout=rng.choice((0.0, 0.0005, 0.005, 5.0)))
        else:
            got = sem.acquire(blocking=False)
        if not got:
            misses += 1
            continue
        held = 1
        for _ in range(rng.randrange(3)):  # never wait while holding: no deadlock
            if sem.acquire(blocking=False):
                held += 1
        now = holders.fetch_add(held) + held
        cur = peak.load()
        while now > cur:
            swapped, cur = peak.compare_exchange(cur, now)
            if swapped:
                break
        if now > k:
            violations += 1
        if rng.random() < 0.3:
            os.sched_yield()
        holders.fetch_sub(held)
        taken += held
        if held > 1 and rng.random() < 0.5:
            sem.release(held)
        else:
            for _ in range(held):
                sem.release()
    return taken, misses, violations


@pytest.mark.timeout(40)
@pytest.mark.parametrize(("ctx", "k"), [("fork", 1), ("fork", 3), ("spawn", 2)])
def test_semaphore_conserves_permits(ctx: str, k: int, segment: Segment, kids: Kids) -> None:
    n, rounds = 4, 1500
    sem = Semaphore(segment, LOCK, value=k)
    holders, peak, go = AtomicInt32(segment, FLAG), AtomicInt32(segment, PEAK), AtomicInt32(segment, FLAG2)
    started = [kids.start(CONTEXTS[ctx], _sem_worker, sem, holders, peak, go, k, rounds, seed) for seed in range(n)]
    go.store(1)
    results = [kid.result(30) for kid in started]
    assert sum(r[2] for r in results) == 0, f"more than {k} holders at once: {results}"
    assert peak.load() <= k
    assert holders.load() == 0
    assert sum(r[0] for r in results) > 0
    assert sem.value == k, "permits were lost or created"
    assert u32(segment, LOCK + SEM_WAITERS) == 0
    # exactly k permits: k non-blocking acquires succeed, the next fails
    assert all(sem.acquire(blocking=False) for _ in range(k))
    assert sem.acquire(blocking=False) is False
    sem.release(k)
    assert sem.value == k


def test_semaphore_basics(segment: Segment) -> None:
    sem = Semaphore(segment, 0, value=5)
    assert sem.value == 5
    assert Semaphore(segment, 0).value == 5, "attaching without a value must not reset it"
    assert pickle.loads(pickle.dumps(sem)).value == 5
    assert sem.acquire() and sem.acquire(blocking=False) and sem.acquire(timeout=1)
    assert sem.value == 2
    sem.release(3)
    assert sem.value == 5
    zero = Semaphore(segment, 8, value=0)
    assert zero.acquire(blocking=False) is False
    assert zero.acquire(timeout=0) is False
    zero.release(SEM_MAX)
    assert zero.value == SEM_MAX
    assert Semaphore(segment, 16).value == 0, "a zero-filled segment holds a semaphore of value 0"


def _sem_take(sem: Semaphore, n: int) -> list[bool]:
    return [sem.acquire(timeout=10) for _ in range(n)]


def test_semaphore_release_n_wakes_n_sleepers(segment: Segment, kids: Kids) -> None:
    sem = Semaphore(segment, LOCK, value=0)
    sleepers = [kids.start(FORK, _sem_take, sem, 1) for _ in range(3)]
    wait_until(lambda: u32(segment, LOCK + SEM_WAITERS) == 3, what="3 announced sleepers")
    sem.release(3)
    assert [k.result(5) for k in sleepers] == [[True]] * 3
    assert sem.value == 0


# ---------------------------------------------------------------------------
# 3. timeouts
# ---------------------------------------------------------------------------


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.monotonic()
    r = fn()
    return r, time.monotonic() - t0


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


# ---------------------------------------------------------------------------
# 4. Ctrl-C
# ---------------------------------------------------------------------------

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
            "mutex": u32(self.seg, LOCK + MUTEX_WAITERS),
            "semaphore": u32(self.seg, AUX + SEM_WAITERS),
            "event": u32(self.seg, AUX + 8 + EVENT_WAITERS),
            "condition": u32(self.seg, AUX2 + 48 + COND_WAITERS),
            "condition lock": u32(self.seg, AUX + 16 + MUTEX_WAITERS),
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


# ---------------------------------------------------------------------------
# 5. holder killed while holding
# ---------------------------------------------------------------------------


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
        wait_until(lambda: u32(segment, LOCK + MUTEX_WAITERS) == 1, what="waiter asleep")
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
    wait_until(lambda: u32(segment, LOCK + MUTEX_WAITERS) == 3, what="3 announced sleepers")
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


# ---------------------------------------------------------------------------
# 5b. `with lock:` after an owner died: on_owner_died, recovering()
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# 6. misuse
# ---------------------------------------------------------------------------


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


ALL_TYPES = [AtomicInt64, AtomicInt32, AtomicFlag, Semaphore, SpinLock, Mutex, Event]


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.__name__)
def test_bad_offsets_and_segments(cls: Any, segment: Segment) -> None:
    size, align = cls.SIZE, cls.ALIGN
    cls(segment, 0)
    cls(segment, segment.size - size)
    for off in (-1, -align, -8):
        with pytest.raises(ValueError):
            cls(segment, off)
    for off in (segment.size - size + align, segment.size, segment.size + 8, 2**40):
        with pytest.raises(ValueError):
            cls(segment, off)
    for off in {1, 2, 3, align // 2 or 1, align + 1, 4 if align == 8 else 2}:
        with pytest.raises(ValueError):
            cls(segment, off)
    for bad_off in (1.0, "8", None, True):
        with pytest.raises(TypeError):
            cls(segment, bad_off)
    for bad_seg in (None, bytearray(4096), memoryview(bytearray(4096)), "name", segment._mapping):
        with pytest.raises(TypeError):
            cls(bad_seg, 0)


def test_misc_argument_errors(segment: Segment, new_name: Callable[[], str]) -> None:
    mutex = Mutex(segment, 0)
    with pytest.raises(TypeError):
        Condition(segment, 32)  # no lock
    with pytest.raises(ValueError):
        Condition(segment, 36, lock=mutex)
    with pytest.raises(TypeError):
        Condition.create(new_name())
    with pytest.raises(TypeError):
        Condition.open(new_name())
    cond = Condition(segment, 32, lock=mutex)
    with pytest.raises(RuntimeError):
        cond.wait(0.01)  # lock not held
    a = AtomicInt64(segment, 64)
    for bad in (0, -1):
        with pytest.raises(ValueError):
            a.notify(bad)
    for bad_order in ("consume", "SEQ_CST", None, 4, ""):
        with pytest.raises(ValueError):
            a.load(bad_order)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            a.fetch_add(1, bad_order)  # type: ignore[arg-type]
    for bad_value in (1.5, "1", None, b"\x01"):
        with pytest.raises(TypeError):
            a.store(bad_value)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            a.fetch_add(bad_value)  # type: ignore[arg-type]


def test_semaphore_value_limits(segment: Segment, new_name: Callable[[], str]) -> None:
    for bad in (-1, -(2**40), SEM_MAX + 1, 2**32, 2**40):
        with pytest.raises(ValueError):
            Semaphore(segment, 0, value=bad)
        with pytest.raises(ValueError):
            Semaphore.create(new_name(), bad)
    for bad_type in (1.0, "1"):
        with pytest.raises((TypeError, ValueError)):
            Semaphore(segment, 0, value=bad_type)  # type: ignore[arg-type]
    sem = Semaphore(segment, 0, value=SEM_MAX)
    for n in (1, SEM_MAX, SEM_MAX + 1):
        with pytest.raises(ValueError):
            sem.release(n)
    assert sem.value == SEM_MAX, "a refused release must not change the count"
    for n in (0, -1):
        with pytest.raises(ValueError):
            sem.release(n)
    sem2 = Semaphore(segment, 8, value=SEM_MAX - 5)
    sem2.release(5)
    assert sem2.value == SEM_MAX
    sem3 = Semaphore(segment, 16, value=0)
    with pytest.raises(ValueError):
        sem3.release(SEM_MAX + 1)
    assert sem3.value == 0


def test_semaphore_huge_initial_value_rejected(segment: Segment) -> None:
    with pytest.raises(ValueError):
        Semaphore(segment, 0, value=2**64 + 3)


def test_semaphore_huge_release_is_value_error(segment: Segment) -> None:
    sem = Semaphore(segment, 0, value=0)
    with pytest.raises(ValueError):
        sem.release(2**63)


def test_primitive_on_readonly_segment(segment: Segment) -> None:
    ro = Segment.open(segment.name, readonly=True)
    try:
        for cls in ALL_TYPES:
            with pytest.raises(ValueError):
                cls(ro, 0)
    finally:
        ro.close()


@pytest.mark.parametrize("cls", ALL_TYPES + [Condition], ids=lambda c: c.__name__)
def test_use_after_segment_closed(cls: Any, new_name: Callable[[], str]) -> None:
    seg = Segment.create(new_name(), 256)
    try:
        prim = cls(seg, 64, lock=Mutex(seg, 0)) if cls is Condition else cls(seg, 64)
        seg.close()
        calls: list[Callable[[], Any]] = {
            AtomicInt64: [lambda: prim.load(), lambda: prim.store(1), lambda: prim.fetch_add(1),
                          lambda: prim.compare_exchange(0, 1), lambda: prim.wait(0, 0.01), lambda: prim.notify()],
            AtomicInt32: [lambda: prim.load(), lambda: prim.exchange(1), lambda: prim.wait(0)],
            AtomicFlag: [lambda: prim.set(), lambda: prim.is_set(), lambda: prim.wait_set(0.01), lambda: prim.clear()],
            Semaphore: [lambda: prim.acquire(), lambda: prim.acquire(blocking=False), lambda: prim.release(),
                        lambda: prim.value],
            SpinLock: [lambda: prim.acquire(), lambda: prim.release(), lambda: prim.holder(), lambda: prim.locked()],
            Mutex: [lambda: prim.acquire(timeout=1), lambda: prim.release(), lambda: prim.mark_consistent(),
                    lambda: prim.holder()],
            Event: [lambda: prim.set(), lambda: prim.clear(), lambda: prim.is_set(), lambda: prim.wait()],
            Condition: [lambda: prim.wait(0.01), lambda: prim.notify(), lambda: prim.notify_all(),
                        lambda: prim.__enter__()],
        }[cls]
        for call in calls:
            with pytest.raises(ValueError):
                call()
        with pytest.raises(ValueError):
            cls(seg, 0) if cls is not Condition else cls(seg, 64, lock=prim._lock)
        with pytest.raises(ValueError):
            pickle.dumps(prim)
    finally:
        seg.close()  # the only user: this removes it


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


def test_condition_wait_without_lock_leaves_no_waiter(segment: Segment) -> None:
    mutex = Mutex(segment, 0)
    cond = Condition(segment, 32, lock=mutex)
    with pytest.raises(RuntimeError):
        cond.wait(0.01)
    assert u32(segment, 32 + COND_WAITERS) == 0


@pytest.mark.parametrize("ctx", ["fork", "spawn"])
def test_pickle_inside_segment(ctx: str, segment: Segment, kids: Kids) -> None:
    prims = [AtomicInt64(segment, 0), AtomicInt32(segment, 12), AtomicFlag(segment, 8), Semaphore(segment, 16, value=4),
             SpinLock(segment, 32), Mutex(segment, 48), Event(segment, 72)]
    prims.append(Condition(segment, 88, lock=prims[5]))  # type: ignore[arg-type]
    for prim in prims:
        cls, args = prim.__reduce__()[:2]
        assert cls is type(prim)
        assert args[:2] == (segment, prim.offset)
    prims[0].store(-5)
    prims[6].set()  # type: ignore[attr-defined]
    seen = kids.start(CONTEXTS[ctx], _describe, prims).result()
    assert seen == [("AtomicInt64", segment.name, 0, -5), ("AtomicInt32", segment.name, 12, 0),
                    ("AtomicFlag", segment.name, 8, 0), ("Semaphore", segment.name, 16, 4),
                    ("SpinLock", segment.name, 32, None), ("Mutex", segment.name, 48, None),
                    ("Event", segment.name, 72, True), ("Condition", segment.name, 88, 48)]


def _describe(prims: list[Any]) -> list[tuple[str, str, int, Any]]:
    out = []
    for p in prims:
        state = {"AtomicInt64": lambda: p.load(), "AtomicInt32": lambda: p.load(), "AtomicFlag": lambda: p.load(),
                 "Semaphore": lambda: p.value, "SpinLock": lambda: p.holder(), "Mutex": lambda: p.holder(),
                 "Event": lambda: p.is_set(), "Condition": lambda: p._lock.offset}[type(p).__name__]()
        out.append((type(p).__name__, p.segment.name, p.offset, state))
    return out


# ---------------------------------------------------------------------------
# 7. atomics
# ---------------------------------------------------------------------------


def _wrap(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


@pytest.mark.parametrize(("cls", "bits"), [(AtomicInt64, 64), (AtomicInt32, 32)], ids=["int64", "int32"])
def test_atomic_ops_against_model(cls: Any, bits: int, segment: Segment) -> None:
    a = cls(segment, 8)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    interesting = [0, 1, -1, lo, hi, lo + 1, hi - 1, 2 ** (bits // 2), 0x5555_5555 & hi, -0x1234]
    rng = random.Random(bits)
    model = 0
    assert a.load() == 0
    for _ in range(5000):
        op = rng.choice(["store", "exchange", "cas_hit", "cas_miss", "add", "sub", "and", "or", "xor", "load"])
        x = rng.choice(interesting) if rng.random() < 0.5 else rng.randint(lo, hi)
        if op == "store":
            a.store(x)
            model = x
        elif op == "exchange":
            assert a.exchange(x) == model
            model = x
        elif op == "cas_hit":
            assert a.compare_exchange(model, x) == (True, model)
            model = x
        elif op == "cas_miss":
            wrong = _wrap(model + 1 + rng.randrange(100), bits)
            assert a.compare_exchange(wrong, x) == (False, model)
        elif op == "load":
            assert a.load() == model
        else:
            fn = {"add": a.fetch_add, "sub": a.fetch_sub, "and": a.fetch_and, "or": a.fetch_or, "xor": a.fetch_xor}[op]
            assert fn(x) == model, op
            model = _wrap({"add": model + x, "sub": model - x, "and": model & x, "or": model | x,
                           "xor": model ^ x}[op], bits)
        assert a.load() == model
    # little-endian two's complement in the segment, as C sees it
    raw = int.from_bytes(segment.buf[8 : 8 + bits // 8], "little", signed=True)
    assert raw == model


def test_atomic_wraparound_and_overflow(segment: Segment) -> None:
    a64, a32 = AtomicInt64(segment, 0), AtomicInt32(segment, 8)
    a64.store(INT64_MAX)
    assert a64.fetch_add(1) == INT64_MAX
    assert a64.load() == INT64_MIN
    assert a64.fetch_sub(1) == INT64_MIN
    assert a64.load() == INT64_MAX
    a64.store(-1)
    assert a64.fetch_add(INT64_MIN) == -1 and a64.load() == INT64_MAX
    a32.store(INT32_MAX)
    assert a32.fetch_add(1) == INT32_MAX
    assert a32.load() == INT32_MIN
    assert a32.fetch_sub(2) == INT32_MIN
    assert a32.load() == INT32_MAX - 1
    assert a32.exchange(-1) == INT32_MAX - 1
    assert a32.fetch_and(0x0F0F) == -1 and a32.load() == 0x0F0F
    assert a32.fetch_xor(-1) == 0x0F0F and a32.load() == ~0x0F0F
    assert a32.fetch_or(INT32_MIN) == ~0x0F0F and a32.load() == ~0x0F0F
    # the 32-bit atomic does not touch its neighbours
    assert a64.load() == INT64_MAX
    assert AtomicInt32(segment, 12).load() == 0
    before = (a64.load(), a32.load())
    for bad in (INT64_MAX + 1, INT64_MIN - 1, 2**100):
        for call in (a64.store, a64.exchange, a64.fetch_add, a64.fetch_sub, a64.fetch_and, a64.fetch_or,
                     a64.fetch_xor, lambda v: a64.compare_exchange(v, 0), lambda v: a64.compare_exchange(0, v),
                     lambda v: a64.wait(v, 0)):
            with pytest.raises(OverflowError):
                call(bad)
    for bad in (INT32_MAX + 1, INT32_MIN - 1, 2**40):
        for call in (a32.store, a32.exchange, a32.fetch_add, a32.fetch_sub, a32.fetch_and, a32.fetch_or,
                     a32.fetch_xor, lambda v: a32.compare_exchange(v, 0), lambda v: a32.compare_exchange(0, v),
                     lambda v: a32.wait(v, 0)):
            with pytest.raises(OverflowError):
                call(bad)
    assert (a64.load(), a32.load()) == before, "a refused operation changed the value"


ORDERS = ["relaxed", "acquire", "release", "acq_rel", "seq_cst"]


@pytest.mark.parametrize("cls", [AtomicInt64, AtomicInt32, AtomicFlag], ids=lambda c: c.__name__)
def test_memory_orders(cls: Any, segment: Segment) -> None:
    a = cls(segment, 0)
    for order in ORDERS:
        if order in ("release", "acq_rel"):
            with pytest.raises(ValueError):
                a.load(order)
        else:
            assert a.load(order) == a.load()
        if order in ("acquire", "acq_rel"):
            with pytest.raises(ValueError):
                a.store(1, order)
            assert a.load() == 0, "a refused store must not write"
            a.store(1)
        else:
            a.store(1, order)
        assert a.load() == 1
        assert a.exchange(0, order) == 1
        assert a.compare_exchange(0, 1, order) == (True, 0)
        assert a.compare_exchange(0, 1, order) == (False, 1)
        assert a.fetch_add(1, order) == 1
        assert a.fetch_sub(1, order) == 2
        assert a.fetch_and(3, order) == 1
        assert a.fetch_or(2, order) == 1
        assert a.fetch_xor(3, order) == 3
        assert a.load() == 0
    assert shmring.fence() is None


def _fetch_add_worker(a64: AtomicInt64, a32: AtomicInt32, bits: AtomicInt64, cas: AtomicInt64, go: AtomicInt32,
                      index: int, n: int) -> int:
    wait_value(go, 1, what="go")
    for i in range(n):
        a64.fetch_add(1)
        a32.fetch_add(7)
        if i % 2:
            a64.fetch_sub(1)
            a64.fetch_add(1)
        cur = cas.load("relaxed")
        while True:
            swapped, cur = cas.compare_exchange(cur, cur + 3)
            if swapped:
                break
    bits.fetch_or(1 << index)
    bits.fetch_xor(1 << (index + 32))
    return n


@pytest.mark.timeout(40)
@pytest.mark.parametrize("ctx", ["fork", "spawn"])
def test_concurrent_atomics_total_exactly(ctx: str, segment: Segment, kids: Kids) -> None:
    n_procs, n = 4, 10000
    a64, a32, bits, cas = (AtomicInt64(segment, 0), AtomicInt32(segment, 8), AtomicInt64(segment, 16),
                           AtomicInt64(segment, 24))
    go = AtomicInt32(segment, FLAG)
    a32.store(INT32_MAX - 1000)  # the 32-bit sum wraps around
    started = [kids.start(CONTEXTS[ctx], _fetch_add_worker, a64, a32, bits, cas, go, i, n) for i in range(n_procs)]
    go.store(1)
    assert [k.result(30) for k in started] == [n] * n_procs
    assert a64.load() == n_procs * n
    assert a32.load() == _wrap(INT32_MAX - 1000 + 7 * n_procs * n, 32)
    assert cas.load() == 3 * n_procs * n
    assert bits.load() == sum((1 << i) | (1 << (i + 32)) for i in range(n_procs))


def _atomic_waiter(a: Any, expected: int, ready: AtomicInt32, stamp: AtomicInt64) -> tuple[bool, int, int]:
    ready.fetch_add(1)
    r = a.wait(expected, 10)
    return r, time.monotonic_ns() - stamp.load(), a.load()


@pytest.mark.parametrize(("cls", "new_value"), [(AtomicInt64, 1), (AtomicInt64, 2**32), (AtomicInt64, -(2**40)),
                                                (AtomicInt32, 1), (AtomicInt32, -1)],
                         ids=["i64", "i64-high-half-only", "i64-negative", "i32", "i32-negative"])
@pytest.mark.parametrize("ctx", ["fork", "spawn"])
def test_atomic_wait_notify_across_processes(cls: Any, new_value: int, ctx: str, segment: Segment,
                                             kids: Kids) -> None:
    a = cls(segment, 0)
    ready, stamp = AtomicInt32(segment, READY), AtomicInt64(segment, STAMP)
    waiters = [kids.start(CONTEXTS[ctx], _atomic_waiter, a, 0, ready, stamp) for _ in range(2)]
    wait_value(ready, 2, what="waiters ready")
    time.sleep(0.3)
    stamp.store(time.monotonic_ns())
    a.store(new_value)
    woken = a.notify()
    assert 0 <= woken <= 2
    for w in waiters:
        r, latency, seen = w.result()
        assert r is True
        assert seen == new_value
        assert ms(latency) < 100, f"woke {ms(latency):.1f} ms after notify()"
    assert a.notify() == 0
    assert a.notify(1) == 0


def _atomic_wait_one(a: Any, ready: AtomicInt32, done: AtomicInt32) -> bool:
    ready.fetch_add(1)
    r: bool = a.wait(0, 10)
    done.fetch_add(1)
    return r


def test_atomic_notify_n_wakes_n(segment: Segment, kids: Kids) -> None:
    """notify(n) wakes n sleepers; the others sleep on while the value still
    matches (they re-check it at their next slice and go back to sleep)."""
    a = AtomicInt32(segment, 0)
    ready, done = AtomicInt32(segment, READY), AtomicInt32(segment, DONE)
    waiters = [kids.start(FORK, _atomic_wait_one, a, ready, done) for _ in range(3)]
    wait_value(ready, 3, what="waiters ready")
    time.sleep(0.3)
    assert a.notify(1) in (0, 1)  # value unchanged: a woken waiter sleeps again
    time.sleep(0.3)
    assert done.load() == 0
    a.store(5)
    a.notify()
    assert [w.result() for w in waiters] == [True] * 3


def _flag_pingpong(ping: AtomicFlag, pong: AtomicFlag, seg: Segment, rounds: int) -> int:
    for r in range(rounds):
        assert ping.wait_set(10), f"round {r}: no ping"
        ping.clear()
        data = bytes(seg.buf[PAYLOAD : PAYLOAD + 1024])
        expected = random.Random(r).randbytes(1024)
        if data != expected:
            raise AssertionError(f"round {r}: payload written before set() is not visible after wait_set()")
        seg.buf[PAYLOAD : PAYLOAD + 1024] = bytes(reversed(data))
        pong.set()
    return rounds


@pytest.mark.timeout(40)
@pytest.mark.parametrize("ctx", ["fork", "spawn"])
def test_atomic_flag_publishes_data(ctx: str, segment: Segment, kids: Kids) -> None:
    ping, pong = AtomicFlag(segment, FLAG), AtomicFlag(segment, FLAG2)
    assert not ping.is_set()
    rounds = 300
    kid = kids.start(CONTEXTS[ctx], _flag_pingpong, ping, pong, segment, rounds)
    for r in range(rounds):
        payload = random.Random(r).randbytes(1024)
        segment.buf[PAYLOAD : PAYLOAD + 1024] = payload
        ping.set()
        assert pong.wait_set(10), f"round {r}: no pong"
        pong.clear()
        assert bytes(segment.buf[PAYLOAD : PAYLOAD + 1024]) == payload[::-1], f"round {r}"
    assert kid.result() == rounds


def test_atomic_flag_local(segment: Segment) -> None:
    f = AtomicFlag(segment, 4)
    assert not f.is_set()
    assert f.wait_set(0) is False
    f.set()
    assert f.is_set() and f.load() == 1
    assert f.wait_set() is True and f.wait_set(0) is True
    f.set()
    assert f.load() == 1
    f.clear()
    assert not f.is_set() and f.load() == 0


# ---------------------------------------------------------------------------
# 8. Event and Condition
# ---------------------------------------------------------------------------


def _event_waiter(event: Event, ready: AtomicInt32, stamp: AtomicInt64, timeout: float) -> tuple[bool, int]:
    ready.fetch_add(1)
    r = event.wait(timeout)
    return r, time.monotonic_ns() - stamp.load()


@pytest.mark.parametrize("ctx", ["fork", "spawn"])
def test_event_set_wakes_all_waiters(ctx: str, segment: Segment, kids: Kids) -> None:
    event = Event(segment, 0)
    ready, stamp = AtomicInt32(segment, READY), AtomicInt64(segment, STAMP)
    n = 4
    waiters = [kids.start(CONTEXTS[ctx], _event_waiter, event, ready, stamp, 10) for _ in range(n)]
    wait_value(ready, n, what="waiters ready")
    wait_until(lambda: u32(segment, EVENT_WAITERS) == n, what=f"{n} announced waiters")
    time.sleep(0.2)
    stamp.store(time.monotonic_ns())
    event.set()
    for w in waiters:
        r, latency = w.result()
        assert r is True
        assert ms(latency) < 200, f"woke {ms(latency):.1f} ms after set()"
    assert event.is_set()
    assert event.wait(0) is True
    # clear: new waiters wait again
    event.clear()
    assert not event.is_set()
    ready.store(0)
    stamp.store(time.monotonic_ns())
    late = [kids.start(FORK, _event_waiter, event, ready, stamp, 0.2) for _ in range(2)]
    for w in late:
        r, latency = w.result()
        assert r is False and ms(latency) >= 190
    assert u32(segment, EVENT_WAITERS) == 0


def _event_pulse_waiter(event: Event, ready: AtomicInt32, rounds: int, go: AtomicInt32) -> list[bool]:
    out = []
    for r in range(rounds):
        wait_value(go, r + 1, what="round")
        ready.fetch_add(1)
        out.append(event.wait(1))
    return out


def test_event_set_then_clear_wakes_current_waiters(segment: Segment, kids: Kids) -> None:
    event = Event(segment, 0)
    ready, go = AtomicInt32(segment, READY), AtomicInt32(segment, FLAG)
    rounds = 3
    kid = kids.start(FORK, _event_pulse_waiter, event, ready, rounds, go)
    for r in range(rounds):
        go.store(r + 1)
        wait_value(ready, r + 1, what="waiter ready")
        wait_until(lambda: u32(segment, EVENT_WAITERS) == 1, what="waiter asleep")
        time.sleep(0.1)
        event.set()
        event.clear()
        wait_until(lambda: u32(segment, EVENT_WAITERS) == 0, timeout=5, what="waiter gone")
    assert kid.result() == [True] * rounds


def _consumer(cond: Condition, seg: Segment, total: int) -> int:
    """Take items from the shared count (plain bytes guarded by the lock)
    until ``total`` have been taken by everyone."""
    mine = 0
    while True:
        with cond:
            ok = cond.wait_for(lambda: read_counter(seg) > 0 or read_counter(seg, COUNTER + 8) >= total, 10)
            assert ok, "consumer starved: a notify was lost"
            if read_counter(seg, COUNTER + 8) >= total:
                return mine
            write_counter(seg, read_counter(seg) - 1)
            write_counter(seg, read_counter(seg, COUNTER + 8) + 1, COUNTER + 8)
            mine += 1
            if read_counter(seg, COUNTER + 8) >= total:
                cond.notify_all()
                return mine


def _producer(cond: Condition, seg: Segment, total: int, burst: int) -> int:
    made = 0
    rng = random.Random(total)
    while made < total:
        k = min(rng.randint(1, burst), total - made)
        with cond:
            write_counter(seg, read_counter(seg) + k)
            made += k
            cond.notify(k) if rng.random() < 0.7 else cond.notify_all()
        if rng.random() < 0.2:
            time.sleep(0.0005)
    return made


@pytest.mark.timeout(40)
@pytest.mark.parametrize("ctx", ["fork", "spawn"])
def test_condition_producer_consumer(ctx: str, segment: Segment, kids: Kids) -> None:
    mutex = Mutex(segment, LOCK)
    cond = Condition(segment, AUX, lock=mutex)
    total = 2000
    consumers = [kids.start(CONTEXTS[ctx], _consumer, cond, segment, total) for _ in range(3)]
    producer = kids.start(CONTEXTS[ctx], _producer, cond, segment, total, 5)
    assert producer.result(30) == total
    taken = [c.result(30) for c in consumers]
    assert sum(taken) == total, taken
    assert read_counter(segment) == 0
    assert read_counter(segment, COUNTER + 8) == total
    assert mutex.holder() is None
    assert u32(segment, AUX + COND_WAITERS) == 0


def _cond_waiter_once(cond: Condition, ready: AtomicInt32, woken: AtomicInt32, stamp: AtomicInt64,
                      timeout: float) -> tuple[bool, int]:
    with cond:
        ready.fetch_add(1)
        r = cond.wait(timeout)
        woken.fetch_add(1)
        return r, time.monotonic_ns() - stamp.load()


def _start_cond_waiters(kids: Kids, segment: Segment, n: int, timeout: float) -> tuple[Condition, list[Kid]]:
    mutex = Mutex(segment, LOCK)
    cond = Condition(segment, AUX, lock=mutex)
    ready, woken, stamp = AtomicInt32(segment, READY), AtomicInt32(segment, DONE), AtomicInt64(segment, STAMP)
    waiters = [kids.start(FORK, _cond_waiter_once, cond, ready, woken, stamp, timeout) for _ in range(n)]
    wait_value(ready, n, what="waiters registered")
    # Each waiter registered under the lock; taking the lock now means the
    # last one has released it inside wait(): all n are waiting.
    with cond:
        assert u32(segment, AUX + COND_WAITERS) == n
    time.sleep(0.2)
    return cond, waiters


def test_condition_notify_all_wakes_all(segment: Segment, kids: Kids) -> None:
    cond, waiters = _start_cond_waiters(kids, segment, 4, 10)
    stamp = AtomicInt64(segment, STAMP)
    with cond:
        stamp.store(time.monotonic_ns())
        cond.notify_all()
    for w in waiters:
        r, latency = w.result()
        assert r is True
        assert ms(latency) < 500
    assert u32(segment, AUX + COND_WAITERS) == 0


def test_condition_notify_one_wakes_at_least_one(segment: Segment, kids: Kids) -> None:
    cond, waiters = _start_cond_waiters(kids, segment, 3, 10)
    woken = AtomicInt32(segment, DONE)
    with cond:
        cond.notify(1)
    wait_until(lambda: woken.load() >= 1, timeout=2, what="a waiter woken by notify(1)")
    with cond:
        cond.notify_all()
    assert all(w.result()[0] is True for w in waiters)


def test_condition_notify_one_wakes_only_one(segment: Segment, kids: Kids) -> None:
    cond, waiters = _start_cond_waiters(kids, segment, 3, 10)
    woken = AtomicInt32(segment, DONE)
    try:
        with cond:
            cond.notify(1)
        wait_until(lambda: woken.load() >= 1, timeout=2, what="a waiter woken by notify(1)")
        time.sleep(0.5)
        assert woken.load() == 1, f"notify(1) woke {woken.load()} waiters"
        with cond:
            cond.notify(1)
        time.sleep(0.5)
        assert woken.load() == 2
    finally:
        with cond:
            cond.notify_all()
        for w in waiters:
            w.result()


def test_condition_wait_for_local(segment: Segment) -> None:
    mutex = Mutex(segment, 0)
    cond = Condition(segment, 24, lock=mutex)
    with cond:
        assert cond.wait_for(lambda: 42) == 42
        r, t = _timed(lambda: cond.wait_for(lambda: 0, 0.1))
        assert r == 0 and 0.09 <= t < 1.0
        assert mutex.holder() == (os.getpid(), True)
        cond.notify()  # nobody waits: harmless
        cond.notify_all()
    assert mutex.holder() is None
    clone = pickle.loads(pickle.dumps(cond))
    with clone:
        assert mutex.holder() == (os.getpid(), True)
    for bad in (0, -1):
        with pytest.raises(ValueError):
            cond.notify(bad)


# ---------------------------------------------------------------------------
# 9. named primitives
# ---------------------------------------------------------------------------


def _named_sem_user(name: str) -> tuple[int, int]:
    sem = Semaphore.open(name)
    try:
        before = sem.value
        assert sem.acquire(timeout=5) and sem.acquire(timeout=5)
        return before, sem.value
    finally:
        sem.close()


def _pickled_named_user(sem: Semaphore, mutex: Mutex, a: AtomicInt64) -> tuple[str, str, int, Any]:
    sem.release()
    assert mutex.acquire(timeout=5)
    holder = mutex.holder()
    mutex.release()
    a.fetch_add(10)
    names = (sem.segment.name, mutex.segment.name)
    sem.close()
    mutex.close()
    a.close()
    return names[0], names[1], os.getpid(), holder


@pytest.mark.parametrize("ctx", ["fork", "spawn"])
def test_named_semaphore_across_processes(ctx: str, new_name: Callable[[], str], kids: Kids) -> None:
    name = new_name()
    sem = Semaphore.create(name, 3)
    try:
        assert sem.value == 3
        assert sem.segment.info().kind == "sync"
        assert kids.start(CONTEXTS[ctx], _named_sem_user, name).result() == (3, 1)
        assert sem.value == 1
        assert (SHM / name).exists(), "an opener's close must not unlink"
        with pytest.raises(FileExistsError):
            Semaphore.create(name, 1)
    finally:
        sem.close()
    assert not (SHM / name).exists(), "the creator's close unlinks"
    with pytest.raises(FileNotFoundError):
        Semaphore.open(name)
    sem.close()  # twice: harmless


def test_named_primitives_pickle_by_name(new_name: Callable[[], str], kids: Kids, named: Any) -> None:
    sem = named(Semaphore, 0)
    mutex = named(Mutex)
    a = named(AtomicInt64, 5)
    assert a.load() == 5
    assert pickle.loads(pickle.dumps(sem)).value == 0, "unpickling must not re-initialise"
    s_name, m_name, pid, holder = kids.start(SPAWN, _pickled_named_user, sem, mutex, a).result()
    assert (s_name, m_name) == (sem.segment.name, mutex.segment.name)
    assert holder == (pid, True)
    assert sem.value == 1
    assert a.load() == 15
    assert (SHM / sem.segment.name).exists() and (SHM / mutex.segment.name).exists()


def test_named_primitive_creation_and_open_errors(new_name: Callable[[], str], named: Any) -> None:
    raw_name = new_name()
    with Segment.create(raw_name, 64):
        for cls in (Semaphore, Mutex, AtomicInt64):
            with pytest.raises(ValueError):
                cls.open(raw_name)
    ev = named(Event)
    assert not ev.is_set()
    ev.set()
    ev2 = Event.open(ev.segment.name)
    try:
        assert ev2.is_set()
        with pytest.raises(ValueError):
            Mutex.open(ev.segment.name)  # 8 bytes cannot hold a 24-byte mutex
    finally:
        ev2.close()
    assert (SHM / ev.segment.name).exists()
    for cls, args in [(AtomicInt64, (2**63,)), (AtomicInt32, (2**31,)), (Semaphore, (-1,)), (Semaphore, (1, 2)),
                      (Mutex, (1,)), (Event, (True,))]:
        name = new_name()
        with pytest.raises((ValueError, OverflowError, TypeError)):
            cls.create(name, *args)
        assert not (SHM / name).exists(), f"{cls.__name__}.create{args} left its segment behind"
    for cls, init, expected in [(AtomicInt32, (-7,), -7), (AtomicFlag, (), 0), (AtomicInt64, (), 0)]:
        prim = named(cls, *init)
        assert prim.load() == expected
    assert named(Semaphore).value == 1, "a named semaphore starts at 1 by default"
    assert named(SpinLock).holder() is None
    unnamed = Semaphore.create(None, 2)
    try:
        assert unnamed.value == 2 and (SHM / unnamed.segment.name).exists()
    finally:
        unnamed.close()
    assert not (SHM / unnamed.segment.name).exists()


def test_pickling_closed_named_primitive_raises(new_name: Callable[[], str]) -> None:
    sem = Semaphore.create(new_name(), 1)
    sem.close()
    with pytest.raises(ValueError):
        pickle.dumps(sem)


def _close_inherited(sem: Semaphore) -> bool:
    sem.close()
    return sem.segment.closed


def test_forked_child_closing_named_primitive_does_not_unlink(named: Any, kids: Kids) -> None:
    sem = named(Semaphore, 2)
    assert kids.start(FORK, _close_inherited, sem).result() is True
    assert (SHM / sem.segment.name).exists()
    assert sem.acquire(blocking=False)


# ---------------------------------------------------------------------------
# 10. CPU while waiting
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# 11. C interop: include/shmring.h and Python on the same lock
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sync_peer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if CC is None:  # pragma: no cover
        pytest.skip("gcc is not installed")
    exe = tmp_path_factory.mktemp("sync-peer") / "sync_peer"
    result = subprocess.run([CC, "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-I", INCLUDE,
                             str(C_DIR / "sync_peer.c"), "-o", str(exe), "-lrt"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"sync_peer.c does not compile:\n{result.stderr}"
    assert result.stderr == "", f"sync_peer.c compiles with diagnostics:\n{result.stderr}"
    return exe


@pytest.mark.timeout(40)
@pytest.mark.parametrize("kind", ["mutex", "spin", "semaphore"])
def test_c_and_python_share_a_lock(kind: str, segment: Segment, kids: Kids, sync_peer: Path) -> None:
    m, m_c = 20000, 1000000  # C runs its loop much faster: give it more, so that the loops overlap
    lock = make_lock(kind, segment)
    go = AtomicInt32(segment, FLAG)
    mode = {"mutex": "mutex", "spin": "spin", "semaphore": "sem"}[kind]
    py = [kids.start(FORK, _increment_under, lock, segment, go, m) for _ in range(2)]
    c = [kids.popen([str(sync_peer), "/" + segment.name, mode, str(LOCK), str(COUNTER), str(m_c), str(FLAG)])
         for _ in range(2)]
    go.store(1)
    for p in c:
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, f"sync_peer exited {p.returncode}: {err}"
        assert out.strip() == f"done {m_c}"
    assert [k.result(30) for k in py] == [m, m]
    assert read_counter(segment) == 2 * m + 2 * m_c
    if isinstance(lock, Semaphore):
        assert lock.value == 1
    else:
        assert lock.holder() is None


@pytest.mark.parametrize("kind", ["mutex", "spin"])
def test_c_holder_killed_gives_owner_died_in_python(kind: str, segment: Segment, kids: Kids,
                                                    sync_peer: Path) -> None:
    lock = make_lock(kind, segment)
    p = kids.popen([str(sync_peer), "/" + segment.name, f"hold-{kind}", str(LOCK), str(COUNTER), "0"])
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "held"
    assert lock.holder() == (p.pid, True), "the C process's token must name its pid"
    assert lock.acquire(timeout=0.1) is False
    p.kill()
    p.wait(10)
    with pytest.raises(OwnerDied):
        lock.acquire(timeout=5)
    assert read_counter(segment) == 0xDEADBEEF
    write_counter(segment, 0)
    if kind == "mutex":
        lock.mark_consistent()  # type: ignore[union-attr]
    lock.release()
    assert lock.acquire(blocking=False) is True
    lock.release()
