"""AtomicInt64, AtomicInt32 and AtomicFlag: every operation against a model,
wrap-around and overflow, memory orders, exact totals under contention,
wait/notify across processes, and a flag that publishes data written before
set().  (AtomicInt32 as a futex word: test_sync_futex.py.)
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest

import shmring
from shmring import AtomicFlag, AtomicInt32, AtomicInt64, Segment

from _sync_helpers import DONE, FLAG, FLAG2, PAYLOAD, READY, STAMP, ms, wait_value
from conftest import CONTEXTS, FORK, Kids

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


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
    for atom, too_wide in ((a64, (INT64_MAX + 1, INT64_MIN - 1, 2**100)), (a32, (INT32_MAX + 1, INT32_MIN - 1, 2**40))):
        for bad in too_wide:
            for call in (atom.store, atom.exchange, atom.fetch_add, atom.fetch_sub, atom.fetch_and, atom.fetch_or,
                         atom.fetch_xor, lambda v: atom.compare_exchange(v, 0), lambda v: atom.compare_exchange(0, v),
                         lambda v: atom.wait(v, 0)):
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
        # Woken by notify(), not by the wait's timeout; room for a loaded
        # 2-CPU machine under ASan (over 100 ms seen there).
        assert ms(latency) < 1000, f"woke {ms(latency):.1f} ms after notify()"
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


def test_value_conversion_that_closes_the_segment(name: str) -> None:
    seg = shmring.Segment.create(name, 64)
    atom = shmring.AtomicInt64(seg, 0)

    class Evil:
        def __index__(self) -> int:
            seg.close()
            return 1

    with pytest.raises(ValueError, match="closed"):
        atom.store(Evil())  # type: ignore[arg-type]
    assert not Path("/dev/shm", name).exists()  # closed by its only user: removed
