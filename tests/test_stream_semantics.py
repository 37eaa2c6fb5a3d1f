"""Issue 9, Channel and Topic: nothing lost, nothing leaked.

- Garbage collection never ends a stream: a handle dropped without close()
  gives its ends back; only close() (or the death of the process holding an
  end) ends a stream.
- reserve() never ships bytes its sender did not write: the loan is
  zero-filled, commit(k) cuts the message.
- send_many is one publication: checked whole before anything is written,
  all-or-nothing on a timeout when the batch fits in the ring.
- Threads: calls on one end are serialised; close() from another thread wakes
  a blocked call (Closed) and returns once no call is inside.
"""

from __future__ import annotations

import multiprocessing as mp
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import shmring
from shmring import Topic


pytestmark = pytest.mark.timeout(60)

FORK = mp.get_context("fork")
SPAWN = mp.get_context("spawn")
STRATEGIES = ("spin", "yield", "block", "adaptive", "semaphore")
STEP = 10.0  # bound on one step of a test: a hang fails instead of waiting for pytest-timeout


@pytest.fixture
def topic(new_name: Callable[[], str]) -> Iterator[Callable[..., Topic]]:
    made: list[Topic] = []

    def make(capacity: int = 4096, policy: str = "block") -> Topic:
        t = Topic.create(new_name(), capacity, policy)  # type: ignore[arg-type]
        made.append(t)
        return t

    try:
        yield make
    finally:
        for t in made:
            t.close()  # the last handle out removes the topic


class Worker(threading.Thread):
    """A thread running ``fn``; ``outcome`` is what it returned or raised."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.outcome: Any = None
        self.entered = threading.Event()

    def run(self) -> None:
        self.entered.set()
        try:
            self.outcome = ("returned", self.fn())
        except BaseException as exc:  # noqa: BLE001 - examined by the test
            self.outcome = ("raised", exc)

    def finish(self) -> Any:
        self.join(STEP)
        assert not self.is_alive(), "the thread is still blocked"
        return self.outcome


def wait_inside(probe: Callable[[], Any], what: str) -> None:
    """Poll ``probe`` (a zero-timeout call on the same end) until it times out
    because another thread's call is inside that end."""
    deadline = time.monotonic() + STEP
    while True:
        try:
            probe()
        except shmring.Timeout as exc:
            if "another thread" in str(exc):
                return
        assert time.monotonic() < deadline, f"the thread never entered {what}"
        time.sleep(0.005)


# ==========================================================================
# 1. Garbage collection never ends a stream
# ==========================================================================


def test_dropped_subscription_frees_its_slot_and_ends_nothing(topic: Callable[..., Topic]) -> None:
    t = topic(4096)
    keep, dropped = t.subscribe(), t.subscribe()
    pub = t.publisher()
    pub.send(b"a")
    assert dropped.recv(timeout=0) == b"a"
    assert t.stats()["subscribers"] == 2
    del dropped
    assert t.stats()["subscribers"] == 1
    pub.send(b"b")
    assert [keep.recv(timeout=0), keep.recv(timeout=0)] == [b"a", b"b"]


def test_dropped_publisher_ends_nothing(topic: Callable[..., Topic]) -> None:
    t = topic(4096)
    sub = t.subscribe()
    first = t.publisher()
    first.send(b"from the first")
    del first
    t.publisher().send(b"from the second")  # a dropped reserve-less publisher held nothing
    assert [sub.recv(timeout=0), sub.recv(timeout=0)] == [b"from the first", b"from the second"]


def test_dropped_publisher_with_an_unentered_reserve_releases_the_lock(topic: Callable[..., Topic]) -> None:
    t = topic(4096)
    sub = t.subscribe()
    pub = t.publisher()
    loan = pub.reserve(8)  # holds the topic lock until it is completed or dropped
    del loan, pub
    t.publisher().send(b"next", timeout=1)
    assert sub.recv(timeout=0) == b"next"  # the dropped reserve published nothing


# ==========================================================================
# 2. reserve() never ships stale bytes
# ==========================================================================


def test_topic_reserve_is_zero_filled_and_commit_cuts(topic: Callable[..., Topic]) -> None:
    t = topic(256, "overwrite")
    sub = t.subscribe()
    pub = t.publisher()
    for _ in range(8):  # every byte of the ring written with old data
        pub.send(b"\xee" * 200)
        assert sub.recv(timeout=0) == b"\xee" * 200
    with pub.reserve(40) as buf:
        buf[:3] = b"abc"
    assert sub.recv(timeout=0) == b"abc" + bytes(37)
    with pub.reserve(40) as buf:
        buf[:3] = b"abc"
        buf.commit(3)
    assert sub.recv(timeout=0) == b"abc"
    assert t.latest() == b"abc"


# ==========================================================================
# 3. send_many: one publication
# ==========================================================================


# ==========================================================================
# 4. Threads
# ==========================================================================


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
    for w in threads:
        w.start()
    last = [-1] * 4
    for _ in range(4 * per_thread):
        tid, seq = struct.unpack("<II", sub.recv(timeout=STEP))
        assert seq == last[tid] + 1
        last[tid] = seq
    assert [w.finish() for w in threads] == [("returned", None)] * 4


def test_two_threads_on_one_subscription_each_message_once(topic: Callable[..., Topic]) -> None:
    n = 4000
    t = topic(4096, "block")
    sub = t.subscribe()
    pub = t.publisher()

    def receiver() -> list[int]:
        got = []
        while True:
            m = sub.recv(timeout=STEP)
            if m == b"end":
                return got
            got.append(int(m))

    threads = [Worker(receiver) for _ in range(2)]
    for w in threads:
        w.start()
    for i in range(n):
        pub.send(b"%d" % i, timeout=STEP)
    pub.send(b"end")
    pub.send(b"end")
    results = [w.finish() for w in threads]
    got = sorted(x for _, part in results for x in part)
    assert got == list(range(n))
