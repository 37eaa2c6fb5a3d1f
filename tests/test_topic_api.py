"""shmring.Topic in one process: creating and opening, publishing bytes and
objects to every subscriber, late joiners, iteration, closing, the topic's
lifetime, latest() (conflation), and pickling.  A dropped subscription or
publisher ends nothing (issue 9).
"""

from __future__ import annotations

import copy
import pickle
import random
import struct
import threading
import time
from collections.abc import Callable

import pytest

import shmring
from shmring import Topic

from _topic_helpers import CTRL, HDR, OP_TIMEOUT, TAG_BYTES, data_offset, header, make_msg, msg_size, rec_size
from conftest import u64


def test_create_properties_and_layout(topic: Callable[..., Topic]) -> None:
    t = topic(4096, "overwrite", max_subscribers=5, spin_ns=1234)
    assert t.capacity == 4096 and t.policy == "overwrite" and t.owner
    assert t.name in repr(t) and "overwrite" in repr(t)
    assert t.stats() == {
        "capacity": 4096,
        "published": 0,
        "tail": 0,
        "head": 0,
        "subscribers": 0,
        "max_subscribers": 5,
        "lagged": 0,
    }
    seg = shmring.Segment.open(t.name)
    try:
        buf = seg.buf
        assert u64(buf, CTRL["capacity"]) == 4096
        assert u64(buf, CTRL["data_offset"]) == data_offset(5) == 640
        assert struct.unpack_from("<III", buf, CTRL["policy"]) == (2, 5, 1234)
        assert u64(buf, CTRL["last_pos"]) == 2**64 - 1  # NO_RECORD
        assert seg.size == data_offset(5) + 4096
        assert seg.info().kind == "topic"
        pub = t.publisher()
        pub.send(b"abc")
        pub.send(b"x" * 20)
        assert [u64(buf, CTRL[f]) for f in ("tail", "head", "next_seq", "last_pos")] == [32 + 48, 0, 2, 32]
        assert header(buf, 0, 4096) == (3, TAG_BYTES, 0) and header(buf, 32, 4096) == (20, TAG_BYTES, 1)
        assert bytes(buf[640 + HDR : 640 + HDR + 3]) == b"abc"
    finally:
        seg.close()
    assert Topic.open(t.name).policy == "overwrite"
    assert topic(policy="block").policy == "block"


def test_bad_arguments(new_name: Callable[[], str]) -> None:
    name = new_name()
    with pytest.raises(ValueError, match="policy"):
        Topic.create(name, 4096, "drop")  # type: ignore[arg-type]
    for capacity in (0, 112, 4095, 4104, (1 << 32) + 16, -1, -4096, 2**64 + 16):
        # The size is reported as written (a negative one too, not wrapped to 2**64 - 1).
        with pytest.raises(ValueError, match=f"multiple of 16 .*, not {capacity}$"):
            Topic.create(name, capacity)
    with pytest.raises(TypeError):
        Topic.create(name, "4096")  # type: ignore[arg-type]
    for subscribers in (0, -1, 4097, 2**40):
        with pytest.raises(ValueError, match=f"max_subscribers must be between 1 and 4096, not {subscribers}$"):
            Topic.create(name, 4096, max_subscribers=subscribers)
    with pytest.raises(ValueError, match="spin_ns"):
        Topic.create(name, 4096, spin_ns=-1)
    with pytest.raises(ValueError, match="mode"):
        Topic.create(name, 4096, mode=0o1000)
    with pytest.raises(TypeError, match="Topic.create"):
        Topic()
    with pytest.raises(FileNotFoundError):
        Topic.open(name)
    with shmring.Segment.create(name, 4096):
        with pytest.raises(ValueError, match="not a topic"):
            Topic.open(name)


def test_pub_sub_bytes_and_objects(topic: Callable[..., Topic]) -> None:
    t = topic()
    sub = t.subscribe()
    pub = t.publisher()
    pub.send(b"hello")
    pub.send(bytearray(b"ba"))
    pub.send(memoryview(b"xmvx")[1:3])
    pub.send(b"")
    pub.send_obj({"k": [1, 2.5, None]})
    pub.send_obj(None)
    pub.send_obj(b"pickled bytes")
    assert sub.recv(timeout=OP_TIMEOUT) == b"hello"
    assert sub.recv(timeout=OP_TIMEOUT) == b"ba"
    assert sub.recv(timeout=OP_TIMEOUT) == b"mv"
    assert sub.recv(timeout=OP_TIMEOUT) == b""
    assert sub.recv(timeout=OP_TIMEOUT) == {"k": [1, 2.5, None]}
    assert sub.recv(timeout=OP_TIMEOUT) is None
    raw = sub.recv_bytes(timeout=OP_TIMEOUT)  # the pickle itself
    assert pickle.loads(raw) == b"pickled bytes" and raw != b"pickled bytes"
    with pytest.raises(shmring.Timeout):
        sub.recv(timeout=0)
    with pytest.raises(TimeoutError):  # Timeout is a TimeoutError
        sub.recv_bytes(timeout=0.01)
    with pytest.raises(TypeError):
        pub.send("text is not bytes")  # type: ignore[arg-type]
    s = t.stats()
    objs = ({"k": [1, 2.5, None]}, None, b"pickled bytes")
    sizes = [5, 2, 2, 0] + [len(pickle.dumps(o, protocol=pickle.HIGHEST_PROTOCOL)) for o in objs]
    assert s["published"] == 7 and s["subscribers"] == 1 and s["head"] == 0
    assert s["tail"] == sum(rec_size(n) for n in sizes)


def test_recv_waits_for_a_publish_from_another_thread(topic: Callable[..., Topic]) -> None:
    t = topic()
    sub = t.subscribe()
    pub = t.publisher()
    timer = threading.Timer(0.1, pub.send, args=(b"later",))
    timer.start()
    try:
        t0 = time.monotonic()
        assert sub.recv(timeout=OP_TIMEOUT) == b"later"
        assert 0.05 < time.monotonic() - t0 < 5
    finally:
        timer.join()
    t0 = time.monotonic()
    with pytest.raises(shmring.Timeout):
        sub.recv(timeout=0.15)
    assert 0.13 <= time.monotonic() - t0 < 2


@pytest.mark.parametrize("spin_ns", [0, 5_000_000])
def test_a_subscription_polls_for_its_own_spin_then_sleeps(topic: Callable[..., Topic], spin_ns: int) -> None:
    """``subscribe(spin_ns=)`` replaces the topic's poll for this
    subscription alone (0: every wait sleeps at once; 5 ms: a message sent
    from another thread meanwhile is read by the poll); the others keep
    the topic's; ``spin_ns`` can be set later, within the topic's limits."""
    t = topic(4096, spin_ns=1234)
    sub, other = t.subscribe(spin_ns=spin_ns), t.subscribe()
    pub = t.publisher()
    assert (sub.spin_ns, other.spin_ns) == (spin_ns, 1234)
    timer = threading.Timer(0.002, pub.send, args=(b"soon",))
    timer.start()
    try:
        assert sub.recv(timeout=OP_TIMEOUT) == b"soon"
        assert other.recv(timeout=OP_TIMEOUT) == b"soon"
    finally:
        timer.join()
    sub.spin_ns = 7
    assert sub.spin_ns == 7
    for bad, error in ((-1, ValueError), (50_000_001, ValueError), (2**70, ValueError), ("1", TypeError),
                       (True, TypeError), (None, TypeError)):
        with pytest.raises(error, match="spin_ns"):
            sub.spin_ns = bad  # type: ignore[assignment]
    with pytest.raises(ValueError, match="spin_ns"):
        t.subscribe(spin_ns=-1)
    assert sub.spin_ns == 7


def test_several_subscribers_each_see_every_message(topic: Callable[..., Topic]) -> None:
    t = topic(1024)
    subs = [t.subscribe() for _ in range(3)]
    pub = t.publisher()
    got: list[list[bytes]] = [[] for _ in subs]
    sent = [make_msg(0, i, msg_size(0, i, 200)) for i in range(200)]
    for m in sent:
        pub.send(m, timeout=OP_TIMEOUT)
        for s, g in zip(subs, got):
            g.append(s.recv(timeout=OP_TIMEOUT))
    assert all(g == sent for g in got)
    assert t.stats()["subscribers"] == 3


def test_late_subscriber_sees_only_later_messages(topic: Callable[..., Topic]) -> None:
    t = topic()
    pub = t.publisher()
    early = t.subscribe()
    for i in range(3):
        pub.send_obj(("before", i))
    late = t.subscribe()
    with pytest.raises(shmring.Timeout):
        late.recv(timeout=0)
    for i in range(2):
        pub.send_obj(("after", i))
    assert [late.recv(timeout=0) for _ in range(2)] == [("after", 0), ("after", 1)]
    with pytest.raises(shmring.Timeout):
        late.recv(timeout=0)
    expected = [("before", 0), ("before", 1), ("before", 2), ("after", 0), ("after", 1)]
    assert [early.recv(timeout=0) for _ in range(5)] == expected


def test_publish_without_subscribers(topic: Callable[..., Topic]) -> None:
    """Under "block", nobody listening means nothing to wait for: the ring
    is reused forever."""
    t = topic(256, "block")
    pub = t.publisher()
    for i in range(100):
        pub.send(b"%d" % i, timeout=1)
    assert t.latest() == b"99" and t.stats()["published"] == 100
    sub = t.subscribe()
    pub.send(b"now", timeout=1)
    assert sub.recv(timeout=0) == b"now"


def test_iteration(topic: Callable[..., Topic]) -> None:
    t = topic()
    sub = t.subscribe()
    pub = t.publisher()
    for i in range(5):
        pub.send_obj(i)
    out = []
    for m in sub:
        out.append(m)
        if len(out) == 5:
            break
    assert out == [0, 1, 2, 3, 4]
    sub.close()
    assert list(sub) == []  # a closed subscription ends the iteration


PUBLISHER_ONLY = ("send", "send_obj", "send_many", "reserve", "send_array", "reserve_array")
SUBSCRIBER_ONLY = ("recv", "recv_bytes", "recv_many", "peek", "latest", "lagged", "recv_array", "peek_array")


def test_each_role_has_only_its_own_methods(topic: Callable[..., Topic]) -> None:
    t = topic()
    sub = t.subscribe()
    pub = t.publisher()
    for name in PUBLISHER_ONLY:
        assert hasattr(pub, name) and not hasattr(sub, name), name
        assert not hasattr(shmring.Subscription, name) and name not in dir(sub), name
        with pytest.raises(AttributeError, match=f"'Subscription' object has no attribute '{name}' .*Publisher"):
            getattr(sub, name)
    for name in SUBSCRIBER_ONLY:
        assert hasattr(sub, name) and not hasattr(pub, name), name
        assert not hasattr(shmring.Publisher, name) and name not in dir(pub), name
        with pytest.raises(AttributeError, match=f"'Publisher' object has no attribute '{name}' .*Subscription"):
            getattr(pub, name)
    pub.send(b"still works")
    assert sub.recv(timeout=OP_TIMEOUT) == b"still works"


def test_publisher_and_subscription_reprs(topic: Callable[..., Topic]) -> None:
    t = topic(capacity=4096, policy="overwrite")
    sub = t.subscribe()
    pub = t.publisher()
    assert repr(pub) == f"<shmring.Publisher of topic {t.name!r} capacity=4096 policy='overwrite'>"
    assert repr(sub) == f"<shmring.Subscription of topic {t.name!r} capacity=4096 policy='overwrite'>"
    pub.close()
    sub.close()
    assert repr(pub) == f"<shmring.Publisher of topic {t.name!r} closed>"
    assert repr(sub) == f"<shmring.Subscription of topic {t.name!r} closed>"


def test_closed_handles(topic: Callable[..., Topic]) -> None:
    t = topic()
    sub = t.subscribe()
    pub = t.publisher()
    with pub:
        pass
    with sub:
        pass
    assert sub.closed and pub.closed
    with pytest.raises(shmring.Error, match="closed"):
        sub.recv(timeout=0)
    with pytest.raises(shmring.Error, match="closed"):
        pub.send(b"x")
    sub.close()  # idempotent
    pub.close()
    assert t.stats()["subscribers"] == 0


def test_topic_lives_while_any_handle_is_attached(new_name: Callable[[], str]) -> None:
    name = new_name()
    with Topic.create(name, 256) as t:
        other = Topic.open(name)
        assert not other.owner
        t.publisher().send(b"x")
        assert other.latest() == b"x"
    with Topic.open(name) as again:  # the creator left; `other` keeps it
        assert again.latest() == b"x"
    assert other.latest() == b"x"
    other.close()  # the last one out removes it
    with pytest.raises(FileNotFoundError):
        Topic.open(name)


def test_large_messages(topic: Callable[..., Topic]) -> None:
    """Messages above the size copied without the GIL (256 KiB)."""
    t = topic(1 << 20, "block")
    sub = t.subscribe()
    pub = t.publisher()
    big = random.Random(5).randbytes(600_000)
    pub.send(big, timeout=OP_TIMEOUT)
    with pub.reserve(300_000, timeout=OP_TIMEOUT) as mv:
        mv[:] = big[:300_000]
    assert sub.recv(timeout=0) == big
    assert sub.recv_bytes(timeout=0) == big[:300_000]
    pub.send_obj({"blob": big}, timeout=OP_TIMEOUT)  # wraps: padding first
    assert sub.recv(timeout=0) == {"blob": big}
    assert t.latest() == {"blob": big}


# -- latest (conflation) ---------------------------------------------------------


def test_latest_on_topic_and_subscription(topic: Callable[..., Topic]) -> None:
    t = topic(4096)
    assert t.latest() is None  # nothing published yet
    sub = t.subscribe()
    with pytest.raises(shmring.Timeout):
        sub.latest(timeout=0)
    pub = t.publisher()
    for i in range(10):
        pub.send_obj({"v": i})
    assert t.latest() == {"v": 9}
    assert t.latest() == {"v": 9}  # moves nothing
    assert t.stats()["published"] == 10
    assert sub.latest(timeout=0) == {"v": 9}  # skips 0..8
    with pytest.raises(shmring.Timeout):
        sub.recv(timeout=0)
    assert sub.lagged == 0  # conflation is not lag
    pub.send(b"raw")
    assert t.latest() == b"raw"
    pub.send(b"next")
    assert sub.recv(timeout=0) == b"raw"  # latest() only moves the cursor
    assert sub.latest(timeout=0) == b"next"
    # latest(timeout) waits for an unread message
    timer = threading.Timer(0.05, pub.send_obj, args=("late",))
    timer.start()
    try:
        assert sub.latest(timeout=OP_TIMEOUT) == "late"
    finally:
        timer.join()


# -- dropped handles ----------------------------------------------------------------


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


# -- pickling -----------------------------------------------------------------------


def test_subscription_and_publisher_do_not_pickle(topic: Callable[..., Topic]) -> None:
    t = topic()
    sub, pub = t.subscribe(), t.publisher()
    with pytest.raises(TypeError, match="subscribe"):
        pickle.dumps(sub)
    with pytest.raises(TypeError, match="publisher"):
        pickle.dumps(pub)
    with pytest.raises(TypeError):
        copy.copy(sub)
    with pytest.raises(TypeError):
        copy.deepcopy(pub)


def test_recv_many_takes_what_is_there_up_to_the_limit(topic: Callable[..., Topic]) -> None:
    t = topic(4096, "overwrite")
    sub, pub = t.subscribe(), t.publisher()
    for i in range(10):
        pub.send_obj(("obj", i)) if i % 2 else pub.send(b"bytes %d" % i)
    assert sub.recv_many(4) == [b"bytes 0", ("obj", 1), b"bytes 2", ("obj", 3)]
    assert sub.recv_many(100) == [b"bytes 4", ("obj", 5), b"bytes 6", ("obj", 7), b"bytes 8", ("obj", 9)]
    with pytest.raises(shmring.Timeout):
        sub.recv_many(5, timeout=0.01)
    with pytest.raises(ValueError, match="at least 1"):
        sub.recv_many(0)
    for i in range(1000):  # laps the subscriber many times
        pub.send(struct.pack("<Q", i) + bytes(42))
    with pytest.raises(shmring.Lagged) as lagged:
        sub.recv_many(1000)
    rest = sub.recv_many(1000)  # resumes at the oldest message still held, in order
    numbers = [struct.unpack_from("<Q", m)[0] for m in rest]
    assert numbers == list(range(1000 - len(rest), 1000))
    assert lagged.value.missed + len(rest) == 1000
    assert sub.lagged == lagged.value.missed


def test_recv_many_waits_for_the_first_then_takes_the_rest(topic: Callable[..., Topic]) -> None:
    t = topic(1 << 16, "block")
    sub, pub = t.subscribe(), t.publisher()

    def later() -> None:
        time.sleep(0.1)
        for i in range(50):
            pub.send(b"%d" % i)

    th = threading.Thread(target=later)
    th.start()
    got = sub.recv_many(50, timeout=OP_TIMEOUT)
    while len(got) < 50:
        got += sub.recv_many(50 - len(got), timeout=OP_TIMEOUT)
    th.join()
    assert got == [b"%d" % i for i in range(50)]


class _Unloadable:
    def __reduce__(self) -> tuple[object, ...]:
        return (_fail_to_load, ())


def _fail_to_load() -> None:
    raise RuntimeError("cannot be loaded here")


def test_recv_many_with_a_message_that_fails_to_unpickle_keeps_the_rest(topic: Callable[..., Topic]) -> None:
    t = topic(4096, "block")
    sub, pub = t.subscribe(), t.publisher()
    pub.send(b"first")
    pub.send_obj(_Unloadable())
    pub.send(b"third")
    assert sub.recv_many(3) == [b"first"]  # as Queue.get_many: those before the bad one
    with pytest.raises(RuntimeError, match="cannot be loaded"):
        sub.recv_many(3)  # the bad one, alone: consumed, as recv would
    pub.send(b"fourth")
    assert sub.recv_many(10) == [b"third", b"fourth"]  # the rest was left unread


def test_send_many_publishes_in_order_and_says_how_many_went(topic: Callable[..., Topic]) -> None:
    t = topic(1 << 16, "block")
    sub, pub = t.subscribe(), t.publisher()
    assert pub.send_many([b"%d" % i for i in range(200)]) == 200  # more than one run of the lock
    got: list[bytes] = []
    while len(got) < 200:
        got += sub.recv_many(1000, timeout=OP_TIMEOUT)
    assert got == [b"%d" % i for i in range(200)]
    assert pub.send_many([]) == 0
    with pytest.raises(ValueError, match="message 1 of the batch .* never fit.*nothing was sent"):
        pub.send_many([b"x", bytes(70_000)])
    with pytest.raises(TypeError):
        pub.send_many([b"x", 3])
    with pytest.raises(shmring.Timeout) as full:  # the ring fills: the subscriber does not read
        pub.send_many([bytes(1000)] * 100, timeout=0.05)
    sent = full.value.sent  # type: ignore[attr-defined]
    assert 0 < sent < 100
    assert len(sub.recv_many(1000)) == sent  # exactly those, whole
    with pytest.raises(shmring.Timeout):
        sub.recv(timeout=0.01)

