"""Broadcast across processes: two publisher processes and three subscriber
processes (every subscriber gets every message exactly once, in each
publisher's order, intact), a topic pickled by name to spawn children, and
a subscription that a fork child does not inherit.

Helpers at module level run in child processes ("spawn" re-imports this
module), so they must stay importable.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from typing import Any

import pytest

import shmring
from shmring import Topic

from _topic_helpers import OP_TIMEOUT, _mp_publisher, check_msg, join_ok, make_msg
from conftest import FORK, SPAWN, Kids

N_PER_PUB = 4000


def _received(sub: Any, n: int, batch: int) -> Any:
    """The next ``n`` messages of ``sub``: one recv() each, or recv_many(batch) batches."""
    while n > 0:
        got = [sub.recv(timeout=OP_TIMEOUT)] if not batch else sub.recv_many(min(batch, n), timeout=OP_TIMEOUT)
        assert 1 <= len(got) <= (batch or 1)
        n -= len(got)
        yield from got


def _mp_subscriber(t: Topic, ready: Any, results: Any, n_pubs: int, n_each: int, batch: int = 0) -> None:
    try:
        sub = t.subscribe()
        ready.set()
        nxt = [0] * n_pubs
        for m in _received(sub, n_pubs * n_each, batch):
            if isinstance(m, tuple):
                pub, seq, body = m
                assert body == make_msg(pub, seq, len(body)), f"object message {pub}/{seq} differs"
            else:
                pub, seq = check_msg(m)
            assert seq == nxt[pub], f"publisher {pub}: expected #{nxt[pub]}, got #{seq}"
            nxt[pub] += 1
        try:
            extra = sub.recv(timeout=0.05)
            raise AssertionError(f"one message too many: {extra!r}")
        except shmring.Timeout:
            pass
        results.put(("ok", nxt, sub.lagged))
    except BaseException as e:  # noqa: BLE001 - report it
        results.put(("error", repr(e), 0))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("batch", [0, 64], ids=["recv", "recv_many"])
@pytest.mark.parametrize("spin_ns", [0, 20_000])
def test_two_publishers_three_subscribers(topic: Callable[..., Topic], kids: Kids, spin_ns: int, batch: int) -> None:
    """Block policy: every subscriber process gets every message exactly
    once, in each publisher's order, intact (spin_ns=0: every wait sleeps),
    with recv() or recv_many()."""
    t = topic(2048, "block", spin_ns=spin_ns)
    results = FORK.Queue()
    readies = [FORK.Event() for _ in range(3)]
    subs = [kids.process(FORK, _mp_subscriber, t, ev, results, 2, N_PER_PUB, batch) for ev in readies]
    for ev in readies:
        assert ev.wait(OP_TIMEOUT), "a subscriber did not start"
    pubs = [kids.process(FORK, _mp_publisher, t, i, N_PER_PUB, 300) for i in range(2)]
    for p in pubs:
        join_ok(p, 40, "publisher")
    outcomes = [results.get(timeout=OP_TIMEOUT) for _ in subs]
    for p in subs:
        join_ok(p, OP_TIMEOUT, "subscriber")
    for status, detail, lagged in outcomes:
        assert status == "ok", detail
        assert detail == [N_PER_PUB, N_PER_PUB] and lagged == 0
    assert t.stats()["published"] == 2 * N_PER_PUB
    assert t.stats()["subscribers"] == 0  # they closed at exit


def _spawn_publisher(t: Topic, go: Any) -> None:
    assert go.wait(OP_TIMEOUT)
    pub = t.publisher()
    pub.send_obj(("spawned", os.getpid(), t.name))
    pub.send(b"raw bytes from a spawned child")


def _spawn_subscriber(t: Topic, ready: Any, results: Any) -> None:
    sub = t.subscribe()
    ready.set()
    results.put([sub.recv(timeout=OP_TIMEOUT) for _ in range(3)])


@pytest.mark.timeout(60)
def test_topic_pickles_by_name_to_spawn_children(topic: Callable[..., Topic], kids: Kids) -> None:
    t = topic(4096, "overwrite")
    clone = pickle.loads(pickle.dumps(t))
    assert clone.name == t.name and not clone.owner and clone.policy == "overwrite"
    clone.close()
    sub = t.subscribe()
    go, ready, results = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
    child_sub = kids.process(SPAWN, _spawn_subscriber, t, ready, results)
    child_pub = kids.process(SPAWN, _spawn_publisher, t, go)
    assert ready.wait(30), "the spawned subscriber did not start"
    go.set()
    join_ok(child_pub, 30, "spawned publisher")
    t.publisher().send_obj("from the parent")
    first = sub.recv(timeout=OP_TIMEOUT)
    assert first == ("spawned", child_pub.pid, t.name)
    assert sub.recv(timeout=OP_TIMEOUT) == b"raw bytes from a spawned child"
    assert sub.recv(timeout=OP_TIMEOUT) == "from the parent"
    assert results.get(timeout=30) == [first, b"raw bytes from a spawned child", "from the parent"]
    join_ok(child_sub, 30, "spawned subscriber")


def _fork_child_uses_inherited(sub: Any, pub: Any, conn: Any) -> None:
    out = []
    try:
        sub.recv(timeout=0)
        out.append("recv worked")
    except shmring.Error as e:
        out.append(type(e).__name__)
    pub.send(b"from the child")  # a publisher works in the child
    conn.send(out)


@pytest.mark.timeout(30)
def test_fork_child_does_not_inherit_the_subscription(topic: Callable[..., Topic], kids: Kids) -> None:
    t = topic()
    sub, pub = t.subscribe(), t.publisher()
    pub.send(b"for the parent")
    a, b = FORK.Pipe()
    p = kids.process(FORK, _fork_child_uses_inherited, sub, pub, b)
    join_ok(p, OP_TIMEOUT, "fork child")
    assert a.recv() == ["Closed"]
    assert sub.recv(timeout=0) == b"for the parent"  # the parent's cursor did not move
    assert sub.recv(timeout=0) == b"from the child"
    assert t.stats()["subscribers"] == 1
