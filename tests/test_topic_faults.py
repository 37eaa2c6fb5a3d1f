"""Subscribers and publishers killed with SIGKILL: a dead subscriber holds no
publisher back and its slot is reaped; a publisher killed inside reserve()
(holding the topic lock) lets the others carry on within about a second, and
its uncommitted record is never delivered.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import shmring
from shmring import Topic

from _topic_helpers import OP_TIMEOUT, _mp_publisher, check_msg, join_ok
from conftest import FORK, Kids


def _idle_subscriber(t: Topic, ready: Any, n: int = 1) -> None:
    subs = [t.subscribe() for _ in range(n)]
    ready.set()
    time.sleep(60)
    for s in subs:
        s.close()


@pytest.mark.timeout(30)
def test_sigkilled_subscriber_does_not_block_publishers(topic: Callable[..., Topic], kids: Kids) -> None:
    t = topic(512, "block", max_subscribers=4)
    ready = FORK.Event()
    p = kids.process(FORK, _idle_subscriber, t, ready)
    assert ready.wait(OP_TIMEOUT)
    pub = t.publisher()
    for i in range(16):
        pub.send(b"%d" % i, timeout=1)
    with pytest.raises(shmring.Timeout):
        pub.send(b"held back", timeout=0.05)  # the live subscriber is behind
    done: list[float] = []

    def publish() -> None:  # asleep, waiting for room, when the subscriber dies
        pub.send(b"waiting", timeout=5)
        done.append(time.monotonic())

    th = threading.Thread(target=publish)
    th.start()
    time.sleep(0.1)
    assert not done
    killed = time.monotonic()
    os.kill(p.pid, signal.SIGKILL)  # not joined yet: a zombie meanwhile
    th.join(OP_TIMEOUT)
    assert done, "the waiting publisher never got past the dead subscriber"
    assert done[0] - killed < 1.0, f"the waiting publisher took {done[0] - killed:.2f} s"
    t0 = time.monotonic()
    for i in range(200):
        pub.send(b"%d" % i, timeout=5)
    elapsed = time.monotonic() - t0
    p.join(OP_TIMEOUT)
    assert p.exitcode == -signal.SIGKILL
    assert elapsed < 1.0, f"publishing past a dead subscriber took {elapsed:.2f} s"
    assert t.stats()["subscribers"] == 0  # its slot was reaped
    subs = [t.subscribe() for _ in range(4)]  # all 4 slots can be taken again
    assert t.stats()["subscribers"] == 4
    del subs


@pytest.mark.timeout(30)
def test_dead_subscriber_slot_is_reused_by_subscribe(topic: Callable[..., Topic], kids: Kids) -> None:
    t = topic(512, "overwrite", max_subscribers=2)
    ready = FORK.Event()
    p = kids.process(FORK, _idle_subscriber, t, ready, 2)
    assert ready.wait(OP_TIMEOUT)
    with pytest.raises(RuntimeError):
        t.subscribe()  # both slots held by a live process
    p.kill()
    p.join(OP_TIMEOUT)
    a, b = t.subscribe(), t.subscribe()  # no publish needed to reap them
    t.publisher().send(b"x")
    assert a.recv(timeout=0) == b.recv(timeout=0) == b"x"


def _die_in_reserve(t: Topic, n: int, holding: Any) -> None:
    pub = t.publisher()
    pub.send(b"before the crash")
    with pub.reserve(n) as mv:
        mv[:] = b"\xee" * n
        holding.set()
        time.sleep(0.2)  # let the parent's publisher queue on the lock
        os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("policy", ["block", "overwrite"])
def test_publisher_killed_inside_reserve(topic: Callable[..., Topic], kids: Kids, policy: str) -> None:
    """A publisher SIGKILLed while it holds the topic lock: the others carry
    on within about a second, and the record it never committed is never
    delivered."""
    t = topic(1024, policy)
    sub = t.subscribe()
    holding = FORK.Event()
    p = kids.process(FORK, _die_in_reserve, t, 100, holding)
    assert holding.wait(OP_TIMEOUT)
    pub = t.publisher()
    t0 = time.monotonic()
    pub.send(b"after the crash", timeout=5)  # waits on the dead holder's lock
    elapsed = time.monotonic() - t0
    p.join(OP_TIMEOUT)
    assert p.exitcode == -signal.SIGKILL
    assert elapsed < 1.5, f"the next publisher waited {elapsed:.2f} s"
    q = kids.process(FORK, _mp_publisher, t, 0, 5, 100)  # and another process
    join_ok(q, OP_TIMEOUT, "second publisher")
    assert sub.recv(timeout=0) == b"before the crash"
    assert sub.recv(timeout=0) == b"after the crash"
    for seq in range(5):
        assert check_msg(sub.recv(timeout=0)) == (0, seq)
    with pytest.raises(shmring.Timeout):
        sub.recv(timeout=0)
    assert t.stats()["published"] == 7
