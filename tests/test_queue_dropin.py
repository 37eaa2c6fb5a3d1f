"""Code written for faster_fifo.Queue (or multiprocessing.Queue) runs
unchanged on shmring.Queue: the attributes faster-fifo's users read
(``last_error``), tiny byte capacities, ``full()`` after a put
refused for lack of bytes, the closed-handle error a faster-fifo consumer
loop catches, and ``Queue[int]`` at run time."""

from __future__ import annotations

import pickle
import queue
import threading
import time
from collections.abc import Callable

import pytest

import shmring
from conftest import FORK

STOP_WITHIN = 5.0  # s: threads told to stop have stopped by then


# -- last_error -------------------------------------------------------------------


def test_last_error_is_none_until_a_call_fails(name: str) -> None:
    with shmring.Queue(name=name) as q:
        assert q.last_error is None
        with pytest.raises(queue.Empty):
            q.get_nowait()  # an ordinary outcome, not an error
        assert q.last_error is None
        q.put(1)
        assert q.get() == 1 and q.last_error is None


def test_last_error_says_what_failed(name: str) -> None:
    def bad_loads(data: bytes) -> object:
        raise RuntimeError("cannot decode this")

    with shmring.Queue(name=name, loads=bad_loads) as q:
        q.put("x")
        with pytest.raises(RuntimeError):
            q.get()
        assert q.last_error == "cannot decode this"
        with pytest.raises((pickle.PicklingError, AttributeError)):
            q.put(lambda: 0)  # lambdas do not pickle
        assert q.last_error is not None and "lambda" in q.last_error
        q.close()
        with pytest.raises(shmring.QueueClosed):
            q.put(2)
        assert q.last_error == f"Queue {name!r} is closed"


def test_last_error_is_per_handle_and_not_pickled(name: str) -> None:
    with shmring.Queue(name=name) as q:
        other = shmring.Queue.open(name)
        other.close()
        with pytest.raises(ValueError):
            other.get_nowait()
        assert other.last_error is not None and q.last_error is None
        clone = pickle.loads(pickle.dumps(q))
        assert clone.last_error is None
        clone.close()


# -- tiny byte capacities and full() ----------------------------------------------------


@pytest.mark.parametrize("max_size_bytes", [1, 60, 64])
def test_full_after_a_put_refused_for_bytes(name: str, max_size_bytes: int) -> None:
    with shmring.Queue(max_size_bytes=max_size_bytes, name=name) as q:
        assert not q.full()
        put = 0
        with pytest.raises(queue.Full):
            while True:
                q.put_nowait(put)
                put += 1
        assert put >= 1 and q.full() and q.qsize() == put
        assert q.last_error is None  # Full is not an error
        assert q.get() == 0
        assert not q.full()  # room for another small item again
        q.put_nowait(put)
        assert [q.get() for _ in range(q.qsize())] == list(range(1, put + 1))


def test_full_tracks_the_refused_item_until_there_is_room_for_it(name: str) -> None:
    with shmring.Queue(max_size_bytes=128, name=name) as q:
        q.put_bytes(b"a" * 40)  # a 48-byte record of 128
        assert not q.full()
        with pytest.raises(queue.Full):
            q.put_bytes(b"b" * 100, block=False)  # needs 112
        assert q.full(), "the ring cannot take what was just refused"
        q.put_bytes(b"c")  # smaller items still fit; a successful put forgets the refusal
        assert not q.full()
        with pytest.raises(queue.Full):
            q.put_bytes(b"b" * 100, timeout=0.01)
        assert q.full()
        assert q.get_bytes() == b"a" * 40 and q.get_bytes() == b"c"
        assert not q.full()  # the refused item fits now
        q.put_bytes(b"b" * 100)
        assert q.get_bytes() == b"b" * 100


def test_full_is_maxsize_on_a_queue_without_a_byte_bound(name: str) -> None:
    with shmring.Queue(2, name=name) as q:
        q.put(b"x" * 100_000)  # an overflow chunk: never full for bytes
        assert not q.full()
        q.put(1)
        assert q.full()
        q.get()
        assert not q.full()


# -- the closed-handle error ----------------------------------------------------------------


def test_queue_closed_is_a_value_error_and_an_empty(name: str) -> None:
    assert issubclass(shmring.QueueClosed, ValueError)
    assert issubclass(shmring.QueueClosed, queue.Empty)
    assert issubclass(shmring.QueueClosed, shmring.Error)
    with shmring.Queue(name=name) as q:
        q.close()
        for call in (q.get_nowait, lambda: q.put(1), lambda: q.get_many(timeout=0.01), q.get_many_nowait):
            with pytest.raises(shmring.QueueClosed, match="is closed"):
                call()


def _faster_fifo_consumer(q: shmring.Queue[int], got: list[int], stopped: list[bool]) -> None:
    """A consumer loop as faster-fifo's users write it: it catches Empty only."""
    while True:
        try:
            got.extend(q.get_many(timeout=0.05))
        except queue.Empty:
            if q.is_closed():
                break
    stopped.append(True)


def test_faster_fifo_consumer_threads_stop_after_a_local_close(name: str) -> None:
    with shmring.Queue(name=name) as q:
        got: list[int] = []
        stopped: list[bool] = []
        threads = [threading.Thread(target=_faster_fifo_consumer, args=(q, got, stopped)) for _ in range(3)]
        for t in threads:
            t.start()
        q.put_many(list(range(100)))
        deadline = time.monotonic() + STOP_WITHIN
        while len(got) < 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        q.close()
        for t in threads:
            t.join(STOP_WITHIN)
        assert not any(t.is_alive() for t in threads), "a consumer thread did not stop after close()"
        assert stopped == [True] * 3 and sorted(got) == list(range(100))


def _produce_and_close(q: shmring.Queue[int], n: int) -> None:
    q.put_many(list(range(n)))
    q.close()


def test_a_producer_closing_in_another_process_does_not_stop_the_consumer(name: str) -> None:
    # close() is per handle (multiprocessing's meaning); faster-fifo's "some
    # process closed it" is closed_anywhere(), a mark that stops nothing.
    with shmring.Queue(name=name) as q:
        p = FORK.Process(target=_produce_and_close, args=(q, 50))
        p.start()
        p.join(STOP_WITHIN * 3)
        assert p.exitcode == 0
        assert q.closed_anywhere() and not q.is_closed()
        assert sorted(q.get_many(timeout=STOP_WITHIN)) == list(range(50))
        q.put(50)
        assert q.get(timeout=STOP_WITHIN) == 50


# -- generic at run time ------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda n: shmring.Queue[int](name=n), lambda n: shmring.JoinableQueue[str](name=n),
                                  lambda n: shmring.SimpleQueue[bytes](name=n)])
def test_subscripted_queue_classes_make_queues(name: str, make: Callable[[str], shmring.Queue[object]]) -> None:
    q = make(name)
    try:
        assert isinstance(q, shmring.Queue)
        q.put(7)
        assert q.get() == 7
        clone = pickle.loads(pickle.dumps(q))  # pickles by name, as an unsubscripted one
        assert type(clone) is type(q) and clone.name == name
        clone.close()
    finally:
        q.close()
