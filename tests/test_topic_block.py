"""The "block" policy: publishers wait for the slowest live subscriber
(never losing a message), are woken when it reads, a closed or dropped
subscription frees its slot and lets them on, and a padding record wakes a
subscriber asleep in recv() so that it moves past it.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import shmring
from shmring import Topic

from _topic_helpers import OP_TIMEOUT, full_block_topic, join_ok
from conftest import FORK, Kids


def test_block_messages_exactly_filling_the_ring(topic: Callable[..., Topic]) -> None:
    t = topic(128, "block")
    sub = t.subscribe()
    pub = t.publisher()
    for i in range(4):
        pub.send(bytes([i]) * 112, timeout=0)  # a 128-byte record: the whole ring
        with pytest.raises(shmring.Timeout):
            pub.send(b"", timeout=0)  # not even an empty message fits
        assert sub.recv(timeout=0) == bytes([i]) * 112
    # then from offset 32: padding to the end of the ring, and the record
    # needs the space of the padding too (the subscriber, waiting in another
    # thread, has to move past it)
    pub.send(b"a", timeout=0)
    got: list[Any] = []
    th = threading.Thread(target=lambda: got.extend(sub.recv(timeout=OP_TIMEOUT) for _ in range(2)))
    th.start()
    try:
        pub.send(b"b" * 112, timeout=OP_TIMEOUT)
    finally:
        th.join(OP_TIMEOUT)
    assert got == [b"a", b"b" * 112]
    assert t.stats()["tail"] == 4 * 128 + 128 + 128  # 32 + padding 96 + 128


def _recv_loop(t: Topic, ready: Any, got: Any) -> None:
    sub = t.subscribe()
    ready.set()
    while True:
        m = sub.recv(timeout=OP_TIMEOUT)
        got.put((len(m), time.monotonic()))
        if not m:
            return


@pytest.mark.timeout(30)
def test_block_publisher_not_stalled_by_padding(topic: Callable[..., Topic], kids: Kids) -> None:
    """A subscriber asleep in recv() and fully caught up; the next message
    does not fit before the end of the ring and needs the space the padding
    takes.  The padding must wake the subscriber so that it moves past it:
    the publish should take well under the subscriber's 50 ms sleep slice."""
    t = topic(128, "block")
    ready, got = FORK.Event(), FORK.Queue()
    p = kids.process(FORK, _recv_loop, t, ready, got)
    assert ready.wait(OP_TIMEOUT)
    pub = t.publisher()
    took = []
    for _ in range(5):
        pub.send(b"x", timeout=OP_TIMEOUT)
        assert got.get(timeout=OP_TIMEOUT)[0] == 1
        time.sleep(0.005)  # the subscriber is asleep in recv() again
        t0 = time.monotonic()
        pub.send(b"y" * 112, timeout=OP_TIMEOUT)  # padding to the end, then the whole ring
        took.append(time.monotonic() - t0)
        assert got.get(timeout=OP_TIMEOUT)[0] == 112
    pub.send(b"", timeout=OP_TIMEOUT)
    join_ok(p, OP_TIMEOUT, "subscriber")
    took.sort()
    assert took[2] < 0.010, (
        f"publishes past a padding record took {[round(x * 1000, 1) for x in took]} ms: the padding "
        "does not wake subscribers asleep in recv(), so the publisher waits out their sleep slice"
    )


def test_block_publisher_waits_for_slowest_subscriber(topic: Callable[..., Topic]) -> None:
    t = topic(512, "block")
    fast, slow = t.subscribe(), t.subscribe()
    pub = t.publisher()
    sent = 0
    while True:  # 32-byte records: 16 fit
        try:
            pub.send(b"%d" % sent, timeout=0)
        except shmring.Timeout:
            break
        sent += 1
        assert fast.recv(timeout=0) == b"%d" % (sent - 1)
        assert sent < 100, "the slow subscriber never held the publisher back"
    assert sent == 16
    t0 = time.monotonic()
    with pytest.raises(shmring.Timeout, match="slow subscriber"):
        pub.send(b"late", timeout=0.2)
    assert 0.18 <= time.monotonic() - t0 < 3
    assert slow.recv(timeout=0) == b"0"  # one record freed
    pub.send(b"16", timeout=0)
    with pytest.raises(shmring.Timeout):
        pub.send(b"17", timeout=0)
    assert [slow.recv(timeout=0) for _ in range(16)] == [b"%d" % i for i in range(1, 17)]
    assert fast.recv(timeout=0) == b"16"
    assert slow.lagged == fast.lagged == 0


def test_block_publisher_wakes_when_subscriber_reads(topic: Callable[..., Topic]) -> None:
    _, sub, pub = full_block_topic(topic)
    done: list[float] = []

    def publish() -> None:
        pub.send(b"blocked", timeout=OP_TIMEOUT)
        done.append(time.monotonic())

    th = threading.Thread(target=publish)
    th.start()
    time.sleep(0.1)
    assert not done, "the publisher did not wait for room"
    t0 = time.monotonic()
    assert sub.recv(timeout=0) == b"0"
    th.join(OP_TIMEOUT)
    assert done and done[0] - t0 < 1.0
    assert [sub.recv(timeout=0) for _ in range(8)][-1] == b"blocked"


def test_closed_subscription_frees_its_slot_and_unblocks(topic: Callable[..., Topic]) -> None:
    t, sub, pub = full_block_topic(topic)
    with pytest.raises(shmring.Timeout):
        pub.send(b"x", timeout=0)
    assert t.stats()["subscribers"] == 1
    sub.close()
    assert t.stats()["subscribers"] == 0
    t0 = time.monotonic()
    for i in range(20):
        pub.send(b"y", timeout=1)
    assert time.monotonic() - t0 < 1
    # a subscription that is garbage collected frees its slot too
    sub2 = t.subscribe()
    for i in range(8):
        pub.send(b"%d" % i, timeout=0)
    del sub2
    gc.collect()
    pub.send(b"z", timeout=0)
    assert t.stats()["subscribers"] == 0


def test_max_subscribers(topic: Callable[..., Topic]) -> None:
    t = topic(256, max_subscribers=2)
    a, b = t.subscribe(), t.subscribe()
    with pytest.raises(RuntimeError, match="subscriber slots"):
        t.subscribe()
    a.close()
    c = t.subscribe()  # the freed slot
    with pytest.raises(RuntimeError):
        t.subscribe()
    t.publisher().send(b"x")
    assert b.recv(timeout=0) == c.recv(timeout=0) == b"x"
    assert t.stats()["subscribers"] == 2


def test_latest_frees_room_for_block_publishers(topic: Callable[..., Topic]) -> None:
    _, sub, pub = full_block_topic(topic)
    with pytest.raises(shmring.Timeout):
        pub.send(b"x", timeout=0)
    assert sub.latest(timeout=0) == b"7"
    for i in range(8):
        pub.send(b"again %d" % i, timeout=0)
