"""shmring.Queue handles: attributes, opening by name, pickling (through pipes,
pools and spawn children), ownership (the last handle out removes the queue
and its chunks), closing (per handle; from another thread it wakes a blocked
call), signals and clean exits, the JoinableQueue and SimpleQueue extras,
and argument checking.

Helpers at module level run in child processes (spawn re-imports this
module), so they must stay importable.
"""

from __future__ import annotations

import gc
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import shmring

from _queue_helpers import OP_TIMEOUT, RING, SMALL, _grandchild, chunk_files
from conftest import CONTEXTS, FORK, SHM, SPAWN, eventually


# -- attributes, opening, pickling, ownership -----------------------------------------


def test_attributes_and_repr(name: str) -> None:
    with shmring.Queue(7, name=name) as q:
        assert q.name == name and q.owner
        assert (q.maxsize, q.capacity, q.max_size_bytes, q.max_bytes_to_read) == (7, RING, RING, RING)
        assert q.bounded is False
        assert repr(q) == f"<shmring.Queue {name!r}: maxsize=7, ring of {RING} bytes, overflow chunks beyond>"
        stats = q.stats()
        assert stats.pop("queue_id") != 0
        assert stats == {
            "capacity": RING, "maxsize": 7, "items": 0, "bytes": 0, "puts": 0, "gets": 0, "unfinished": 0,
            "overflow_chunks": 0, "used_bytes": 0, "holder": 0, "bounded": False, "chunk_head": 0, "chunk_tail": 0,
            "getters_waiting": 0, "putters_waiting": 0, "joiners_waiting": 0, "bytes_put": 0, "bytes_got": 0,
            "holder_alive": False,
        }
        seg = shmring.Segment.open(name)
        assert seg.info().kind == "queue" and seg.size == 384 + RING
        seg.close()
    with shmring.Queue(max_size_bytes=1000, name=name) as q:
        assert (q.maxsize, q.capacity, q.max_size_bytes, q.bounded) == (0, 1000, 1000, True)
        assert repr(q) == f"<shmring.Queue {name!r}: no item limit, max_size_bytes=1000>"
    assert repr(q) == f"<shmring.Queue {name!r} (closed): no item limit, max_size_bytes=1000>"
    with shmring.Queue(max_size_bytes=100, name=name) as q:
        assert q.capacity == 104  # rounded up to a multiple of 8
    with shmring.Queue(max_size_bytes=64, name=name) as q:
        assert q.capacity == 64
    for tiny in (1, 8, 60):  # faster-fifo accepts tiny rings: ours are 64 bytes at least
        with shmring.Queue(max_size_bytes=tiny, name=name) as q:
            assert (q.capacity, q.max_size_bytes, q.bounded) == (64, 64, True)
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


def test_pickled_queue_state_is_plain(name: str) -> None:
    with shmring.Queue(name=name) as q:
        clone = pickle.loads(pickle.dumps(q))
        q.put(1)
        assert clone.get(timeout=1) == 1
        clone.close()


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


# -- closing ------------------------------------------------------------------------


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


# -- signals, clean exits, resource tracker ------------------------------------------


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


# -- JoinableQueue / SimpleQueue extras ----------------------------------------------


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


# -- argument checking --------------------------------------------------------------


def _leftovers(name: str) -> list[str]:
    return sorted(p.name for p in SHM.iterdir() if p.name.startswith(name))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"maxsize": "3"}, TypeError, "maxsize must be int"),
        ({"maxsize": 2.0}, TypeError, "maxsize must be int"),
        ({"maxsize": None}, TypeError, "maxsize must be int"),
        ({"maxsize": True}, TypeError, "maxsize must be int"),
        ({"max_size_bytes": 0}, ValueError, "at least 1 .*got 0$"),
        ({"max_size_bytes": -4096}, ValueError, "at least 1 .*got -4096$"),
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
