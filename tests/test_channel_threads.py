"""Threads sharing one Channel handle (issue 9): calls on one end are
serialised (every message delivered once, in each thread's order); a call
that would wait for another thread's call honours its timeout and Ctrl-C;
close() from another thread wakes a blocked call (Closed) and returns once no
call is inside; a loan belongs to the thread that opened it.
"""

from __future__ import annotations

import os
import signal
import struct
import threading
import time
from typing import Any

import pytest

import shmring

from _channel_helpers import STRATEGIES
from conftest import STEP, Worker, check_each_threads_order, numbers_until_end, started, wait_inside


def test_try_calls_do_not_wait_for_another_threads_call(ch: shmring.Channel) -> None:
    """A thread blocked in recv holds the receiving end: try_recv from
    another thread returns None at once (it never waits), recv(timeout=0)
    times out, and the sending end stays free."""
    got: list[bytes] = []
    t = threading.Thread(target=lambda: got.append(ch.recv(timeout=10)))
    t.start()
    deadline = time.monotonic() + 10
    while True:  # until the thread is inside recv
        with pytest.raises(shmring.Timeout) as info:
            ch.recv(timeout=0)
        if "another thread" in str(info.value):
            break
        assert time.monotonic() < deadline, "the thread never entered recv"
        time.sleep(0.01)
    assert ch.try_recv() is None
    ch.send(b"wake")
    t.join(10)
    assert not t.is_alive() and got == [b"wake"]


def test_four_threads_sending_on_one_handle_deliver_every_message_once(name: str) -> None:
    per_thread = 3000
    with shmring.Channel.create(name, 4096) as ch:
        def sender(tid: int) -> None:
            for seq in range(per_thread):
                if seq % 3 == 0:
                    ch.send(struct.pack("<II", tid, seq), timeout=STEP)
                elif seq % 3 == 1:
                    assert ch.send_many([struct.pack("<II", tid, seq)], timeout=STEP) == 1
                else:
                    with ch.reserve(8, timeout=STEP) as buf:
                        struct.pack_into("<II", buf, 0, tid, seq)

        threads = [Worker(lambda tid=tid: sender(tid)) for tid in range(4)]  # type: ignore[misc]
        check_each_threads_order(lambda: ch.recv(timeout=STEP), threads, per_thread)
        assert ch.try_recv() is None


def test_two_threads_receiving_on_one_handle_share_the_stream(name: str) -> None:
    n = 6000
    with shmring.Channel.create(name, 1024) as ch:
        threads = started([Worker(lambda: numbers_until_end(lambda: ch.recv(timeout=STEP))) for _ in range(2)])
        for i in range(n):
            ch.send(b"%d" % i, timeout=STEP)
        ch.send_many([b"end", b"end"], timeout=STEP)
        results = [t.finish() for t in threads]
        assert all(kind == "returned" for kind, _ in results)
        got = [x for _, part in results for x in part]
        assert sorted(got) == list(range(n))  # each exactly once
        for _, part in results:
            assert part == sorted(part)  # each thread saw its share in order


@pytest.mark.parametrize("wait", STRATEGIES)
def test_close_from_another_thread_wakes_a_blocked_recv(wait: str, name: str) -> None:
    with shmring.Channel.create(name, 1024, wait=wait) as ch:  # type: ignore[arg-type]
        waiter = Worker(ch.recv)  # no timeout: only close() can end it
        waiter.start()
        wait_inside(lambda: ch.recv(timeout=0), "recv")
        ch.close()
        assert ch.closed
        kind, exc = waiter.finish()
        assert kind == "raised" and isinstance(exc, shmring.Closed), exc
        with pytest.raises(shmring.Closed, match="handle is closed"):
            ch.recv(timeout=0)


@pytest.mark.parametrize("wait", STRATEGIES)
def test_close_from_another_thread_wakes_a_blocked_send(wait: str, name: str) -> None:
    with shmring.Channel.create(name, 256, wait=wait) as ch:  # type: ignore[arg-type]
        reader = shmring.Channel.open(name)
        assert reader.try_recv() is None  # a live reader holds its end
        while ch.try_send(b"f" * 24):
            pass
        waiter = Worker(lambda: ch.send(b"f" * 24))
        waiter.start()
        wait_inside(lambda: ch.send(b"", timeout=0), "send")
        ch.close()
        kind, exc = waiter.finish()
        assert kind == "raised" and isinstance(exc, shmring.Closed), exc
        received = reader.recv_many(100, timeout=1)
        assert received == [b"f" * 24] * 8  # what was sent before; nothing of the interrupted send
        with pytest.raises(shmring.Closed):
            reader.recv(timeout=1)  # the writer's close() ended the stream
        reader.close()


def test_close_wakes_the_threads_waiting_for_the_end_too(name: str) -> None:
    with shmring.Channel.create(name, 1024) as ch:
        first = Worker(ch.recv)
        first.start()
        wait_inside(lambda: ch.recv(timeout=0), "recv")
        second = Worker(ch.recv)  # waits for the first to leave the receiving end
        second.start()
        assert second.entered.wait(STEP)
        time.sleep(0.05)
        ch.close()
        for w in (first, second):
            kind, exc = w.finish()
            assert kind == "raised" and isinstance(exc, shmring.Closed), exc


def test_waiting_for_another_threads_call_honours_the_timeout(name: str) -> None:
    with shmring.Channel.create(name, 1024) as ch:
        holder = Worker(lambda: ch.recv(timeout=STEP))
        holder.start()
        wait_inside(lambda: ch.recv(timeout=0), "recv")
        with pytest.raises(shmring.Timeout, match="another thread"):
            ch.recv(timeout=0.1)
        ch.send(b"for the holder")
        assert holder.finish() == ("returned", b"for the holder")


def test_waiting_for_another_threads_call_wakes_for_ctrl_c(name: str) -> None:
    with shmring.Channel.create(name, 1024) as ch:
        holder = Worker(lambda: ch.recv(timeout=STEP))
        holder.start()
        wait_inside(lambda: ch.recv(timeout=0), "recv")
        timer = threading.Timer(0.1, os.kill, args=(os.getpid(), signal.SIGINT))
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                ch.recv(timeout=STEP)
        finally:
            timer.cancel()
        ch.send(b"x")
        assert holder.finish() == ("returned", b"x")


def test_close_inside_a_call_of_the_same_thread_is_refused(name: str) -> None:
    """A signal handler that runs inside a blocked recv cannot wait for the
    call it interrupted: close() there raises RuntimeError, every time."""
    with shmring.Channel.create(name, 1024) as ch:
        def handler(signum: int, frame: Any) -> None:
            ch.close()

        old = signal.signal(signal.SIGALRM, handler)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            with pytest.raises(RuntimeError, match="inside a call on this handle"):
                ch.recv(timeout=STEP)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        assert not ch.closed
        ch.send(b"still usable")
        assert ch.recv(timeout=1) == b"still usable"


def test_other_threads_wait_for_a_loan_and_its_own_thread_is_refused(name: str) -> None:
    with shmring.Channel.create(name, 1024) as ch:
        with ch.reserve(5) as buf:
            buf[:] = b"first"
            with pytest.raises(RuntimeError, match="reserve"):
                ch.send(b"mine")  # this thread would wait for itself
            other = Worker(lambda: ch.send(b"second", timeout=STEP))
            other.start()
            other.join(0.2)
            assert other.is_alive()  # it waits for the loan to complete
            exiter = Worker(lambda: buf.__exit__(None, None, None))
            exiter.start()
            kind, exc = exiter.finish()
            assert kind == "raised" and isinstance(exc, RuntimeError) and "thread that opened it" in str(exc)
        assert other.finish() == ("returned", None)
        assert ch.recv_many(10) == [b"first", b"second"]


def test_close_from_another_thread_during_a_loan_drops_the_reserve(name: str) -> None:
    with shmring.Channel.create(name, 1024) as ch:
        reader = shmring.Channel.open(name)
        assert reader.try_recv() is None
        opened, closed = threading.Event(), threading.Event()

        def writer() -> None:
            with ch.reserve(4) as buf:
                buf[:] = b"lost"
                opened.set()
                assert closed.wait(STEP)

        w = Worker(writer)
        w.start()
        assert opened.wait(STEP)
        ch.close()  # does not wait for the loan: it is not a call
        closed.set()
        kind, exc = w.finish()
        assert kind == "raised" and isinstance(exc, shmring.Closed) and "not sent" in str(exc), exc
        with pytest.raises(shmring.Closed):
            reader.recv(timeout=1)  # the stream ended without the dropped message
        reader.close()
