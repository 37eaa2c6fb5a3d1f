"""Semaphore: permits conserved under contention (never more holders than
permits, none lost or created), its value and its limits, release(n)
waking n sleepers.
"""

from __future__ import annotations

import os
import pickle
import random
from collections.abc import Callable

import pytest

from shmring import AtomicInt32, Segment, Semaphore

from _sync_helpers import FLAG, FLAG2, LOCK, PEAK, SEM_WAITERS, u32, wait_until, wait_value
from conftest import CONTEXTS, FORK, Kids

SEM_MAX = 2**31 - 1


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
