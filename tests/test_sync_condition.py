"""Condition (over a Mutex): producers and consumers across processes with no
lost notify, notify_all() waking all, notify(1) at least and only one,
wait_for(), and a notifier that waits next not stealing its own
notification.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import random
import time

import pytest

import shmring
from shmring import AtomicInt32, AtomicInt64, Condition, Mutex, Segment

from _sync_helpers import (
    AUX, COND_WAITERS, COUNTER, DONE, LOCK, READY, STAMP, _timed, ms, read_counter, u32, wait_until, wait_value,
    write_counter,
)
from conftest import CONTEXTS, FORK, Kid, Kids


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


def test_condition_wait_without_lock_leaves_no_waiter(segment: Segment) -> None:
    mutex = Mutex(segment, 0)
    cond = Condition(segment, 32, lock=mutex)
    with pytest.raises(RuntimeError):
        cond.wait(0.01)
    assert u32(segment, 32 + COND_WAITERS) == 0


def _cond_child(seg: shmring.Segment, q: "mp.Queue[object]") -> None:
    cond = shmring.Condition(seg, 32, lock=shmring.Mutex(seg, 0))
    with cond:
        q.put("waiting")
        t0 = time.monotonic()
        q.put((cond.wait(5.0), time.monotonic() - t0))


@pytest.mark.timeout(30)
def test_a_notifier_that_waits_next_does_not_steal_its_own_notification(segment: shmring.Segment) -> None:
    """notify() then wait() on the same condition (the ping-pong pattern):
    the notification goes to the process that was waiting, not to the
    notifier that arrived after it."""
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    proc = ctx.Process(target=_cond_child, args=(segment, q))
    proc.start()
    try:
        assert q.get(timeout=10) == "waiting"
        time.sleep(0.1)
        cond = shmring.Condition(segment, 32, lock=shmring.Mutex(segment, 0))
        with cond:
            cond.notify()
            assert cond.wait(0.5) is False  # nobody notified the notifier
        woke, waited = q.get(timeout=10)
        assert woke is True and waited < 2.0
    finally:
        proc.join(10)
