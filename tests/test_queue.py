"""shmring.Queue: API and semantics.

The first half runs the same scenarios against ``multiprocessing.Queue``
(and ``JoinableQueue`` / ``SimpleQueue``) and ``shmring.Queue`` and asserts
the same observable behaviour, so that ``from shmring import Queue`` is a
drop-in.  Where multiprocessing differs only because of its feeder thread
(``empty()`` and ``get_nowait()`` may lag a ``put`` in the same process),
the multiprocessing side is polled until it catches up, and the shmring side
must hold at once.

The second half is shmring-only: the faster-fifo API, custom serializers,
overflow chunks, bounded rings, subclassing, pickling, clean exits, and
argument checking.

Multi-process stress and fault tests live in test_queue_stress.py.
Helpers at module level run in child processes (spawn and forkserver
re-import this module), so they must stay importable.
"""

from __future__ import annotations

import gc
import json
import multiprocessing as mp
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import shmring

pytestmark = pytest.mark.timeout(60)

SHM = Path("/dev/shm")
FORK = mp.get_context("fork")
SPAWN = mp.get_context("spawn")
FORKSERVER = mp.get_context("forkserver")
CONTEXTS: dict[str, Any] = {"fork": FORK, "spawn": SPAWN, "forkserver": FORKSERVER}

# Bound on any single blocking call made by a test or a child: a lost wake-up
# or a deadlock fails with Empty/Full instead of hanging until pytest-timeout.
OP_TIMEOUT = 15.0
RING = 1 << 20  # shmring.queue.DEFAULT_CAPACITY


def record_size(n: int) -> int:
    """Ring bytes taken by a record of ``n`` payload bytes (8-byte header, padded to 8)."""
    return 8 + (n + 7) // 8 * 8


def chunk_files(name: str) -> list[str]:
    """The overflow chunk segments of queue ``name`` present in /dev/shm."""
    prefix = name + ".q"
    return sorted(p.name for p in SHM.iterdir() if p.name.startswith(prefix) and p.name[len(prefix) :].isdigit())


def eventually(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.001)
    return True


def runs_within(fn: Callable[[], Any], timeout: float) -> tuple[bool, Any]:
    """Run ``fn`` in a daemon thread: (finished within ``timeout``, its result or exception)."""
    out: list[Any] = []

    def target() -> None:
        try:
            out.append(("ok", fn()))
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            out.append(("error", e))

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        return False, None
    return True, out[0]


def later(delay: float, fn: Callable[[], Any]) -> threading.Thread:
    """Call ``fn`` from another thread after ``delay`` seconds."""

    def target() -> None:
        time.sleep(delay)
        fn()

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t


@dataclass(frozen=True)
class Point:
    x: int
    y: int


# --------------------------------------------------------------------------
# Side by side: multiprocessing and shmring
# --------------------------------------------------------------------------


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


def _grandchild(q: Any) -> None:
    q.put(("grandchild", os.getpid(), os.getppid()))


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


# --------------------------------------------------------------------------
# shmring only: attributes, handles, ownership
# --------------------------------------------------------------------------


@pytest.fixture
def sq(name: str) -> Iterator[shmring.Queue]:
    with shmring.Queue(name=name) as q:
        yield q


def test_attributes_and_repr(name: str) -> None:
    with shmring.Queue(7, name=name) as q:
        assert q.name == name and q.owner
        assert (q.maxsize, q.capacity, q.max_size_bytes, q.max_bytes_to_read) == (7, RING, RING, RING)
        assert q.bounded is False
        assert name in repr(q) and "maxsize=7" in repr(q)
        stats = q.stats()
        assert stats.pop("queue_id") != 0
        assert stats == {
            "capacity": RING, "maxsize": 7, "items": 0, "bytes": 0, "puts": 0, "gets": 0, "unfinished": 0,
            "overflow_chunks": 0, "used_bytes": 0, "holder": 0, "bounded": False, "chunk_head": 0, "chunk_tail": 0,
        }
        seg = shmring.Segment.open(name)
        assert seg.info().kind == "queue" and seg.size == 384 + RING
        seg.close()
    with shmring.Queue(max_size_bytes=1000, name=name) as q:
        assert (q.maxsize, q.capacity, q.max_size_bytes, q.bounded) == (0, 1000, 1000, True)
        assert "unbounded" in repr(q)
    with shmring.Queue(max_size_bytes=100, name=name) as q:
        assert q.capacity == 104  # rounded up to a multiple of 8
    with shmring.Queue(max_size_bytes=64, name=name) as q:
        assert q.capacity == 64
    assert not (SHM / name).exists()


def test_open_by_name_and_pickle_attach_the_same_queue(sq: shmring.Queue) -> None:
    other = shmring.Queue.open(sq.name)
    copy = pickle.loads(pickle.dumps(sq))
    assert type(copy) is shmring.Queue and not other.owner and not copy.owner
    assert (other.maxsize, other.capacity, copy.capacity) == (sq.maxsize, sq.capacity, sq.capacity)
    sq.put(1)
    other.put(2)
    copy.put(3)
    assert sq.qsize() == other.qsize() == copy.qsize() == 3
    assert [copy.get_nowait(), sq.get_nowait(), other.get_nowait()] == [1, 2, 3]
    assert other.empty() and copy.empty()
    other.close()  # closing an attached handle leaves the others usable
    sq.put(4)
    assert copy.get_nowait() == 4
    assert other.is_closed() and not sq.is_closed() and not copy.is_closed()  # is_closed(): per handle
    assert sq.closed_anywhere() and copy.closed_anywhere()  # the shared mark


def test_open_missing_and_non_queue_segments(name: str, new_name: Callable[[], str]) -> None:
    with pytest.raises(FileNotFoundError):
        shmring.Queue.open(name)
    with shmring.Segment.create(name, 4096):
        with pytest.raises(ValueError, match="not a queue"):
            shmring.Queue.open(name)
    chan = new_name()
    with shmring.Channel.create(chan, 1024):
        with pytest.raises(ValueError, match="not a queue"):
            shmring.Queue.open(chan)
    with shmring.Queue(name=name) as q:
        q.put_bytes(b"c" * (RING + 1))  # an overflow chunk segment
        (chunk,) = chunk_files(name)
        with pytest.raises(ValueError, match="not a queue"):
            shmring.Queue.open(chunk)
        assert q.get_bytes() == b"c" * (RING + 1)


def test_last_handle_out_removes_the_queue_and_its_chunks(name: str, new_name: Callable[[], str]) -> None:
    with shmring.Queue(name=name) as q:
        assert (SHM / name).exists()
    assert not (SHM / name).exists()  # its only user left
    with pytest.raises(FileNotFoundError):
        shmring.Queue.open(name)

    q = shmring.Queue(name=name)
    q.put_bytes(b"x" * (2 * RING))
    assert chunk_files(name)
    del q
    gc.collect()
    assert not (SHM / name).exists() and not chunk_files(name)

    q = shmring.Queue(name=name)
    attached = shmring.Queue.open(name)
    q.unlink()
    assert not (SHM / name).exists()
    attached.put("still works")  # mapped handles keep working after unlink
    assert q.get_nowait() == "still works"
    with pytest.raises(FileNotFoundError):
        q.unlink()  # the name is gone already
    del q, attached


def test_dropped_attached_handle_does_not_unlink(sq: shmring.Queue) -> None:
    other = shmring.Queue.open(sq.name)
    del other
    copy = pickle.loads(pickle.dumps(sq))
    del copy
    gc.collect()
    assert (SHM / sq.name).exists()
    sq.put(1)
    assert sq.get_nowait() == 1


def _fork_child_drops_inherited_owner(q: shmring.Queue) -> None:
    assert not q.owner
    q.put("from child")
    del q
    gc.collect()


@pytest.mark.timeout(30)
def test_fork_child_dropping_the_owner_handle_does_not_unlink(sq: shmring.Queue) -> None:
    p = FORK.Process(target=_fork_child_drops_inherited_owner, args=(sq,))
    p.start()
    p.join(OP_TIMEOUT)
    assert p.exitcode == 0
    assert (SHM / sq.name).exists()
    assert sq.get(timeout=OP_TIMEOUT) == "from child"


def test_context_manager_closes_and_unlinks(name: str) -> None:
    with shmring.Queue(name=name) as q:
        q.put(1)
    assert not (SHM / name).exists()
    with pytest.raises(ValueError, match="is closed"):
        q.put(2)
    attached_name = None
    with shmring.Queue(name=name) as owner:
        with shmring.Queue.open(name) as attached:
            attached_name = attached.name
        assert (SHM / name).exists(), "leaving an attached handle's with block must not unlink"
        owner.put(1)
        assert owner.get_nowait() == 1
    assert attached_name == name


# --------------------------------------------------------------------------
# faster-fifo API
# --------------------------------------------------------------------------


def test_put_many_get_many(sq: shmring.Queue) -> None:
    sq.put_many([1, 2, 3])
    sq.put_many((x for x in "ab"))  # any iterable
    sq.put_many([])  # nothing
    sq.put_many_nowait([None, Point(0, 0)])
    assert sq.qsize() == 7
    assert sq.get_many(max_messages_to_get=2) == [1, 2]
    assert sq.get_many_nowait(max_messages_to_get=1) == [3]
    assert sq.get_many(block=False) == ["a", "b", None, Point(0, 0)]
    with pytest.raises(queue.Empty):
        sq.get_many(block=False)
    with pytest.raises(queue.Empty):
        sq.get_many_nowait()
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        sq.get_many(timeout=0.2)
    assert 0.18 <= time.monotonic() - t0 < 1.5
    sq.put(5)
    assert sq.get_many(True, 1.0, 100) == [5]
    t = later(0.2, lambda: sq.put_many([6, 7]))
    assert sq.get_many(timeout=OP_TIMEOUT) == [6, 7]  # a batch arrives whole
    t.join(5)


def test_put_many_is_all_or_nothing(name: str) -> None:
    with shmring.Queue(3, name=name) as q:
        q.put_many([1, 2])
        with pytest.raises(queue.Full):
            q.put_many_nowait(["a", "b"])
        t0 = time.monotonic()
        with pytest.raises(queue.Full):
            q.put_many(["a", "b"], timeout=0.2)
        assert 0.18 <= time.monotonic() - t0 < 1.5
        assert q.qsize() == 2
        q.put_many(["c"])
        assert q.full()
        with pytest.raises(ValueError, match="never fit"):
            q.put_many([1, 2, 3, 4])  # more than maxsize: can never fit
        assert q.get_many() == [1, 2, "c"]
    with shmring.Queue(max_size_bytes=256, name=name) as q:
        with pytest.raises(ValueError, match="never fit together"):
            q.put_many([b"x" * 100, b"y" * 100, b"z" * 100])  # > 256 ring bytes in records
        assert q.qsize() == 0
        q.put_many([b"x" * 60, b"y" * 60])
        with pytest.raises(queue.Full):
            q.put_many_nowait([b"x" * 60, b"y" * 60])  # fits the ring, not now
        assert q.qsize() == 2
        assert q.get_many() == [b"x" * 60, b"y" * 60]


def test_put_many_waits_until_the_whole_batch_fits(name: str) -> None:
    with shmring.Queue(4, name=name) as q:
        q.put_many([0, 1, 2])
        t = later(0.2, lambda: [q.get(timeout=OP_TIMEOUT) for _ in range(2)])
        t0 = time.monotonic()
        q.put_many([3, 4, 5], timeout=OP_TIMEOUT)
        assert time.monotonic() - t0 >= 0.15
        t.join(5)
        assert q.get_many() == [2, 3, 4, 5]


class _Refused(Exception):
    pass


def _dumps_refusing(obj: Any) -> bytes:
    if obj == "refuse":
        raise _Refused("cannot serialize this one")
    if obj == "not bytes":
        return "a str"  # type: ignore[return-value]
    return pickle.dumps(obj)


def _items_then_error() -> Iterator[Any]:
    yield 1
    yield 2
    raise _Refused("the iterable broke")


@pytest.mark.parametrize(
    ("items", "exc"),
    [
        ([1, lambda: 0, 3], (pickle.PicklingError, AttributeError, TypeError)),  # unpicklable in the middle
        ([1, threading.Lock(), 3], TypeError),
        ([1, "refuse", 3], _Refused),  # the serializer raises for the middle item
        ([1, "not bytes", 3], TypeError),  # the serializer returns a str for it
        ("generator", _Refused),  # the iterable itself fails part-way
    ],
    ids=["lambda", "lock", "dumps-raises", "dumps-not-bytes", "iterable-raises"],
)
def test_put_many_serializes_the_whole_batch_before_writing(name: str, items: Any, exc: Any) -> None:
    """Partial batches are explicit: every item is serialized before the
    first byte goes into the ring, so an item that fails in the middle
    delivers nothing, not the items before it."""
    with shmring.Queue(name=name, dumps=_dumps_refusing, loads=pickle.loads) as q:
        q.put("before")
        with pytest.raises(exc):
            q.put_many(_items_then_error() if items == "generator" else items)
        st = q.stats()
        assert (q.qsize(), st["puts"], st["used_bytes"]) == (1, 1, record_size(len(pickle.dumps("before"))))
        q.put("after")
        assert q.get_many_nowait() == ["before", "after"]


def test_put_many_that_times_out_delivers_nothing_even_with_room_for_part(name: str) -> None:
    """A batch waits for room for all of it; when the time runs out it
    delivers none, even though room for some of it came meanwhile (maxsize,
    and bytes on a bounded ring)."""
    with shmring.Queue(4, name=name) as q:
        q.put_many([0, 1, 2])
        t = later(0.1, lambda: q.get(timeout=OP_TIMEOUT))  # room for 2 of the 3
        with pytest.raises(queue.Full):
            q.put_many(["a", "b", "c"], timeout=0.5)
        t.join(5)
        assert q.stats()["puts"] == 3
        assert q.get_many_nowait() == [1, 2]
    with shmring.Queue(max_size_bytes=SMALL, name=name, dumps=bytes, loads=bytes) as q:
        q.put_many([b"x" * 56] * 4)  # four 64-byte records: full
        t = later(0.1, lambda: q.get(timeout=OP_TIMEOUT))  # room for one record of 64
        with pytest.raises(queue.Full):
            q.put_many([b"y" * 56, b"z" * 56], timeout=0.5)
        t.join(5)
        assert q.stats()["used_bytes"] == 3 * 64 and q.stats()["puts"] == 4
        with pytest.raises(queue.Full):
            q.put_many_nowait([b"y" * 56, b"z" * 56])
        assert q.get_many_nowait() == [b"x" * 56] * 3
        q.put_many_nowait([b"y" * 56, b"z" * 56])  # and it goes in whole once it fits
        assert q.get_many_nowait() == [b"y" * 56, b"z" * 56]


def test_data_size_counts_payload_bytes(sq: shmring.Queue) -> None:
    assert sq.data_size() == 0
    sq.put_bytes(b"x" * 10)
    obj = {"k": list(range(10))}
    sq.put(obj)
    assert sq.data_size() == 10 + len(sq.dumps(obj))
    assert sq.dumps(obj) == pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
    assert sq.loads(sq.dumps(obj)) == obj
    sq.get()
    assert sq.data_size() == len(sq.dumps(obj))
    sq.get()
    assert sq.data_size() == 0


def test_put_bytes_get_bytes(sq: shmring.Queue) -> None:
    sq.put_bytes(b"raw")
    sq.put_bytes(bytearray(b"ba"))
    sq.put_bytes(memoryview(b"xmvx")[1:3])
    sq.put_bytes(b"")
    sq.put("obj")
    assert sq.get_bytes() == b"raw"
    assert sq.get() == b"ba"  # get() of a put_bytes item returns the bytes, unpickled
    assert sq.get_bytes(True, 1.0) == b"mv"
    assert sq.get_bytes(block=False) == b""
    assert sq.get_bytes() == pickle.dumps("obj", pickle.HIGHEST_PROTOCOL)  # raw pickle
    with pytest.raises(queue.Empty):
        sq.get_bytes(block=False)
    with pytest.raises(queue.Empty):
        sq.get_bytes(timeout=0.05)
    with pytest.raises(TypeError):
        sq.put_bytes("not bytes")  # type: ignore[arg-type]
    sq.put_bytes(b"q" * 100, block=False)
    sq.put_bytes(data=b"k", timeout=1)
    assert sq.get_many() == [b"q" * 100, b"k"]


def test_is_closed_after_close(sq: shmring.Queue) -> None:
    assert not sq.is_closed() and not sq.closed_anywhere()
    sq.close()
    assert sq.is_closed() and sq.closed_anywhere()
    assert sq.qsize() == 0 and sq.empty()  # inspection still works


def _close_in_child(q: shmring.Queue, conn: Any) -> None:
    before = (q.is_closed(), q.closed_anywhere())
    q.close()
    try:
        q.put("from a closed handle")
        put = "put worked"
    except ValueError as e:
        put = str(e)
    conn.send((before, q.is_closed(), q.closed_anywhere(), put))


def _report_closed(q: shmring.Queue, conn: Any) -> None:
    conn.send((q.is_closed(), q.closed_anywhere(), q.get(timeout=OP_TIMEOUT)))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_is_closed_is_per_handle_and_closed_anywhere_is_shared(sq: shmring.Queue, method: str) -> None:
    """One rule: is_closed() is this handle's state, the one that makes its
    put/get raise; a child's close() does not make the parent's is_closed()
    true while the parent's put/get still work.  closed_anywhere() is the
    shared mark that any close() sets (faster-fifo's is_closed())."""
    ctx = CONTEXTS[method]
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_close_in_child, args=(sq, w))
    p.start()
    assert r.poll(OP_TIMEOUT)
    before, child_closed, child_anywhere, child_put = r.recv()
    p.join(OP_TIMEOUT)
    assert p.exitcode == 0
    assert before == (False, False)
    assert child_closed and child_anywhere and "is closed" in child_put
    assert not sq.is_closed() and sq.closed_anywhere()
    sq.put("the parent's handle was not closed")
    assert sq.get_nowait() == "the parent's handle was not closed"
    # and the other way round: the parent closes, a child's handle works
    reader = sq.open(sq.name)  # a second handle of this process, still open
    sq.close()  # (`reader` is still attached: the queue stays)
    reader.put("for the child")
    p = ctx.Process(target=_report_closed, args=(reader, w))
    p.start()
    assert r.poll(OP_TIMEOUT)
    assert r.recv() == (False, True, "for the child")
    p.join(OP_TIMEOUT)
    assert p.exitcode == 0
    with pytest.raises(ValueError, match="is closed"):
        sq.get_nowait()
    reader.close()


QUEUE_CTRL_WAITERS = {"items": 260, "room": 268, "done": 276}  # docs/PROTOCOL.md 5.1


def _blocked_calls() -> list[Any]:
    return [
        pytest.param("get", "items", 0, id="get"),
        pytest.param("get_timeout", "items", 0, id="get-timeout"),
        pytest.param("get_many", "items", 0, id="get_many"),
        pytest.param("get_bytes", "items", 0, id="get_bytes"),
        pytest.param("get_polling", "items", 50_000_000, id="get-while-polling"),
        pytest.param("put_maxsize", "room", 0, id="put-waiting-for-maxsize"),
        pytest.param("put_many_bytes", "room", 0, id="put_many-waiting-for-bytes"),
        pytest.param("join", "done", 0, id="join"),
    ]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("call", "word", "spin_ns"), _blocked_calls())
def test_close_from_another_thread_wakes_the_blocked_call(name: str, call: str, word: str, spin_ns: int) -> None:
    """Shutdown: a thread blocked in get (or in a put waiting for room, or in
    join) on a handle that another thread closes raises the ValueError a
    call on a closed queue raises, instead of sleeping on; the queue, its
    items and the other handles are untouched."""
    maxsize = 1 if call == "put_maxsize" else 0
    size = SMALL if call == "put_many_bytes" else None
    with shmring.JoinableQueue(maxsize, max_size_bytes=size, name=name, spin_ns=spin_ns) as q, \
            shmring.Segment.open(name) as seg:
        other = shmring.Queue.open(name)
        if call == "put_maxsize":
            q.put("the one item")
        elif call == "put_many_bytes":
            q.put_bytes(b"f" * (SMALL - 8))  # the ring is full
        elif call == "join":
            q.put("unfinished")
        actions: dict[str, Callable[[], Any]] = {
            "get": q.get, "get_timeout": lambda: q.get(timeout=OP_TIMEOUT), "get_many": q.get_many,
            "get_bytes": q.get_bytes, "get_polling": q.get, "put_maxsize": lambda: q.put("second"),
            "put_many_bytes": lambda: q.put_many([1, 2]), "join": q.join,
        }
        outcome: list[BaseException | str] = []

        def blocked() -> None:
            try:
                actions[call]()
                outcome.append("returned")
            except BaseException as e:  # noqa: BLE001 - handed to the test
                outcome.append(e)

        t = threading.Thread(target=blocked, daemon=True)
        t.start()
        off = QUEUE_CTRL_WAITERS[word]
        if spin_ns:
            time.sleep(0.01)  # inside its poll (50 ms) rather than asleep
        else:
            assert eventually(lambda: struct.unpack_from("<I", seg.buf, off)[0] == 1, OP_TIMEOUT), "never slept"
        q.close()
        t.join(OP_TIMEOUT)
        assert not t.is_alive(), "close() did not end the blocked call"
        assert len(outcome) == 1 and isinstance(outcome[0], ValueError), outcome
        assert str(outcome[0]) == f"Queue {name!r} is closed"
        assert eventually(lambda: struct.unpack_from("<I", seg.buf, off)[0] == 0), "the waiter stayed counted"
        # nothing was lost or changed: another handle sees the queue as it was
        if call == "put_maxsize":
            assert other.get_nowait() == "the one item"
        elif call == "put_many_bytes":
            assert other.get_nowait() == b"f" * (SMALL - 8)
        elif call == "join":
            assert other.get_nowait() == "unfinished"
        assert other.empty() and not other.is_closed()
        other.put("still works")
        assert other.get_nowait() == "still works"
        other.close()


@pytest.mark.timeout(30)
def test_close_wakes_only_this_handles_calls(name: str) -> None:
    """A get blocked on another handle of the same process goes on waiting
    when one handle closes, and gets the next item."""
    with shmring.Queue(name=name) as q:
        other = shmring.Queue.open(name)
        got: list[Any] = []
        t = threading.Thread(target=lambda: got.append(other.get(timeout=OP_TIMEOUT)), daemon=True)
        t.start()
        time.sleep(0.1)
        q.close()
        time.sleep(0.1)
        assert t.is_alive() and got == []
        third = shmring.Queue.open(name)
        third.put("next")
        t.join(OP_TIMEOUT)
        assert got == ["next"]
        other.close()
        third.close()


def test_reallocate_msg_buffer_and_parse_messages(sq: shmring.Queue) -> None:
    sq.reallocate_msg_buffer(12345)
    assert sq.max_bytes_to_read == 12345
    msgs = [1, "two", [3]]
    buf = b"".join(struct.pack("N", len(d)) + d for d in map(sq.dumps, msgs))
    assert sq.parse_messages(3, len(buf), bytearray(buf)) == msgs
    assert sq.parse_messages(1, len(buf), buf) == [1]


def _json_dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _json_loads(data: bytes) -> Any:
    return json.loads(data.decode())


def test_custom_dumps_loads(name: str) -> None:
    with shmring.Queue(name=name, dumps=_json_dumps, loads=_json_loads) as q:
        q.put({"a": [1, 2]})
        assert q.get_bytes() == b'{"a": [1, 2]}'
        q.put([1, "x"])
        assert q.get() == [1, "x"]
        q.put_many([1, 2])
        assert q.get_many() == [1, 2]
        assert q.dumps((1, 2)) == b"[1, 2]" and q.loads(b"[3]") == [3]
        with pytest.raises(TypeError):
            q.put({1, 2})  # json cannot encode a set: raised in put(), nothing queued
        assert q.qsize() == 0
        other = shmring.Queue.open(name, dumps=_json_dumps, loads=_json_loads)
        q.put((1, 2))
        assert other.get() == [1, 2]
        copy = pickle.loads(pickle.dumps(q))  # keeps the serializers
        q.put({"k": None})
        assert copy.get() == {"k": None}
        other.close()
        copy.close()  # the last of the three handles out removes the queue: the name is free again
    with shmring.Queue(name=name, dumps=lambda o: bytearray(b"ba"), loads=bytes) as q:  # type: ignore[arg-type, return-value]
        q.put("anything")
        assert q.get() == b"ba"
    with shmring.Queue(name=name, dumps=lambda o: "not bytes") as q:  # type: ignore[arg-type, return-value]
        with pytest.raises(TypeError, match="bytes-like"):
            q.put(1)
        assert q.qsize() == 0


@pytest.mark.parametrize("kwargs", [{"dumps": 42}, {"loads": "not callable"}])
def test_refused_serializer_leaves_no_segment(name: str, kwargs: dict[str, Any]) -> None:
    try:
        with pytest.raises(TypeError, match="callables"):
            shmring.Queue(name=name, **kwargs)
        assert not (SHM / name).exists(), "Queue() raised, but left its segment behind in /dev/shm"
    finally:
        (SHM / name).unlink(missing_ok=True)  # report the leak once, as this failure


def test_unpicklable_object_raises_in_put(sq: shmring.Queue) -> None:
    # multiprocessing.Queue pickles in its feeder thread, so put() succeeds
    # there and the item is silently dropped; shmring pickles in put().
    with pytest.raises(TypeError):
        sq.put(threading.Lock())
    with pytest.raises(TypeError):
        sq.put_many([1, threading.Lock(), 3])  # all or nothing
    assert sq.qsize() == 0
    sq.put("next")
    assert sq.get() == "next"


def _bad_loads(data: bytes) -> Any:
    raise RuntimeError("cannot decode")


def test_loads_error_propagates_and_queue_stays_usable(name: str) -> None:
    with shmring.Queue(name=name, loads=_bad_loads) as q:
        q.put(1)
        with pytest.raises(RuntimeError, match="cannot decode"):
            q.get()
        q.put_bytes(b"raw")  # raw items never go through loads
        assert q.get() == b"raw"


class PrefixQueue(shmring.Queue):
    """faster-fifo style: a subclass that overrides dumps()/loads()."""

    def dumps(self, obj: Any) -> bytes:
        return b"PFX" + pickle.dumps(obj)

    def loads(self, data: bytes) -> Any:
        assert data[:3] == b"PFX", data[:10]
        return pickle.loads(data[3:])


class TaggedQueue(shmring.Queue):
    """A user subclass with an attribute of its own."""

    def __init__(self, *args: Any, tag: str = "none", **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.tag = tag

    def describe(self) -> str:
        return f"{self.tag}:{self.qsize()}"


def test_subclass_overriding_dumps_and_loads(name: str) -> None:
    with PrefixQueue(name=name) as q:
        q.put(("x", 1))
        assert q.get_bytes().startswith(b"PFX")
        q.put_many([1, 2])
        q.put(3)
        assert q.get() == 1 and q.get_many() == [2, 3]
        copy = pickle.loads(pickle.dumps(q))
        assert type(copy) is PrefixQueue
        copy.put("via copy")
        assert q.get_bytes().startswith(b"PFX")


def _subclass_child(q: Any, out: Any) -> None:
    out.put((type(q).__qualname__, getattr(q, "tag", None), q.describe(), q.get(timeout=OP_TIMEOUT)))
    q.put("from child")


@pytest.mark.timeout(60)
def test_subclass_pickled_to_a_spawn_child_keeps_its_class(name: str, new_name: Callable[[], str]) -> None:
    with TaggedQueue(5, name=name, tag="blue") as q, PrefixQueue(name=new_name()) as out:
        q.put(Point(1, 1))
        p = SPAWN.Process(target=_subclass_child, args=(q, out))
        p.start()
        assert out.get(timeout=30) == ("TaggedQueue", "blue", "blue:1", Point(1, 1))
        p.join(30)
        assert p.exitcode == 0
        assert q.get(timeout=OP_TIMEOUT) == "from child"
        assert q.maxsize == 5


def _custom_serializer_child(q: Any) -> None:
    q.put(q.get(timeout=OP_TIMEOUT) + ["child"])


@pytest.mark.timeout(60)
def test_custom_serializers_travel_to_a_spawn_child(name: str) -> None:
    with shmring.Queue(name=name, dumps=_json_dumps, loads=_json_loads) as q:
        q.put(["parent"])
        p = SPAWN.Process(target=_custom_serializer_child, args=(q,))
        p.start()
        p.join(30)
        assert p.exitcode == 0
        assert q.get_bytes() == b'["parent", "child"]'


def _pipe_child(conn: Any) -> None:
    q = conn.recv()  # pickled by name through a pipe: not inheritance
    q.put(("got it", type(q).__name__, q.owner))
    conn.close()


@pytest.mark.timeout(30)
def test_queue_travels_through_a_pipe_and_pool_arguments(sq: shmring.Queue) -> None:
    a, b = FORK.Pipe()
    p = FORK.Process(target=_pipe_child, args=(b,))
    p.start()
    a.send(sq)  # multiprocessing.Queue refuses this; shmring pickles by name
    assert sq.get(timeout=OP_TIMEOUT) == ("got it", "Queue", False)
    p.join(OP_TIMEOUT)
    assert p.exitcode == 0
    with FORK.Pool(2) as pool:
        res = pool.starmap_async(_put_into, [(sq, i) for i in range(6)]).get(OP_TIMEOUT)
    assert res == list(range(6))
    assert sorted(sq.get_many_nowait()) == list(range(6))


def _put_into(q: shmring.Queue, x: int) -> int:
    q.put(x)
    return x


def _spawn_grandparent(q: shmring.Queue) -> None:
    p = SPAWN.Process(target=_grandchild, args=(q,))
    p.start()
    p.join(30)
    q.put(("child", os.getpid(), p.exitcode))


@pytest.mark.timeout(60)
def test_spawn_grandchild_reattaches(sq: shmring.Queue) -> None:
    p = SPAWN.Process(target=_spawn_grandparent, args=(sq,))
    p.start()
    first, second = sq.get(timeout=40), sq.get(timeout=40)
    p.join(30)
    assert p.exitcode == 0
    assert first[0] == "grandchild" and first[2] == p.pid
    assert second == ("child", p.pid, 0)


# --------------------------------------------------------------------------
# JoinableQueue / SimpleQueue extras
# --------------------------------------------------------------------------


def test_joinable_join_timeout_raises_shmring_timeout(name: str) -> None:
    with shmring.JoinableQueue(name=name) as q:
        q.put(1)
        t0 = time.monotonic()
        with pytest.raises(shmring.Timeout):
            q.join(timeout=0.2)
        assert 0.18 <= time.monotonic() - t0 < 1.5
        with pytest.raises(TimeoutError):  # also the standard exception
            q.join(timeout=0)
        q.get()
        q.task_done()
        q.join(timeout=0)
        q.put_many([1, 2, 3])
        assert q.stats()["unfinished"] == 3
        q.get_many()
        for _ in range(3):
            q.task_done()
        q.join(timeout=1)
        with pytest.raises(ValueError, match="negative"):
            q.join(timeout=-1)


def test_simple_queue_is_an_unbounded_queue(name: str) -> None:
    with shmring.SimpleQueue(name=name) as q:
        assert isinstance(q, shmring.Queue) and q.maxsize == 0 and not q.bounded
        for i in range(1000):
            q.put(i)
        assert not q.full()
        assert [q.get() for _ in range(1000)] == list(range(1000))
        copy = pickle.loads(pickle.dumps(q))
        assert type(copy) is shmring.SimpleQueue
    with pytest.raises(TypeError):
        shmring.SimpleQueue(3)  # type: ignore[arg-type, call-arg]


# --------------------------------------------------------------------------
# Overflow chunks (unbounded queues) and bounded rings
# --------------------------------------------------------------------------


def test_overflow_keeps_fifo_and_removes_its_chunks(sq: shmring.Queue) -> None:
    items = [bytes([i % 251]) * 40_000 + i.to_bytes(4, "little") for i in range(150)]  # ~6 MB
    objs = [("obj", i) for i in range(50)]
    for i, it in enumerate(items):
        sq.put_bytes(it)  # never blocks: no consumer at all
        if i % 3 == 0:
            sq.put(objs[i // 3])
    expected: list[Any] = []
    for i, it in enumerate(items):
        expected.append(it)
        if i % 3 == 0:
            expected.append(objs[i // 3])
    st = sq.stats()
    assert st["items"] == len(expected) == sq.qsize()
    assert st["overflow_chunks"] >= 4
    assert len(chunk_files(sq.name)) == st["overflow_chunks"]
    assert sq.data_size() == sum(len(x) for x in items) + sum(len(sq.dumps(o)) for o in objs)
    got = [sq.get(timeout=OP_TIMEOUT) for _ in range(len(expected) // 2)]
    # more puts while chunks are being drained still come after the older ones
    sq.put_many(["tail-1", "tail-2"])
    got += sq.get_many(timeout=OP_TIMEOUT)
    assert got == expected + ["tail-1", "tail-2"]
    assert sq.empty() and sq.data_size() == 0
    assert chunk_files(sq.name) == [] and sq.stats()["overflow_chunks"] == 0
    sq.put("back in the main ring")
    assert sq.stats()["overflow_chunks"] == 0 and sq.stats()["used_bytes"] > 0
    assert sq.get() == "back in the main ring"


def test_overflow_with_maxsize_still_bounds_items(name: str) -> None:
    with shmring.Queue(5, name=name) as q:
        for i in range(5):
            q.put_bytes(bytes([i]) * (RING // 2))
        assert q.stats()["overflow_chunks"] >= 1
        with pytest.raises(queue.Full):
            q.put_bytes(b"x", block=False)
        assert [q.get_bytes()[0] for _ in range(5)] == [0, 1, 2, 3, 4]
        assert chunk_files(name) == []


@pytest.mark.parametrize("size", [RING - 8, RING - 7, RING + 1, 3 * RING + 12345])
def test_single_item_larger_than_the_ring_unbounded(sq: shmring.Queue, size: int) -> None:
    big = os.urandom(64) * (size // 64) + b"z" * (size % 64)
    sq.put("before")
    sq.put_bytes(big)
    sq.put("after")
    assert sq.qsize() == 3
    assert [sq.get(), sq.get_bytes(), sq.get()] == ["before", big, "after"]
    assert chunk_files(sq.name) == []
    sq.put(big)  # pickled, even larger
    assert sq.get() == big
    assert chunk_files(sq.name) == []


def test_single_item_larger_than_the_ring_bounded(name: str) -> None:
    with shmring.Queue(max_size_bytes=4096, name=name) as q:
        big = b"B" * (1 << 20)
        q.put("before")
        q.put(big, timeout=OP_TIMEOUT)  # cannot ever fit the ring: gets a chunk of its own
        st = q.stats()
        assert st["overflow_chunks"] == 1 and len(chunk_files(name)) == 1
        assert st["used_bytes"] < 4096
        assert q.get() == "before"
        assert q.get() == big
        assert chunk_files(name) == [] and q.stats()["overflow_chunks"] == 0
        q.put_bytes(b"s" * 100)
        q.put_bytes(big)
        assert q.get_many() == [b"s" * 100, big]
        assert chunk_files(name) == []


def test_bounded_ring_blocks_producers_with_full(name: str) -> None:
    with shmring.Queue(max_size_bytes=256, name=name) as q:
        assert q.bounded and q.capacity == 256
        for i in range(4):
            q.put_bytes(bytes([i]) * 56)  # 4 records of 64 bytes fill 256
        assert q.stats()["used_bytes"] == 256 and not q.full()  # full() is about maxsize only
        with pytest.raises(queue.Full):
            q.put_bytes(b"x", block=False)
        with pytest.raises(queue.Full):
            q.put_nowait(1)
        t0 = time.monotonic()
        with pytest.raises(queue.Full):
            q.put_bytes(b"x", timeout=0.2)
        assert 0.18 <= time.monotonic() - t0 < 1.5
        assert q.stats()["overflow_chunks"] == 0 and chunk_files(name) == []
        t = later(0.2, lambda: q.get_bytes(timeout=OP_TIMEOUT))
        t0 = time.monotonic()
        q.put_bytes(b"y" * 56, timeout=OP_TIMEOUT)
        assert time.monotonic() - t0 >= 0.15
        t.join(5)
        assert q.get_many() == [bytes([i]) * 56 for i in (1, 2, 3)] + [b"y" * 56]
        # wrap-around: records of different sizes around the ring
        for n in range(200):
            data = bytes([n]) * (n % 90)
            q.put_bytes(data, timeout=1)
            assert q.get_bytes(timeout=1) == data


def test_ring_exactly_full_then_drained(name: str) -> None:
    with shmring.Queue(max_size_bytes=64, name=name) as q:
        q.put_bytes(b"a" * 56)  # one record of exactly 64 bytes
        assert q.stats()["used_bytes"] == 64
        with pytest.raises(queue.Full):
            q.put_bytes(b"", block=False)
        assert q.get_bytes() == b"a" * 56
        q.put_bytes(b"")
        q.put_bytes(b"b" * 40)
        assert q.stats()["used_bytes"] == 8 + 48
        assert q.get_bytes() == b"" and q.get_bytes() == b"b" * 40


# --------------------------------------------------------------------------
# An empty ring takes any record that fits the ring, wherever its tail is
# --------------------------------------------------------------------------

CTRL_HEAD, CTRL_TAIL = 152, 160  # ring counters in the queue's control block (docs/PROTOCOL.md 5.1)
SMALL = 256  # ring bytes of the queues below: 32 record positions


def ring_counters(seg: shmring.Segment) -> tuple[int, int]:
    head, tail = struct.unpack_from("<QQ", seg.buf, CTRL_HEAD)
    return head, tail


def park_tail(q: shmring.Queue, seg: shmring.Segment, pos: int) -> None:
    """Leave the (empty) ring with its tail at offset ``pos``, by records that
    fit exactly before the end (so none of them needs padding)."""
    head, tail = ring_counters(seg)
    assert head == tail, "park_tail needs an empty ring"
    at = tail % SMALL
    if pos < at:
        q.put_bytes(b"\0" * (SMALL - at - 8), block=False)  # exactly to the end
        q.get_bytes(block=False)
        at = 0
    if pos > at:
        q.put_bytes(b"\0" * (pos - at - 8), block=False)
        q.get_bytes(block=False)
    head, tail = ring_counters(seg)
    assert head == tail and tail % SMALL == pos


def test_bounded_queue_places_a_record_that_fits_an_empty_ring(name: str) -> None:
    """Regression (issue 9, item 4): after one 4072-byte item went through an
    8 KiB ring, a 4112-byte item fitted the ring but not after the padding in
    front of it, and put waited for room on an empty queue until Full."""
    with shmring.Queue(max_size_bytes=8192, name=name) as q:
        q.put_bytes(b"x" * 4072)
        assert q.get_bytes() == b"x" * 4072
        q.put_bytes(b"y" * 4112, timeout=2)
        assert q.stats()["used_bytes"] == record_size(4112)  # the padding was stepped over, not kept
        assert q.get_bytes(timeout=OP_TIMEOUT) == b"y" * 4112
        assert q.empty() and q.stats()["used_bytes"] == 0


@pytest.mark.parametrize("pos", range(0, SMALL, 8))
def test_empty_ring_takes_any_fitting_record_at_every_offset(pos: int, name: str) -> None:
    """Tail parked at every offset of an empty ring; records of every size
    that matters there: empty payload, one record position short of the end,
    an exact fit, one position past the end (the record wraps), and the whole
    ring.  Each is placed at once, whole, where the layout says, and comes
    back intact."""
    contig = SMALL - pos
    needs = sorted({n for n in (8, contig - 8, contig, contig + 8, SMALL) if 8 <= n <= SMALL})
    with shmring.Queue(max_size_bytes=SMALL, name=name) as q, shmring.Segment.open(name) as seg:
        for need in needs:
            park_tail(q, seg, pos)
            _, tail = ring_counters(seg)
            payload = bytes([need % 251]) * (need - 8 - (need > 8))  # odd lengths too: padded to 8
            assert record_size(len(payload)) == need
            q.put_bytes(payload, block=False)
            head2, tail2 = ring_counters(seg)
            assert tail2 - head2 == need, "the empty ring keeps no padding in front of the record"
            start = tail2 - need
            assert start % SMALL == (pos if need <= contig else 0), (pos, need)
            assert start == (tail if need <= contig else tail + contig)
            if need == SMALL:
                with pytest.raises(queue.Full):
                    q.put_bytes(b"", block=False)  # full: even an empty record waits
            assert q.get_bytes(block=False) == payload
            assert q.empty() and q.stats()["used_bytes"] == 0


@pytest.mark.parametrize("pos", range(16, SMALL - 8, 8))
def test_one_short_of_the_end_then_the_next_record_pads(pos: int, name: str) -> None:
    """A record that leaves exactly one 8-byte position before the end: the
    next one (the ring is not empty) goes to offset 0 behind an 8-byte
    padding record, and both come out in order."""
    contig = SMALL - pos
    with shmring.Queue(max_size_bytes=SMALL, name=name) as q, shmring.Segment.open(name) as seg:
        park_tail(q, seg, pos)
        first = b"a" * (contig - 16)  # a record of contig - 8 bytes
        q.put_bytes(first, block=False)
        q.put_bytes(b"b" * 8, block=False)
        head, tail = ring_counters(seg)
        assert tail - head == (contig - 8) + 8 + 16  # the padding stays until a get steps over it
        assert struct.unpack_from("<II", seg.buf, 384 + SMALL - 8) == (0, 0x50)
        assert tail % SMALL == 16
        assert q.get_many_nowait() == [first, b"b" * 8]
        assert q.stats()["used_bytes"] == 0


def test_ring_that_is_not_empty_still_waits_for_room(name: str) -> None:
    """Only an empty ring restarts at offset 0: a record behind another one
    waits for the room it needs after the padding, as before."""
    with shmring.Queue(max_size_bytes=SMALL, name=name) as q, shmring.Segment.open(name) as seg:
        park_tail(q, seg, 200)
        q.put_bytes(b"k" * 8, block=False)  # 16 bytes at 200: 40 left before the end
        with pytest.raises(queue.Full):
            q.put_bytes(b"w" * 200, block=False)  # 208 bytes: needs 40 + 208 > 240 free
        assert ring_counters(seg)[1] % SMALL == 216
        assert q.get_bytes(block=False) == b"k" * 8
        q.put_bytes(b"w" * 200, block=False)  # now empty: placed from offset 0
        assert q.get_bytes(block=False) == b"w" * 200


@pytest.mark.parametrize("pos", range(0, SMALL, 8))
def test_put_many_fits_an_empty_ring_at_every_offset(pos: int, name: str) -> None:
    """A batch that fits the ring (records of SMALL bytes in all) is placed on
    an empty ring wherever its tail is: one record before the end and the
    next one past it would need more than the ring with the padding between."""
    with shmring.Queue(max_size_bytes=SMALL, name=name, dumps=bytes, loads=bytes) as q, \
            shmring.Segment.open(name) as seg:
        park_tail(q, seg, pos)
        batch = [b"1" * (SMALL - 32 - 8), b"2" * (32 - 8)]  # records of SMALL - 32 and 32 bytes
        q.put_many_nowait(batch)
        head, tail = ring_counters(seg)
        assert tail - head == SMALL
        assert q.get_many_nowait() == batch


# --------------------------------------------------------------------------
# Bugs found while writing these tests (see the module report)
# --------------------------------------------------------------------------


def _mapped_chunks(name: str) -> list[str]:
    with open("/proc/self/maps") as f:
        return [line.split(maxsplit=5)[-1].strip() for line in f if f"/{name}.q" in line]


def test_producer_unmaps_chunks_retired_by_another_handle(sq: shmring.Queue) -> None:
    """A handle that only puts must not keep chunks that consumers retired:
    the mapping pins the (unlinked) tmpfs pages, so a long-running producer
    would grow by a chunk (>= 1 MiB) per overflow, forever."""
    consumer = pickle.loads(pickle.dumps(sq))  # a second handle, as another process would hold
    for _ in range(8):
        sq.put_bytes(b"p" * 400_000)
    assert sq.stats()["overflow_chunks"] >= 2
    for _ in range(8):
        consumer.get_bytes()
    assert chunk_files(sq.name) == []
    sq.put("one more")  # the producer takes the lock again and sees the chain is empty
    assert consumer.get() == "one more"
    stale = _mapped_chunks(sq.name)
    assert stale == [], f"the producer handle still maps {len(stale)} retired chunk(s): {stale[:3]}"


def test_queue_named_like_another_queues_chunk_survives(name: str) -> None:
    """A queue may legally be called '<x>.q0'; removing queue '<x>' (or its
    overflow) must not unlink it."""
    with shmring.Queue(name=f"{name}.q0") as neighbour:
        neighbour.put("precious")
        with shmring.Queue(name=name) as q:
            q.put(1)
        assert (SHM / f"{name}.q0").exists(), "closing queue X unlinked the unrelated queue 'X.q0'"
        with shmring.Queue(name=name) as q:
            try:
                q.put_bytes(b"x" * (RING + 1))  # wants chunk 'X.q0': may fail, must not take the name over
            except OSError:
                pass
            try:
                again = shmring.Queue.open(f"{name}.q0")
            except ValueError as e:
                pytest.fail(f"overflowing queue X replaced the unrelated queue 'X.q0' with its chunk: {e}")
            assert again.get_nowait() == "precious"


def test_unlink_keeps_overflow_items_for_attached_handles(name: str) -> None:
    """unlink() promises that attached processes keep working; the items in
    overflow chunks must not vanish with the chunk names (and qsize() must
    not keep counting items that get() can no longer reach)."""
    q = shmring.Queue(name=name)
    try:
        for i in range(3):
            q.put_bytes(bytes([i]) * 600_000)  # main ring, then two chunks
        assert q.stats()["overflow_chunks"] == 2
        attached = shmring.Queue.open(name)  # has not mapped any chunk yet
        q.unlink()
        got: list[Any] = []
        for _ in range(3):
            try:
                got.append(attached.get_bytes(timeout=0.5)[:1])
            except queue.Empty:
                got.append(f"Empty (qsize() == {attached.qsize()})")
        assert got == [b"\0", b"\1", b"\2"], got
        attached.close()
    finally:
        q.close()


# --------------------------------------------------------------------------
# Signals, clean exits, resource tracker
# --------------------------------------------------------------------------


class _Interrupted(Exception):
    pass


def _raise_interrupted(*_: Any) -> None:
    raise _Interrupted


@pytest.mark.parametrize("call", ["get", "get_many", "put_full", "join"])
def test_blocked_call_is_interrupted_by_a_signal_handler(name: str, call: str) -> None:
    with shmring.JoinableQueue(1, name=name) as q:
        if call == "put_full":
            q.put("x")
        if call == "join":
            q.put("x")
        fn: Callable[[], Any] = {
            "get": lambda: q.get(),
            "get_many": lambda: q.get_many(),
            "put_full": lambda: q.put("y"),
            "join": lambda: q.join(),
        }[call]
        old = signal.signal(signal.SIGALRM, _raise_interrupted)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.2)
            t0 = time.monotonic()
            with pytest.raises(_Interrupted):
                fn()
            assert time.monotonic() - t0 < 2.0
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        # still usable afterwards
        if call in ("put_full", "join"):
            assert q.get_many_nowait() == ["x"]
        q.put("z")
        assert q.get(timeout=1) == "z"


EXIT_SCRIPT = """
import sys, shmring
q = shmring.Queue(name=sys.argv[1])
j = shmring.JoinableQueue(3, name=sys.argv[1] + "-j")
for i in range(1000):
    q.put(i)
q.put_bytes(b"x" * (3 << 20))   # an overflow chunk nobody consumes
j.put("unfinished task")
print("exiting", flush=True)
"""


@pytest.mark.timeout(30)
def test_interpreter_exit_with_unconsumed_items_does_not_hang(name: str) -> None:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, name], capture_output=True, text=True, timeout=20)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "exiting\n" and proc.stderr == ""
    assert elapsed < 5, f"exit took {elapsed:.1f} s"
    assert not (SHM / name).exists() and not (SHM / f"{name}-j").exists() and chunk_files(name) == []


def _put_and_exit(q: shmring.Queue) -> None:
    for i in range(500):
        q.put(b"%d" % i * 100)


@pytest.mark.timeout(30)
def test_child_exits_at_once_with_its_items_unconsumed(sq: shmring.Queue) -> None:
    # multiprocessing.Queue's feeder thread can make this join hang (see
    # "Joining processes that use queues"); there is no feeder here.
    p = FORK.Process(target=_put_and_exit, args=(sq,))
    t0 = time.monotonic()
    p.start()
    p.join(10)
    assert p.exitcode == 0 and time.monotonic() - t0 < 5
    assert sq.qsize() == 500
    assert sq.get_many()[-1] == b"499" * 100


TRACKER_SCRIPT = """
import multiprocessing as mp, sys, shmring

def child(q, out):
    q.put(("child", q.get(timeout=20)))
    out.put_bytes(b"y" * (3 << 20))   # makes an overflow chunk from the child

if __name__ == "__main__":
    ctx = mp.get_context("spawn")
    with shmring.Queue(name=sys.argv[1]) as q, shmring.SimpleQueue(name=sys.argv[1] + "-o") as out:
        q.put("hello")
        p = ctx.Process(target=child, args=(q, out))
        p.start()
        p.join(30)
        assert p.exitcode == 0, p.exitcode
        assert q.get(timeout=20) == ("child", "hello")
        assert out.get_bytes(timeout=20) == b"y" * (3 << 20)
        q.put_bytes(b"z" * (3 << 20))   # left in a chunk: removed by the with block
    print("ok", flush=True)
"""


@pytest.mark.timeout(60)
def test_no_resource_tracker_warnings(name: str, tmp_path: Path) -> None:
    script = tmp_path / "tracker.py"
    script.write_text(textwrap.dedent(TRACKER_SCRIPT))
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(script), name], capture_output=True, text=True, timeout=50
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ok\n"
    assert "resource_tracker" not in proc.stderr and "leaked" not in proc.stderr
    assert proc.stderr == ""
    assert not (SHM / name).exists() and not (SHM / f"{name}-o").exists() and chunk_files(name) == []


# --------------------------------------------------------------------------
# Argument checking
# --------------------------------------------------------------------------


def _leftovers(name: str) -> list[str]:
    return sorted(p.name for p in SHM.iterdir() if p.name.startswith(name))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"maxsize": "3"}, TypeError, "maxsize must be int"),
        ({"maxsize": 2.0}, TypeError, "maxsize must be int"),
        ({"maxsize": None}, TypeError, "maxsize must be int"),
        ({"maxsize": True}, TypeError, "maxsize must be int"),
        ({"max_size_bytes": 63}, ValueError, "at least 64"),
        ({"max_size_bytes": 0}, ValueError, "at least 64"),
        ({"max_size_bytes": -4096}, ValueError, "at least 64"),
        ({"max_size_bytes": "4096"}, TypeError, "max_size_bytes must be int"),
        ({"max_size_bytes": 4096.0}, TypeError, "max_size_bytes must be int"),
        ({"spin_ns": -1}, ValueError, "spin_ns"),
        ({"spin_ns": 10**9}, ValueError, "spin_ns"),
        ({"mode": 0o1777}, ValueError, "mode"),
        ({"mode": -1}, ValueError, "mode"),
    ],
)
def test_bad_constructor_arguments(name: str, kwargs: dict[str, Any], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        shmring.Queue(name=name, **kwargs)
    assert _leftovers(name) == []


@pytest.mark.parametrize("size", [2**64 + 64, 2**65 + 1024])
def test_max_size_bytes_too_large_is_refused(name: str, size: int) -> None:
    # 2**64 + 64 must not silently become a 64-byte ring
    with pytest.raises((OverflowError, ValueError)):
        q = shmring.Queue(max_size_bytes=size, name=name)
        q.close()
        q.unlink()
        pytest.fail(f"max_size_bytes={size} was accepted as a ring of {q.capacity} bytes")
    assert _leftovers(name) == []


@pytest.mark.parametrize("bad", ["", "has/slash", ".hidden", "spa ce", 42])
def test_bad_names(bad: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        shmring.Queue(name=bad)


def test_name_length_limit_and_existing_name(name: str) -> None:
    long = name + "a" * (200 - len(name))
    with shmring.Queue(name=long) as q:  # 200 characters: chunks "<name>.q<N>" still fit
        q.put_bytes(b"x" * (RING + 1))
        assert len(chunk_files(long)) == 1
        assert q.get_bytes() == b"x" * (RING + 1)
    with pytest.raises(ValueError, match="at most 200"):
        shmring.Queue(name=long + "a")
    with shmring.Queue(name=name):
        with pytest.raises(FileExistsError):
            shmring.Queue(name=name)
    assert _leftovers(name) == []


def test_bad_call_arguments(sq: shmring.Queue) -> None:
    calls: list[tuple[Callable[[], Any], type[Exception]]] = [
        (lambda: sq.put(1, timeout=-1), ValueError),
        (lambda: sq.get(timeout=-0.001), ValueError),
        (lambda: sq.put_many([1], timeout=-1), ValueError),
        (lambda: sq.get_many(timeout=-1), ValueError),
        (lambda: sq.put_bytes(b"", timeout=-1), ValueError),
        (lambda: sq.get_bytes(timeout=-1), ValueError),
        (lambda: sq.get(timeout="1"), TypeError),  # type: ignore[arg-type]
        (lambda: sq.get_many(max_messages_to_get=0), ValueError),
        (lambda: sq.get_many_nowait(max_messages_to_get=-1), ValueError),
        (lambda: sq.get_many_nowait(max_messages_to_get="x"), TypeError),  # type: ignore[arg-type]
        (lambda: sq.put_many(5), TypeError),  # type: ignore[arg-type]
        (lambda: sq.put(), TypeError),  # type: ignore[call-arg]
        (lambda: sq.put(1, True, 1, 4), TypeError),  # type: ignore[call-arg]
        (lambda: sq.get(nonsense=1), TypeError),  # type: ignore[call-arg]
    ]
    for call, exc in calls:
        with pytest.raises(exc):
            call()
    assert sq.qsize() == 0
    # a negative timeout is ignored when not blocking, as block=False ignores any timeout
    with pytest.raises(queue.Empty):
        sq.get(False, -1)
