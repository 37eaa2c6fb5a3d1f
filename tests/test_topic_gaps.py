"""Gap markers: ``Publisher.send_gap(missed)`` tells every subscriber that
``missed`` messages were lost before they reached the topic (a bridge's
importer reports a loss upstream this way).  A subscriber that reads one
raises ``Lagged(missed, upstream=True)`` and reads on past it, whichever
call reads it; the marker takes ``missed`` message numbers; ``latest()``
skips it.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import pytest

import shmring
from shmring import Topic

from conftest import FORK, Kids


@pytest.mark.parametrize("policy", ["block", "overwrite"])
def test_a_gap_marker_is_raised_as_lagged_then_reading_goes_on(topic: Callable[..., Topic], policy: str) -> None:
    t = topic(1024, policy)
    sub, pub = t.subscribe(), t.publisher()
    pub.send(b"before")
    pub.send_gap(5)
    pub.send_obj({"after": 1})
    assert sub.recv(timeout=0) == b"before"
    with pytest.raises(shmring.Lagged) as info:
        sub.recv(timeout=0)
    assert info.value.missed == 5 and info.value.upstream
    assert "5 message(s) were lost before they reached the topic" in str(info.value)
    assert sub.recv(timeout=0) == {"after": 1}
    assert sub.lagged == 5
    assert t.stats()["published"] == 7  # the marker took the numbers of the 5 lost
    with pytest.raises(shmring.Timeout):
        sub.recv(timeout=0)


def test_lagged_from_a_marker_pickles_with_its_origin() -> None:
    again = pickle.loads(pickle.dumps(shmring.Lagged(3, upstream=True)))
    assert again.missed == 3 and again.upstream
    assert not pickle.loads(pickle.dumps(shmring.Lagged(3))).upstream


def test_recv_many_returns_what_came_before_a_marker_and_raises_at_the_next_call(
        topic: Callable[..., Topic]) -> None:
    t = topic(4096, "overwrite")
    sub, pub = t.subscribe(), t.publisher()
    pub.send_many([b"a", b"b"])
    pub.send_gap(2)
    pub.send_gap(3)  # two markers in a row: two Lagged, one each
    pub.send(b"c")
    assert sub.recv_many(10, timeout=0) == [b"a", b"b"]
    missed = []
    for _ in range(2):
        with pytest.raises(shmring.Lagged) as info:
            sub.recv_many(10, timeout=0)
        missed.append(info.value.missed)
    assert missed == [2, 3]
    assert sub.recv_many(10, timeout=0) == [b"c"]


def test_peek_and_recv_bytes_raise_at_a_marker(topic: Callable[..., Topic]) -> None:
    t = topic(1024, "overwrite")
    sub, pub = t.subscribe(), t.publisher()
    pub.send_gap(1)
    pub.send_gap(4)
    pub.send(b"x")
    with pytest.raises(shmring.Lagged) as info:
        with sub.peek(timeout=0):
            pass
    assert info.value.missed == 1
    with pytest.raises(shmring.Lagged) as info:
        sub.recv_bytes(timeout=0)
    assert info.value.missed == 4
    with sub.peek(timeout=0) as buf:
        assert bytes(buf) == b"x"


def test_latest_skips_markers(topic: Callable[..., Topic]) -> None:
    t = topic(1024, "overwrite")
    sub, pub = t.subscribe(), t.publisher()
    assert t.latest() is None
    pub.send_gap(2)
    assert t.latest() is None  # a marker is no message
    with pytest.raises(shmring.Timeout):
        sub.latest(timeout=0)  # nor an unread one
    pub.send(b"newest")
    pub.send_gap(7)
    assert t.latest() == b"newest"
    assert sub.latest(timeout=0) == b"newest"
    with pytest.raises(shmring.Timeout):
        sub.latest(timeout=0)  # the marker after it is stepped over, not raised
    pub.send(b"next")
    assert sub.recv(timeout=0) == b"next"
    assert sub.lagged == 0


def test_a_marker_needs_a_count_and_a_publisher(topic: Callable[..., Topic]) -> None:
    t = topic(1024)
    sub, pub = t.subscribe(), t.publisher()
    with pytest.raises(ValueError, match="missed must be at least 1, not 0"):
        pub.send_gap(0)
    with pytest.raises(TypeError):
        pub.send_gap("3")  # type: ignore[arg-type]
    assert not hasattr(sub, "send_gap")
    with pytest.raises(AttributeError, match="a Publisher has it"):
        sub.send_gap(1)
    assert t.stats()["published"] == 0


def test_a_marker_waits_for_room_under_block(topic: Callable[..., Topic]) -> None:
    t = topic(128, "block")
    sub, pub = t.subscribe(), t.publisher()
    while True:
        try:
            pub.send(b"x" * 8, timeout=0)
        except shmring.Timeout:
            break
    with pytest.raises(shmring.Timeout):
        pub.send_gap(1, timeout=0.01)
    assert sub.recv(timeout=0) == b"x" * 8  # room for the marker's 32 bytes
    assert sub.recv(timeout=0) == b"x" * 8
    pub.send_gap(9, timeout=0)
    got = 0
    while True:
        try:
            sub.recv(timeout=0)
        except shmring.Lagged as e:
            assert e.missed == 9
            break
        got += 1
    assert got >= 1


def _count_in_child(name: str, conn: Any) -> None:
    t = Topic.open(name)
    sub = t.subscribe()
    conn.send("ready")
    received, missed = 0, 0
    while received + missed < 10:
        try:
            sub.recv(timeout=10)
            received += 1
        except shmring.Lagged as e:
            missed += e.missed
    conn.send((received, missed))


def test_a_subscriber_in_another_process_counts_what_it_missed(topic: Callable[..., Topic], kids: Kids) -> None:
    t = topic(4096, "block")
    a, b = FORK.Pipe()
    p = kids.process(FORK, _count_in_child, t.name, b)
    assert a.poll(20) and a.recv() == "ready"
    pub = t.publisher()
    pub.send_many([b"1", b"2", b"3"])
    pub.send_gap(4)
    pub.send_many([b"8", b"9", b"10"])
    assert a.poll(20) and a.recv() == (6, 4)
    p.join(10)
    assert p.exitcode == 0
