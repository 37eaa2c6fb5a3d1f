"""Topic publisher.reserve() and subscription.peek(): messages written and
read in place.  A reserve commits on leaving its block or is aborted by an
exception, its loan is zero-filled and commit(k) cuts it (issue 9), and it
holds the topic lock meanwhile (taking it again from the same thread is an
error, not a hang); a peek holds back "block" publishers and raises Lagged
when "overwrite" reclaims it; topic.latest() never hangs on a reserve that
reclaimed the newest record.  What Channel and Topic loans share is in
test_loans.py.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import pytest

import shmring
from shmring import Topic, _core

from _topic_helpers import HANG_S, full_block_topic, hangs
from conftest import FORK, Kids


def test_reserve_commit_and_abort(topic: Callable[..., Topic]) -> None:
    t = topic(4096)
    sub = t.subscribe()
    pub = t.publisher()
    with pub.reserve(5) as mv:
        assert isinstance(mv, _core.Loan) and len(mv) == 5 and not mv.readonly
        mv[:] = b"hello"
    assert sub.recv(timeout=0) == b"hello"
    with pub.reserve(0):
        pass
    assert sub.recv(timeout=0) == b""
    pub.send(b"kept")
    before = t.stats()
    with pytest.raises(KeyError):
        with pub.reserve(100) as mv:
            mv[:4] = b"junk"
            raise KeyError("abort")
    after = t.stats()
    assert after["published"] == before["published"] and after["tail"] == before["tail"]
    assert sub.recv(timeout=0) == b"kept"
    with pytest.raises(shmring.Timeout):
        sub.recv(timeout=0)  # the aborted reserve published nothing
    assert t.latest() == b"kept"
    with pytest.raises(ValueError):
        mv[0]  # the view is released after the block
    # the lock is free again: another publisher goes ahead at once
    t.publisher().send(b"after", timeout=1)
    assert sub.recv(timeout=0) == b"after"


def test_reserve_errors(topic: Callable[..., Topic]) -> None:
    t = topic(256)
    pub = t.publisher()
    with pytest.raises(ValueError, match="never fit"):
        with pub.reserve(256 - 15):
            pass
    with pytest.raises(ValueError, match="never fit"):
        pub.send(b"x" * 241)
    with pytest.raises(ValueError):
        with pub.reserve(-1):
            pass
    with pub.reserve(256 - 16) as mv:  # exactly the whole ring
        mv[:] = b"z" * 240
        with pytest.raises(RuntimeError):
            pub.send(b"no")  # the reserve holds this handle
        with pytest.raises(RuntimeError):
            pub.reserve(1)
    assert t.latest() == b"z" * 240
    assert t.stats()["published"] == 1


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


@pytest.mark.timeout(30)
def test_locking_the_topic_again_inside_an_open_reserve_is_an_error_not_a_hang(name: str) -> None:
    with shmring.Topic.create(name, 4096, "block") as t:
        pub, other = t.publisher(), t.publisher()
        with pub.reserve(4) as mv:
            mv[:] = b"abcd"
            with pytest.raises(RuntimeError, match="open reserve"):
                other.send(b"x")
            with pytest.raises(RuntimeError, match="open reserve"):
                t.subscribe()
        sub = t.subscribe()  # after the block: fine
        other.send(b"after")
        assert sub.recv(timeout=1) == b"after"
        for end in (pub, other, sub):
            end.close()


# -- peek ----------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["block", "overwrite"])
def test_peek(topic: Callable[..., Topic], policy: str) -> None:
    t = topic(256, policy)
    sub = t.subscribe()
    pub = t.publisher()
    pub.send(b"first")
    pub.send_obj(("second",))
    with sub.peek(timeout=0) as mv:
        assert mv.readonly and bytes(mv) == b"first"
        with pytest.raises(TypeError):
            mv[0] = 0
        with pytest.raises(RuntimeError):
            sub.recv(timeout=0)  # finish the peek first
    with pytest.raises(ValueError):
        bytes(mv)  # released at exit
    with sub.peek(timeout=0) as mv:
        assert pickle.loads(mv) == ("second",)  # raw bytes of an object message
    with pytest.raises(shmring.Timeout):
        with sub.peek(timeout=0):
            pass
    pub.send(b"third")
    assert sub.recv(timeout=0) == b"third"


def test_peek_holds_back_block_publishers(topic: Callable[..., Topic]) -> None:
    _, sub, pub = full_block_topic(topic)
    with sub.peek(timeout=0) as mv:
        with pytest.raises(shmring.Timeout):
            pub.send(b"x", timeout=0.02)  # the peeked record is not released
        assert bytes(mv) == b"0"
    pub.send(b"x", timeout=0)  # now it is
    assert [sub.recv(timeout=0) for _ in range(8)] == [b"%d" % i for i in range(1, 8)] + [b"x"]


def test_peek_overwritten_raises_lagged(topic: Callable[..., Topic]) -> None:
    t = topic(256, "overwrite")
    sub = t.subscribe()
    pub = t.publisher()
    pub.send(b"m0")
    with pytest.raises(shmring.Lagged) as info:
        with sub.peek(timeout=0) as mv:
            assert bytes(mv) == b"m0"
            for i in range(1, 9):
                pub.send(b"m%d" % i)  # record 0 is reclaimed by the 9th
    assert info.value.missed == 1  # m0 counts as lost: what was read may be torn
    assert sub.lagged == 1
    assert [sub.recv(timeout=0) for _ in range(8)] == [b"m%d" % i for i in range(1, 9)]
    # a peek that nobody overwrote ends quietly
    pub.send(b"m9")
    with sub.peek(timeout=0) as mv:
        assert bytes(mv) == b"m9"
    with pytest.raises(shmring.Timeout):
        sub.recv(timeout=0)


# -- topic.latest() must not hang ---------------------------------------------------


def _latest_after_reclaiming_abort(name: str, conn: Any) -> None:
    t = Topic.open(name)
    pub = t.publisher()
    for i in range(4):
        pub.send(b"m%d" % i)  # 4 x 32-byte records fill the 128-byte ring
    try:
        with pub.reserve(100):  # needs the whole ring: head passes the newest record
            raise KeyError
    except KeyError:
        pass
    conn.send(("stats", t.stats()["head"], t.stats()["tail"]))
    conn.send(("latest", t.latest()))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("policy", ["block", "overwrite"])
def test_topic_latest_after_reclaiming_abort(topic: Callable[..., Topic], kids: Kids, policy: str) -> None:
    """An aborted reserve that had to reclaim the newest record (head now past
    last_pos): topic.latest() must return (None or a message), not spin."""
    t = topic(128, policy)
    a, b = FORK.Pipe()
    p = kids.process(FORK, _latest_after_reclaiming_abort, t.name, b)
    hung = hangs(p, HANG_S)
    assert a.poll(1) and a.recv() == ("stats", 128, 128)
    assert not hung, "topic.latest() spins forever when head has passed last_pos (aborted reserve)"
    kind, value = a.recv()
    assert kind == "latest" and value in (None, b"m3")
    assert p.exitcode == 0


def _latest_during_reserve(name: str, conn: Any) -> None:
    t = Topic.open(name)
    pub = t.publisher()
    for i in range(4):
        pub.send(b"m%d" % i)
    with pub.reserve(100) as mv:  # head passes the newest record until commit
        mv[:] = b"r" * 100
        conn.send(("latest", t.latest()))
    conn.send(("after", t.latest()))


@pytest.mark.timeout(30)
def test_topic_latest_during_own_reserve(topic: Callable[..., Topic], kids: Kids) -> None:
    """topic.latest() called while this process holds a reserve that reclaimed
    the newest record: it must not spin (it holds the GIL, so the reserve
    could never end)."""
    t = topic(128, "overwrite")
    a, b = FORK.Pipe()
    p = kids.process(FORK, _latest_during_reserve, t.name, b)
    hung = hangs(p, HANG_S)
    assert not hung, "topic.latest() inside a reserve() block that reclaimed the newest record spins forever"
    kind, value = a.recv()
    assert kind == "latest" and value is None  # m3 was overwritten by the reserve's payload
    assert a.recv() == ("after", b"r" * 100)
