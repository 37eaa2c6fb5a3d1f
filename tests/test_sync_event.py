"""Event: set() wakes every waiter, in other processes too; set() then
clear() wakes the waiters of the moment; clear() makes new waiters wait.
"""

from __future__ import annotations

import time

import pytest

from shmring import AtomicInt32, AtomicInt64, Event, Segment

from _sync_helpers import EVENT_WAITERS, FLAG, READY, STAMP, ms, u32, wait_until, wait_value
from conftest import CONTEXTS, FORK, Kids


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
        # Woken by set(), not by the 10 s timeout: the bound leaves room for
        # four spawned waiters scheduled on a loaded 2-CPU machine under ASan.
        assert ms(latency) < 1000, f"woke {ms(latency):.1f} ms after set()"
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
