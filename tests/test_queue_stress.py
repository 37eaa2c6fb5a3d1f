"""Queue stress with real processes: exactly-once delivery, in per-producer
order, for 1x1, 4x1, 1x4 and 3x3 producers x consumers, single and batch
calls, bounded, unbounded and overflowing rings; and no lost wake-ups.
Every item is checked (tests/_queue_helpers.py).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import pytest

import shmring

from _queue_helpers import MAX_BATCH, OP_TIMEOUT, Collector, assert_drained, check_delivery, item, make_queue
from conftest import FORK, Kids


def _producer(q: shmring.Queue, p: int, n: int, api: str, mode: str, seed: int) -> None:
    rng = random.Random(seed)
    s = 0
    while s < n:
        if api == "single":
            q.put(item(p, s, mode), timeout=OP_TIMEOUT)
            s += 1
        else:
            k = min(n - s, rng.randint(1, MAX_BATCH[mode]))
            q.put_many([item(p, s + i, mode) for i in range(k)], timeout=OP_TIMEOUT)
            s += k


LAYOUTS = {"1x1": (1, 1), "4x1": (4, 1), "1x4": (1, 4), "3x3": (3, 3)}

TOTAL = {"unbounded": 20000, "bounded": 12000, "overflow": 1000}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["unbounded", "bounded", "overflow"])
@pytest.mark.parametrize("api", ["single", "batch"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_exactly_once(layout: str, api: str, mode: str, new_name: Callable[[], str], kids: Kids,
                      collector: Collector) -> None:
    producers, consumers = LAYOUTS[layout]
    per = TOTAL[mode] // producers
    seed = random.randrange(2**32)
    ctx = f"[seed {seed}] "
    gate = FORK.Event() if mode == "overflow" else None
    with make_queue(mode, new_name()) as q:
        for c in range(consumers):
            collector.consumer(c, q, api, mode, seed + 1000 + c, gate)
        prods = [kids.process(FORK, _producer, q, p, per, api, mode, seed + p) for p in range(producers)]
        most_chunks = 0
        if gate is not None:
            # Let the ring overflow before anyone consumes, then drain while
            # producers may still be filling chunks.
            deadline = time.monotonic() + OP_TIMEOUT
            while time.monotonic() < deadline:
                most_chunks = max(most_chunks, q.stats()["overflow_chunks"])
                if most_chunks >= 2 or not any(p.is_alive() for p in prods):
                    break
                time.sleep(0.002)
            gate.set()
        collector.join(prods, 40)
        assert all(p.exitcode == 0 for p in prods), [p.exitcode for p in prods]
        collector.put_markers(q, consumers)
        collector.wait_done(set(range(consumers)), 40)
        collector.join(kids.procs, 10)
        check_delivery(collector.got, {p: per for p in range(producers)}, ctx=ctx)
        if gate is not None:
            assert most_chunks >= 1, "the stream never overflowed the ring"
        assert_drained(q)


# -- no lost wake-ups ---------------------------------------------------------------


def _ponger(a: shmring.Queue, b: shmring.Queue, n: int) -> None:
    for _ in range(n):
        b.put(a.get(timeout=OP_TIMEOUT))


@pytest.mark.timeout(30)
def test_ping_pong_has_no_lost_wakeups(new_name: Callable[[], str], kids: Kids) -> None:
    # Each wait that missed its wake-up would last a 50 ms slice: 300 round
    # trips would then take 15 s or more.
    n = 300
    with shmring.Queue(name=new_name()) as a, shmring.Queue(1, name=new_name()) as b:
        p = kids.process(FORK, _ponger, a, b, n)
        a.put(-1)
        assert b.get(timeout=OP_TIMEOUT) == -1  # the child is up
        t0 = time.monotonic()
        for i in range(n - 1):
            a.put(i)
            assert b.get(timeout=OP_TIMEOUT) == i
        elapsed = time.monotonic() - t0
        kids.join([p], 10)
        assert p.exitcode == 0
        assert elapsed < 3.0, f"{n} round trips took {elapsed:.2f} s: wake-ups are being lost"


def _timed_consumer(q: shmring.Queue, conn: Any) -> None:
    lat = []
    while True:
        x = q.get(timeout=OP_TIMEOUT)
        if x is None:
            break
        lat.append(time.monotonic() - x)
    conn.send(lat)


@pytest.mark.timeout(30)
def test_sleeping_consumers_are_woken_per_item(new_name: Callable[[], str], kids: Kids) -> None:
    with shmring.Queue(name=new_name()) as q:
        pipes = []
        for _ in range(4):
            r, w = FORK.Pipe(duplex=False)
            kids.process(FORK, _timed_consumer, q, w)
            w.close()
            pipes.append(r)
        time.sleep(0.1)
        for _ in range(150):
            q.put(time.monotonic())
            time.sleep(0.002)  # consumers go back to sleep between items
        q.put_many([None] * 4)
        lat = sorted(x for r in pipes for x in (r.recv() if r.poll(OP_TIMEOUT) else []))
        kids.join(kids.procs, 10)
        assert len(lat) == 150
        assert lat[len(lat) // 2] < 0.02, f"median wake-up latency {lat[len(lat) // 2]:.3f} s"
