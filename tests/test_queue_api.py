"""shmring.Queue beside multiprocessing.Queue.

The same scenarios run against ``multiprocessing.Queue`` (and
``JoinableQueue`` / ``SimpleQueue``) and ``shmring.Queue`` and assert the same
observable behaviour, so that ``from shmring import Queue`` is a drop-in.
Where multiprocessing differs only because of its feeder thread (``empty()``
and ``get_nowait()`` may lag a ``put`` in the same process), the
multiprocessing side is polled until it catches up, and the shmring side must
hold at once.

Helpers at module level run in child processes (spawn and forkserver
re-import this module), so they must stay importable.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import shmring

from _queue_helpers import OP_TIMEOUT, Point, _grandchild, later, runs_within
from conftest import CONTEXTS, FORK, eventually


class Impl:
    """Makes queues of one implementation and hides the one legitimate
    difference: multiprocessing's feeder thread makes a put visible to
    ``empty()``/``get_nowait()`` a little later."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.made: list[Any] = []

    @property
    def is_mp(self) -> bool:
        return self.kind == "multiprocessing"

    def _keep(self, q: Any) -> Any:
        self.made.append(q)
        return q

    def Queue(self, *args: Any, ctx: Any = FORK, **kw: Any) -> Any:
        return self._keep(ctx.Queue(*args, **kw) if self.is_mp else shmring.Queue(*args, ctx=ctx, **kw))

    def JoinableQueue(self, *args: Any, ctx: Any = FORK) -> Any:
        return self._keep(ctx.JoinableQueue(*args) if self.is_mp else shmring.JoinableQueue(*args, ctx=ctx))

    def SimpleQueue(self, ctx: Any = FORK) -> Any:
        return self._keep(ctx.SimpleQueue() if self.is_mp else shmring.SimpleQueue(ctx=ctx))

    def settle(self, pred: Callable[[], bool], what: str) -> None:
        if self.is_mp:
            assert eventually(pred), f"multiprocessing: {what} never became true"
        else:
            assert pred(), f"shmring: {what} must hold as soon as put/get returned (no feeder thread)"

    def get_nowait(self, q: Any) -> Any:
        """``get_nowait`` of an item already put by this process."""
        if not self.is_mp:
            return q.get_nowait()
        deadline = time.monotonic() + 5
        while True:
            try:
                return q.get_nowait()
            except queue.Empty:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.001)

    def cleanup(self) -> None:
        for q in self.made:
            if isinstance(q, shmring.Queue):
                q.close()  # the last handle to leave removes the queue
            elif isinstance(q, mp.queues.SimpleQueue):
                q.close()
            else:
                q.cancel_join_thread()
                q.close()
                # Let the feeder thread finish: a later test that forks while
                # it runs (inside malloc) would give the child a held
                # allocator lock under ASan, whose allocator is not fork-safe.
                feeder = getattr(q, "_thread", None)
                if feeder is not None:
                    feeder.join(5)


@pytest.fixture(params=["multiprocessing", "shmring"])
def impl(request: pytest.FixtureRequest) -> Iterator[Impl]:
    i = Impl(request.param)
    yield i
    i.cleanup()


def test_sbs_fifo_put_nowait_get_nowait(impl: Impl) -> None:
    q = impl.Queue()
    with pytest.raises(queue.Empty):
        q.get_nowait()
    for i in range(100):
        q.put_nowait(i)
    assert [impl.get_nowait(q) for _ in range(100)] == list(range(100))
    with pytest.raises(queue.Empty):
        q.get_nowait()
    q.put("a")
    q.put("b", True)
    q.put("c", True, 1.0)
    q.put(obj="d", block=False)
    assert [q.get(timeout=OP_TIMEOUT), q.get(True, OP_TIMEOUT), q.get(block=True, timeout=OP_TIMEOUT)] == ["a", "b", "c"]
    assert impl.get_nowait(q) == "d"


def test_sbs_full_nowait(impl: Impl) -> None:
    q = impl.Queue(2)
    q.put_nowait(1)
    q.put_nowait(2)
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    with pytest.raises(queue.Full):
        q.put(3, block=False)
    assert q.qsize() == 2
    assert q.get(timeout=OP_TIMEOUT) == 1
    q.put_nowait(3)
    assert [q.get(timeout=OP_TIMEOUT), q.get(timeout=OP_TIMEOUT)] == [2, 3]


@pytest.mark.parametrize("timeout", [0.2, 0.5])
def test_sbs_get_timeout_is_honoured(impl: Impl, timeout: float) -> None:
    q = impl.Queue()
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=timeout)
    elapsed = time.monotonic() - t0
    assert timeout * 0.9 <= elapsed < timeout + 1.5, elapsed


@pytest.mark.parametrize("timeout", [0.2, 0.5])
def test_sbs_put_timeout_is_honoured(impl: Impl, timeout: float) -> None:
    q = impl.Queue(1)
    q.put("x")
    t0 = time.monotonic()
    with pytest.raises(queue.Full):
        q.put("y", timeout=timeout)
    elapsed = time.monotonic() - t0
    assert timeout * 0.9 <= elapsed < timeout + 1.5, elapsed
    assert q.qsize() == 1
    assert q.get(timeout=OP_TIMEOUT) == "x"


def test_sbs_timeout_zero_does_not_wait(impl: Impl) -> None:
    q = impl.Queue(1)
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0)
    q.put(1)
    with pytest.raises(queue.Full):
        q.put(2, timeout=0)
    assert time.monotonic() - t0 < 0.5


def test_sbs_block_false_ignores_timeout(impl: Impl) -> None:
    q = impl.Queue(1)
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(False, 5)
    with pytest.raises(queue.Empty):
        q.get(block=False, timeout=5)
    q.put(1)
    with pytest.raises(queue.Full):
        q.put(2, False, 5)
    with pytest.raises(queue.Full):
        q.put(2, block=False, timeout=5)
    assert time.monotonic() - t0 < 1.0


def test_sbs_timeout_none_get_blocks_until_put(impl: Impl) -> None:
    q = impl.Queue()
    t0 = time.monotonic()
    t = later(0.3, lambda: q.put("late"))
    done, (status, value) = runs_within(lambda: q.get(timeout=None), OP_TIMEOUT)
    assert done and status == "ok" and value == "late"
    assert time.monotonic() - t0 >= 0.25
    t.join(OP_TIMEOUT)
    t0 = time.monotonic()
    t = later(0.3, lambda: q.put("later"))
    done, (status, value) = runs_within(lambda: q.get(), OP_TIMEOUT)  # block=True, no timeout
    assert done and status == "ok" and value == "later"
    assert time.monotonic() - t0 >= 0.25
    t.join(OP_TIMEOUT)


def test_sbs_timeout_none_put_blocks_until_get(impl: Impl) -> None:
    q = impl.Queue(1)
    q.put("first")
    got: list[Any] = []
    t0 = time.monotonic()
    t = later(0.3, lambda: got.append(q.get(timeout=OP_TIMEOUT)))
    done, (status, _) = runs_within(lambda: q.put("second", timeout=None), OP_TIMEOUT)
    assert done and status == "ok"
    assert time.monotonic() - t0 >= 0.25
    t.join(OP_TIMEOUT)
    assert got == ["first"]
    assert q.get(timeout=OP_TIMEOUT) == "second"


@pytest.mark.parametrize("maxsize", [0, -1, -100])
def test_sbs_maxsize_zero_or_negative_is_unbounded(impl: Impl, maxsize: int) -> None:
    q = impl.Queue(maxsize)
    for i in range(2000):
        q.put_nowait(i)
    assert not q.full()
    assert q.qsize() == 2000
    assert [q.get(timeout=OP_TIMEOUT) for _ in range(2000)] == list(range(2000))
    impl.settle(q.empty, "empty() after draining")


def test_sbs_maxsize_positional_and_keyword(impl: Impl) -> None:
    for q in (impl.Queue(3), impl.Queue(maxsize=3)):
        for i in range(3):
            q.put_nowait(i)
        assert q.full()
        with pytest.raises(queue.Full):
            q.put_nowait(3)
        assert [q.get(timeout=OP_TIMEOUT) for _ in range(3)] == [0, 1, 2]


def test_sbs_qsize_empty_full_track_puts_and_gets(impl: Impl) -> None:
    q = impl.Queue(3)
    assert (q.qsize(), q.empty(), q.full()) == (0, True, False)
    q.put("a")
    impl.settle(lambda: not q.empty(), "not empty() after a put")
    assert (q.qsize(), q.full()) == (1, False)
    q.put("b")
    q.put("c")
    assert (q.qsize(), q.full()) == (3, True)
    impl.settle(lambda: not q.empty(), "not empty() when full")
    assert q.get(timeout=OP_TIMEOUT) == "a"
    assert (q.qsize(), q.full()) == (2, False)
    assert q.get(timeout=OP_TIMEOUT) == "b"
    assert q.get(timeout=OP_TIMEOUT) == "c"
    assert (q.qsize(), q.full()) == (0, False)
    impl.settle(q.empty, "empty() after the last get")


def test_sbs_closed_queue_raises_valueerror_in_the_closing_process(impl: Impl) -> None:
    q = impl.Queue()
    q.put(1)
    q.close()
    calls: list[Callable[[], Any]] = [lambda: q.put(2), lambda: q.put_nowait(2), lambda: q.get(),
                                      lambda: q.get_nowait(), lambda: q.get(timeout=0.1),
                                      lambda: q.put(2, timeout=0.1)]
    for call in calls:
        with pytest.raises(ValueError, match="is closed"):
            call()
    q.close()  # twice is fine
    q.join_thread()


def test_sbs_join_thread_needs_close(impl: Impl) -> None:
    q = impl.Queue()
    with pytest.raises(AssertionError, match="not closed"):
        q.join_thread()
    q.cancel_join_thread()
    q.put("x")
    assert q.get(timeout=OP_TIMEOUT) == "x"
    q.close()
    q.join_thread()


OBJECTS: list[Any] = [
    None,
    True,
    0,
    -1,
    2**100,
    3.5,
    "",
    "text",
    "ünïcødé ✓",
    b"",
    b"\x00bytes\xff",
    bytearray(b"ba"),
    (),
    (1, (2, (3, None))),
    [1, [2, [3, []]]],
    {"a": {"b": [1, 2, {"c": (3,)}]}, 4: None},
    {1, 2, 3},
    frozenset({"x"}),
    Point(1, 2),
    [Point(i, -i) for i in range(50)],
    range(3, 30, 3),
    complex(1, -2),
    b"L" * (5 << 20),  # 5 MiB: larger than shmring's 1 MiB ring
    "after the large one",
]


def test_sbs_arbitrary_picklable_objects_in_order(impl: Impl) -> None:
    q = impl.Queue()
    for obj in OBJECTS:
        q.put(obj)
    got = [q.get(timeout=OP_TIMEOUT) for _ in OBJECTS]
    assert [type(g) for g in got] == [type(o) for o in OBJECTS]
    assert got == OBJECTS
    impl.settle(q.empty, "empty() after draining")


@pytest.mark.parametrize("bad", ["3", 1.5, None, [2]])
def test_sbs_bad_maxsize_type(impl: Impl, bad: Any) -> None:
    with pytest.raises(TypeError):
        impl.Queue(bad)


@pytest.mark.parametrize("maxsize", [2**64 + 3, 2**70])
def test_sbs_maxsize_too_large_is_refused(impl: Impl, maxsize: int) -> None:
    # multiprocessing raises OverflowError; shmring must not wrap it around
    # (2**64 + 3 would become a maxsize of 3, 2**70 an unbounded queue).
    with pytest.raises((OverflowError, ValueError)):
        q = impl.Queue(maxsize)
        pytest.fail(f"Queue({maxsize}) was accepted, with maxsize {getattr(q, 'maxsize', '?')}")


def test_sbs_joinable_task_done_and_join(impl: Impl) -> None:
    q = impl.JoinableQueue()
    done, _ = runs_within(q.join, 5)
    assert done, "join() of a fresh queue must return at once"
    for i in range(3):
        q.put(i)
    assert [q.get(timeout=OP_TIMEOUT) for _ in range(3)] == [0, 1, 2]
    q.task_done()
    q.task_done()
    done, _ = runs_within(q.join, 0.3)
    assert not done, "join() returned with one task unfinished"
    q.task_done()
    done, _ = runs_within(q.join, 5)
    assert done
    with pytest.raises(ValueError, match="task_done\\(\\) called too many times"):
        q.task_done()
    q.put("again")
    assert q.get(timeout=OP_TIMEOUT) == "again"
    q.task_done()
    with pytest.raises(ValueError):
        q.task_done()


def test_sbs_joinable_join_wakes_on_last_task_done(impl: Impl) -> None:
    q = impl.JoinableQueue(2)
    q.put("a")
    q.put("b")
    with pytest.raises(queue.Full):
        q.put_nowait("c")
    q.get(timeout=OP_TIMEOUT)
    q.get(timeout=OP_TIMEOUT)
    t0 = time.monotonic()
    t = later(0.2, q.task_done)
    t2 = later(0.4, q.task_done)
    done, (status, _) = runs_within(q.join, OP_TIMEOUT)
    assert done and status == "ok"
    assert time.monotonic() - t0 >= 0.35
    t.join(5)
    t2.join(5)


def test_sbs_simple_queue(impl: Impl) -> None:
    q = impl.SimpleQueue()
    assert q.empty()
    for obj in OBJECTS[:-2]:
        q.put(obj)
    assert not q.empty()  # SimpleQueue has no feeder thread in either
    assert [q.get() for _ in OBJECTS[:-2]] == OBJECTS[:-2]
    assert q.empty()
    q.close()


def test_sbs_threads_share_one_handle(impl: Impl) -> None:
    q = impl.Queue(50)
    producers, per = 3, 300
    got: list[list[Any]] = [[] for _ in range(3)]

    def produce(p: int) -> None:
        for s in range(per):
            q.put((p, s), timeout=OP_TIMEOUT)

    def consume(c: int) -> None:
        while True:
            item = q.get(timeout=OP_TIMEOUT)
            if item is None:
                return
            got[c].append(item)

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    threads += [threading.Thread(target=consume, args=(c,)) for c in range(3)]
    for t in threads:
        t.start()
    for t in threads[:producers]:
        t.join(30)
    for _ in range(3):
        q.put(None, timeout=OP_TIMEOUT)
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    flat = [x for g in got for x in g]
    assert sorted(flat) == [(p, s) for p in range(producers) for s in range(per)]
    for g in got:  # per consumer, each producer's items stay in order
        for p in range(producers):
            seqs = [s for (pp, s) in g if pp == p]
            assert seqs == sorted(seqs)


# -- across processes, side by side -------------------------------------------------


def _child_echo(q_in: Any, q_out: Any) -> None:
    got = [q_in.get(timeout=OP_TIMEOUT) for _ in range(3)]
    q_out.put((os.getpid(), [g * 2 for g in got[:2]] + [got[2]]))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_sbs_queue_passed_to_child_process(impl: Impl, method: str) -> None:
    ctx = CONTEXTS[method]
    q_in, q_out = impl.Queue(ctx=ctx), impl.Queue(ctx=ctx)
    q_in.put(1)
    q_in.put("ab")
    q_in.put(b"B" * (2 << 20))
    p = ctx.Process(target=_child_echo, args=(q_in, q_out))
    p.start()
    pid, got = q_out.get(timeout=OP_TIMEOUT)
    p.join(OP_TIMEOUT)
    assert p.exitcode == 0
    assert pid == p.pid and got == [2, "abab", b"B" * (2 << 20)]
    impl.settle(q_in.empty, "empty() once the child took everything")


_POOL_QUEUE: Any = None


def _pool_init(q: Any) -> None:
    global _POOL_QUEUE
    _POOL_QUEUE = q


def _pool_put(x: int) -> int:
    _POOL_QUEUE.put((x, os.getpid()))
    return x * x


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_sbs_queue_passed_to_pool_initializer(impl: Impl, method: str) -> None:
    ctx = CONTEXTS[method]
    q = impl.Queue(ctx=ctx)
    with ctx.Pool(2, initializer=_pool_init, initargs=(q,)) as pool:
        assert pool.map_async(_pool_put, range(8), chunksize=1).get(OP_TIMEOUT) == [x * x for x in range(8)]
        got = [q.get(timeout=OP_TIMEOUT) for _ in range(8)]
        assert sorted(x for x, _ in got) == list(range(8))
        assert os.getpid() not in {pid for _, pid in got}


def _child_with_grandchild(q: Any, method: str) -> None:
    ctx: Any = mp.get_context(method)
    p = ctx.Process(target=_grandchild, args=(q,))
    p.start()
    p.join(OP_TIMEOUT)
    q.put(("child", os.getpid(), p.exitcode))


@pytest.mark.timeout(60)
def test_sbs_queue_reaches_a_grandchild(impl: Impl) -> None:
    q = impl.Queue()
    p = FORK.Process(target=_child_with_grandchild, args=(q, "fork"))
    p.start()
    first = q.get(timeout=OP_TIMEOUT)
    second = q.get(timeout=OP_TIMEOUT)
    p.join(OP_TIMEOUT)
    assert p.exitcode == 0
    assert first[0] == "grandchild" and first[2] == p.pid
    assert second == ("child", p.pid, 0)


def _joinable_worker(q: Any, n: int) -> None:
    for _ in range(n):
        q.get(timeout=OP_TIMEOUT)
        time.sleep(0.01)
        q.task_done()


@pytest.mark.timeout(60)
def test_sbs_joinable_across_processes(impl: Impl) -> None:
    q = impl.JoinableQueue()
    for i in range(5):
        q.put(i)
    p = FORK.Process(target=_joinable_worker, args=(q, 5))
    p.start()
    done, (status, _) = runs_within(q.join, OP_TIMEOUT)
    assert done and status == "ok"
    p.join(OP_TIMEOUT)
    assert p.exitcode == 0
    with pytest.raises(ValueError):
        q.task_done()


def _simple_child(q: Any, out: Any) -> None:
    out.put([q.get() for _ in range(3)])


@pytest.mark.timeout(60)
def test_sbs_simple_queue_across_processes(impl: Impl) -> None:
    q, out = impl.SimpleQueue(), impl.SimpleQueue()
    p = FORK.Process(target=_simple_child, args=(q, out))
    p.start()
    for x in ("a", None, Point(3, 4)):
        q.put(x)
    assert out.get() == ["a", None, Point(3, 4)]
    p.join(OP_TIMEOUT)
    assert p.exitcode == 0
