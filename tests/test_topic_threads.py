"""Threads sharing one publisher or one subscription (issue 9): calls are
serialised (every message delivered once, in order), and close() from
another thread wakes a blocked recv, latest, peek, send or iteration.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Any

import shmring
from shmring import Topic

from conftest import STEP, Worker, check_each_threads_order, numbers_until_end, started, wait_inside


def test_topic_subscription_close_wakes_recv_latest_and_peek(topic: Callable[..., Topic]) -> None:
    t = topic()
    for call in ("recv", "latest", "peek"):
        sub = t.subscribe()
        if call == "peek":
            def fn(sub: Any = sub) -> Any:
                with sub.peek() as buf:
                    return bytes(buf)
        else:
            fn = getattr(sub, call)
        waiter = Worker(fn)
        waiter.start()
        wait_inside(lambda sub=sub: sub.recv(timeout=0), call)  # type: ignore[misc]
        sub.close()
        kind, exc = waiter.finish()
        assert kind == "raised" and isinstance(exc, shmring.Closed), (call, exc)
    assert t.stats()["subscribers"] == 0


def test_topic_block_publisher_close_wakes_a_blocked_send(topic: Callable[..., Topic]) -> None:
    t = topic(256, "block")
    sub = t.subscribe()  # never reads: publishers wait for it
    pub = t.publisher()
    while True:
        try:
            pub.send(b"p" * 16, timeout=0)
        except shmring.Timeout:
            break
    waiter = Worker(lambda: pub.send(b"blocked"))
    waiter.start()
    wait_inside(lambda: pub.send(b"", timeout=0), "send")
    pub.close()
    kind, exc = waiter.finish()
    assert kind == "raised" and isinstance(exc, shmring.Closed), exc
    other = t.publisher()  # the topic lock is free: another publisher goes on once there is room
    assert sub.recv(timeout=0) == b"p" * 16
    other.send(b"after", timeout=1)


def test_topic_subscription_iteration_ends_when_closed_from_another_thread(topic: Callable[..., Topic]) -> None:
    t = topic()
    sub = t.subscribe()
    t.publisher().send(b"one")
    reader = Worker(lambda: list(sub))
    reader.start()
    deadline = time.monotonic() + STEP
    while t.stats()["subscribers"] and reader.is_alive():
        sub.close()
        assert time.monotonic() < deadline
    assert reader.finish() == ("returned", [b"one"])


def test_four_threads_publishing_on_one_publisher(topic: Callable[..., Topic]) -> None:
    per_thread = 2000
    t = topic(4096, "block")
    sub = t.subscribe()
    pub = t.publisher()

    def publisher(tid: int) -> None:
        for seq in range(per_thread):
            if seq % 2:
                pub.send(struct.pack("<II", tid, seq), timeout=STEP)
            else:
                with pub.reserve(8, timeout=STEP) as buf:
                    struct.pack_into("<II", buf, 0, tid, seq)

    threads = [Worker(lambda tid=tid: publisher(tid)) for tid in range(4)]  # type: ignore[misc]
    check_each_threads_order(lambda: sub.recv(timeout=STEP), threads, per_thread)


def test_two_threads_on_one_subscription_each_message_once(topic: Callable[..., Topic]) -> None:
    n = 4000
    t = topic(4096, "block")
    sub = t.subscribe()
    pub = t.publisher()

    threads = started([Worker(lambda: numbers_until_end(lambda: sub.recv(timeout=STEP))) for _ in range(2)])
    for i in range(n):
        pub.send(b"%d" % i, timeout=STEP)
    pub.send(b"end")
    pub.send(b"end")
    results = [w.finish() for w in threads]
    got = sorted(x for _, part in results for x in part)
    assert got == list(range(n))
