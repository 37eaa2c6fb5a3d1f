"""The "overwrite" policy: publishers never wait, and a subscriber that falls
behind gets Lagged with the exact number of messages it lost (never a
spurious Lagged over padding, never a false CorruptedError while the ring
turns under it), then goes on with the oldest message held.
"""

from __future__ import annotations

import os
import pickle
import struct
import time
from collections.abc import Callable
from typing import Any

import pytest

import shmring
from shmring import Topic

from _topic_helpers import CTRL, OP_TIMEOUT, SUBS, check_msg, join_ok, make_msg, msg_size
from conftest import FORK, Kids, u64


def test_overwrite_lag_accounting(topic: Callable[..., Topic]) -> None:
    t = topic(256, "overwrite")  # 8 records of 32 bytes
    sub = t.subscribe()
    pub = t.publisher()
    for i in range(20):
        pub.send(b"%02d" % i, timeout=0)  # never waits
    with pytest.raises(shmring.Lagged) as info:
        sub.recv(timeout=0)
    assert info.value.missed == 12 and sub.lagged == 12
    assert sub.stats()["lagged"] == 12
    assert isinstance(info.value, shmring.Error) and "12" in str(info.value)
    assert pickle.loads(pickle.dumps(info.value)).missed == 12
    assert [sub.recv(timeout=0) for _ in range(8)] == [b"%02d" % i for i in range(12, 20)]
    with pytest.raises(shmring.Timeout):
        sub.recv(timeout=0)
    # round 2: .lagged accumulates; recv_bytes lags the same way
    for i in range(20, 40):
        pub.send(b"%02d" % i)
    with pytest.raises(shmring.Lagged) as info:
        sub.recv_bytes(timeout=0)
    assert info.value.missed == 12 and sub.lagged == 24
    assert [sub.recv_bytes(timeout=0) for _ in range(8)] == [b"%02d" % i for i in range(32, 40)]
    # round 3: partly read, then overtaken; peek lags too
    for i in range(40, 45):
        pub.send(b"%02d" % i)
    assert sub.recv(timeout=0) == b"40"
    for i in range(45, 52):
        pub.send(b"%02d" % i)  # holds 44..51: 41, 42, 43 lost
    with pytest.raises(shmring.Lagged) as info:
        with sub.peek(timeout=0):
            pass
    assert info.value.missed == 3 and sub.lagged == 27
    with sub.peek(timeout=0) as mv:
        assert bytes(mv) == b"44"
    rest = [sub.recv(timeout=0) for _ in range(7)]
    assert rest == [b"%02d" % i for i in range(45, 52)]
    with pytest.raises(shmring.Timeout):
        sub.recv(timeout=0)
    received = 8 + 8 + 1 + 1 + 7
    assert received + sub.lagged == t.stats()["published"] == 52
    # a subscription that never fell behind has lagged == 0
    assert t.subscribe().lagged == 0


def test_overwrite_no_spurious_lagged_over_padding(topic: Callable[..., Topic]) -> None:
    """head passing only a padding record loses no message: the subscriber
    must get the next message, not Lagged(missed=0)."""
    t = topic(128, "overwrite")
    sub, pub = t.subscribe(), t.publisher()
    pub.send(b"a")  # a 32-byte record at 0
    assert sub.recv(timeout=0) == b"a"  # caught up: cursor 32
    # 81 bytes (a 112-byte record) do not fit at 32: padding at 32..128, the
    # record at 128; making room for it moves head over the padding to 128
    pub.send(b"b" * 81)
    assert (t.stats()["head"], t.stats()["tail"]) == (128, 240)
    try:
        got = sub.recv(timeout=0)
    except shmring.Lagged as e:
        raise AssertionError(
            f"spurious Lagged(missed={e.missed}): the subscriber was caught up, nothing was lost"
        ) from None
    assert got == b"b" * 81 and sub.lagged == 0

    # the same when head passes the padding a few publishes later
    t = topic(128, "overwrite")
    sub, pub = t.subscribe(), t.publisher()
    for i in range(3):
        pub.send(b"%d" % i)  # 32-byte records at 0, 32, 64
    assert [sub.recv(timeout=0) for _ in range(3)] == [b"0", b"1", b"2"]  # cursor 96
    pub.send(b"3" * 32)  # 48 bytes: padding at 96, the record at 128 (ring offset 0)
    pub.send(b"4")
    pub.send(b"5")  # head walks over the padding to 128: message 3 is still held
    assert (t.stats()["head"], t.stats()["tail"]) == (128, 240)
    try:
        first = sub.recv(timeout=0)
    except shmring.Lagged as e:
        raise AssertionError(f"spurious Lagged(missed={e.missed}): no message was overwritten") from None
    assert first == b"3" * 32
    assert [sub.recv(timeout=0), sub.recv(timeout=0)] == [b"4", b"5"]
    assert sub.lagged == 0


def test_overwrite_lagged_subscriber_table_entry(topic: Callable[..., Topic]) -> None:
    """The 32-byte table entry {token, cursor, next_seq, lagged}."""
    t = topic(256, "overwrite", max_subscribers=3)
    pub = t.publisher()
    pub.send(b"before")
    sub = t.subscribe()
    seg = shmring.Segment.open(t.name)
    try:
        entry = struct.unpack_from("<QQQQ", seg.buf, SUBS)
        assert entry[0] != 0 and entry[1] == 32 and entry[2] == 1 and entry[3] == 0
        for i in range(10):
            pub.send(b"%d" % i)
        with pytest.raises(shmring.Lagged) as info:
            sub.recv(timeout=0)
        token, cursor, next_seq, lagged = struct.unpack_from("<QQQQ", seg.buf, SUBS)
        assert lagged == info.value.missed == 2 and next_seq == 3 and cursor == u64(seg.buf, CTRL["head"])
        sub.close()
        assert u64(seg.buf, SUBS) == 0  # token: the slot is free
    finally:
        seg.close()


def test_overwrite_exactly_filling_messages(topic: Callable[..., Topic]) -> None:
    t = topic(128, "overwrite")
    sub = t.subscribe()
    pub = t.publisher()
    pub.send(b"a" * 112)
    assert sub.recv(timeout=0) == b"a" * 112
    for c in b"bcd":
        pub.send(bytes([c]) * 112)
    with pytest.raises(shmring.Lagged) as info:
        sub.recv(timeout=0)
    assert info.value.missed == 2
    assert sub.recv(timeout=0) == b"d" * 112
    assert t.stats()["head"] == 3 * 128 and t.stats()["tail"] == 4 * 128


# -- a reader racing a fast publisher --------------------------------------------

RACE_N = 150_000


def _racing_publisher(t: Topic, go: Any, n: int) -> None:
    assert go.wait(OP_TIMEOUT)
    pub = t.publisher()
    for seq in range(n):
        pub.send(make_msg(0, seq, msg_size(0, seq, 700)))


@pytest.mark.timeout(60)
def test_overwrite_reader_racing_publisher(topic: Callable[..., Topic], kids: Kids) -> None:
    """Every message the reader gets is intact (never torn), each is the one
    it expects next (missed counts are exact at every Lagged), and in the
    end received + missed == published."""
    t = topic(2048, "overwrite")
    sub = t.subscribe()
    go = FORK.Event()
    p = kids.process(FORK, _racing_publisher, t, go, RACE_N)
    go.set()
    received = missed = lags = peeks = zero_lags = 0
    expect = 0
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        try:
            if received % 5 == 4:
                with sub.peek(timeout=0.3) as mv:
                    data = bytes(mv)
                peeks += 1
            else:
                data = sub.recv_bytes(timeout=0.3)
        except shmring.Lagged as e:
            zero_lags += e.missed == 0  # checked last: see test_overwrite_no_spurious_lagged_over_padding
            missed += e.missed
            expect += e.missed
            lags += 1
            continue
        except shmring.Timeout:
            if not p.is_alive():
                break
            continue
        pub_id, seq = check_msg(data)
        assert (pub_id, seq) == (0, expect), f"expected #{expect}, got #{seq} (received {received}, missed {missed})"
        expect += 1
        received += 1
    join_ok(p, 5, "publisher")
    assert received + missed == RACE_N == t.stats()["published"]
    assert sub.lagged == missed
    assert received > 0 and lags > 0, (received, lags)
    assert zero_lags == 0, f"{zero_lags} of {lags} Lagged exceptions said missed=0 (nothing was lost)"


def _publish_forever(topic: shmring.Topic, stop: Any, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    pub = topic.publisher()
    msg = b"x" * 48
    while not stop.is_set():
        for _ in range(1000):
            pub.send(msg)


@pytest.mark.timeout(60)
def test_a_lagging_subscriber_on_a_full_overwrite_ring_never_sees_false_corruption(name: str) -> None:
    """Resuming after a lag read head, then tail: a publish in between made a
    full ring look impossible (tail - head > capacity) and raised
    CorruptedError.  Publisher and reader on different CPUs race hardest."""
    import multiprocessing as mp
    import time

    cpus = sorted(os.sched_getaffinity(0))
    pin = len(cpus) >= 2
    ctx = mp.get_context("fork")
    with shmring.Topic.create(name, 1 << 20, "overwrite") as topic:
        sub = topic.subscribe()
        stop = ctx.Event()
        p = ctx.Process(target=_publish_forever, args=(topic, stop, cpus[0] if pin else None))
        before = os.sched_getaffinity(0)
        p.start()
        if pin:
            os.sched_setaffinity(0, {cpus[1]})
        got = lagged = 0
        try:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                try:
                    sub.recv_bytes(timeout=1)
                    got += 1
                except shmring.Lagged:
                    lagged += 1
                if got % 5000 == 0:
                    time.sleep(0.002)  # fall behind now and then: the ring fills in ~2 ms
        finally:
            os.sched_setaffinity(0, before)
            stop.set()
            p.join(10)
            sub.close()
        assert p.exitcode == 0 and got > 0 and lagged > 0  # it did lag, and recovered every time
