"""shmring.Topic: broadcast from publishers to subscribers.

Single-process semantics (pub/sub, late joiners, latest(), reserve, peek,
pickling), the two policies ("block": publishers wait for the slowest live
subscriber; "overwrite": publishers never wait and a lagging subscriber gets
Lagged with the exact number of messages it lost), a model of the ring
(records, padding, head/tail) checked with hypothesis, multi-process
broadcast and races, and faults: SIGKILLed subscribers and publishers, and
garbage written into the shared control block and records.

Helpers at module level run in child processes ("spawn" re-imports this
module).  Children report back over a pipe or queue; a child that hangs is
killed after a bounded join and the test fails, so no test hangs.

Layout (include/shmring.h, "Broadcast topic"): the control block at payload
offset 0, the subscriber table (32-byte entries) at 384, the ring at
data_offset; records are a 16-byte header {u32 len, u32 tag, u64 seq} plus
the payload, rounded up to 16 bytes, and never wrap.
"""

from __future__ import annotations

import copy
import gc
import multiprocessing as mp
import os
import pickle
import random
import re
import signal
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shmring
from shmring import Topic
from shmring import _core

from conftest import Kids

FORK = mp.get_context("fork")
SPAWN = mp.get_context("spawn")

# Bound on any single blocking call made by a test: a lost wake-up fails
# with Timeout instead of hanging until pytest-timeout.
OP_TIMEOUT = 10.0

# -- layout (include/shmring.h) ----------------------------------------------

CTRL = {
    "capacity": 0,
    "data_offset": 8,
    "policy": 16,
    "max_subscribers": 20,
    "spin_ns": 24,
    "lock": 64,
    "tail": 128,
    "head": 136,
    "next_seq": 144,
    "last_pos": 152,
}
SUBS = 384  # SHMRING_TOPIC_CTRL_SIZE: the subscriber table starts here
SUB_ENTRY = 32  # {token, cursor, next_seq, lagged}
HDR = 16
TAG_PAD, TAG_OBJECT, TAG_BYTES = 0x50, 0x4F, 0x42


def rec_size(n: int) -> int:
    return HDR + (n + 15) // 16 * 16


def data_offset(max_subscribers: int) -> int:
    return (SUBS + SUB_ENTRY * max_subscribers + 127) // 128 * 128


def u64(buf: memoryview, off: int) -> int:
    return int(struct.unpack_from("<Q", buf, off)[0])


def header(buf: memoryview, pos: int, capacity: int) -> tuple[int, int, int]:
    """(len, tag, seq) of the record at ring position ``pos``."""
    base = u64(buf, CTRL["data_offset"])
    ln, tag, seq = struct.unpack_from("<IIQ", buf, base + pos % capacity)
    return ln, tag, seq


# -- messages that check themselves --------------------------------------------

_NOISE = random.Random(0x70B1C).randbytes(1 << 16)


def make_msg(pub: int, seq: int, size: int) -> bytes:
    """Message ``seq`` of publisher ``pub``: {u32 pub, u64 seq}, filler, CRC-32
    of everything before it.  ``size`` >= 16."""
    off = (seq * 2654435761 + pub * 97) % (len(_NOISE) - size)
    body = struct.pack("<IQ", pub, seq) + _NOISE[off : off + size - 16]
    return body + zlib.crc32(body).to_bytes(4, "little")


def check_msg(data: bytes) -> tuple[int, int]:
    """Verify a message's checksum; returns (pub, seq)."""
    assert len(data) >= 16, f"message of {len(data)} bytes is too short"
    if zlib.crc32(data[:-4]) != int.from_bytes(data[-4:], "little"):
        raise AssertionError(f"checksum mismatch in a {len(data)}-byte message: torn or corrupted")
    pub, seq = struct.unpack_from("<IQ", data)
    assert data == make_msg(pub, seq, len(data)), "content differs from what was sent"
    return pub, seq


def msg_size(pub: int, seq: int, largest: int) -> int:
    return 16 + (seq * 7919 + pub * 31) % (largest - 15)


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture
def topic(new_name: Callable[[], str]) -> Iterator[Callable[..., Topic]]:
    """Factory of topics owned by the test (closed and unlinked after it)."""
    made: list[Topic] = []

    def make(capacity: int = 4096, policy: str = "block", **kw: Any) -> Topic:
        t = Topic.create(new_name(), capacity, policy, **kw)  # type: ignore[arg-type]
        made.append(t)
        return t

    try:
        yield make
    finally:
        for t in made:
            t.close()  # the last handle to leave removes the topic


def join_ok(p: Any, timeout: float, what: str) -> None:
    """Join a child that must exit cleanly within ``timeout`` seconds."""
    p.join(timeout)
    if p.is_alive():
        p.kill()
        p.join(5)
        raise AssertionError(f"{what}: still running after {timeout} s (hung); killed")
    assert p.exitcode == 0, f"{what}: exit code {p.exitcode} (negative = killed by that signal)"


# ====================================================================================
# Basics, one process
# ====================================================================================


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


def test_layout_matches_header() -> None:
    text = "".join(p.read_text() for p in sorted(Path(shmring.get_include()).rglob("*.h")))  # shmring.h and shmring/*.h
    asserted = {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"offsetof\(shmring_topic_ctrl,\s*(\w+)\)\s*==\s*(\d+)", text)
    }
    for field in ("tail", "head", "last_pos"):
        assert asserted[field] == CTRL[field], f"{field}: header says {asserted[field]}, tests use {CTRL[field]}"
    assert re.search(r"#define SHMRING_TOPIC_CTRL_SIZE %du" % SUBS, text)
    assert "sizeof(shmring_topic_sub) == %d" % SUB_ENTRY in text
    assert "sizeof(shmring_topic_record) == %d" % HDR in text
    for tag, value in (("PAD", TAG_PAD), ("OBJECT", TAG_OBJECT), ("BYTES", TAG_BYTES)):
        assert re.search(r"#define SHMRING_REC_%s 0x%Xu" % (tag, value), text), tag


def test_bad_arguments(new_name: Callable[[], str]) -> None:
    name = new_name()
    with pytest.raises(ValueError, match="policy"):
        Topic.create(name, 4096, "drop")  # type: ignore[arg-type]
    for capacity in (0, 112, 4095, 4104, (1 << 32) + 16):
        with pytest.raises(ValueError, match="multiple of 16"):
            Topic.create(name, capacity)
    with pytest.raises(TypeError):
        Topic.create(name, "4096")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_subscribers"):
        Topic.create(name, 4096, max_subscribers=0)
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
    with pytest.raises(TypeError):
        sub.send(b"x")  # a subscription does not publish
    with pytest.raises(TypeError):
        pub.recv(timeout=0)  # a publisher does not receive
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


def test_latest_frees_room_for_block_publishers(topic: Callable[..., Topic]) -> None:
    t = topic(256, "block")
    sub = t.subscribe()
    pub = t.publisher()
    for i in range(8):
        pub.send(b"%d" % i, timeout=0)  # 8 x 32-byte records: full
    with pytest.raises(shmring.Timeout):
        pub.send(b"x", timeout=0)
    assert sub.latest(timeout=0) == b"7"
    for i in range(8):
        pub.send(b"again %d" % i, timeout=0)


# -- reserve -----------------------------------------------------------------------


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
    t = topic(256, "block")
    sub = t.subscribe()
    pub = t.publisher()
    for i in range(8):
        pub.send(b"%d" % i, timeout=0)
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


# -- block policy --------------------------------------------------------------------


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
    t = topic(256, "block")
    sub = t.subscribe()
    pub = t.publisher()
    for i in range(8):
        pub.send(b"%d" % i, timeout=0)
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
    t = topic(256, "block")
    sub = t.subscribe()
    pub = t.publisher()
    for i in range(8):
        pub.send(b"%d" % i, timeout=0)
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


# -- overwrite policy ------------------------------------------------------------------


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


# ====================================================================================
# A model of the ring, checked with hypothesis (one process)
# ====================================================================================


class RingModel:
    """What include/shmring.h says the ring holds: records {pos: (tag, len,
    seq, payload, size)}, tail, head (the reclaim point), one subscriber."""

    def __init__(self, capacity: int, policy: str) -> None:
        self.cap = capacity
        self.policy = policy
        self.tail = self.head = self.next_seq = 0
        self.last_pos: int | None = None
        self.records: dict[int, tuple[int, int, int, bytes | None, int]] = {}
        self.cursor = self.sub_seq = self.lagged = 0

    def make_room(self, need: int) -> bool:
        if self.cap - (self.tail - self.head) >= need:
            return True
        target = self.tail + need - self.cap
        if self.policy == "block":
            if min(self.tail, self.cursor) < target:
                return False
            self.head = target
        else:
            h = self.head
            while h < target:
                h += self.records[h][4]
            self.head = h
        return True

    def reserve(self, n: int) -> int | None:
        """Where a record of ``n`` bytes goes, or None (no room); may publish a
        padding record first, as the C does."""
        need = rec_size(n)
        contig = self.cap - self.tail % self.cap
        if contig < need:
            if not self.make_room(contig):
                return None
            self.records[self.tail] = (TAG_PAD, contig - HDR, self.next_seq, None, contig)
            self.tail += contig
        if not self.make_room(need):
            return None
        return self.tail

    def commit(self, pos: int, payload: bytes) -> None:
        self.records[pos] = (TAG_BYTES, len(payload), self.next_seq, payload, rec_size(len(payload)))
        self.last_pos = pos
        self.tail = pos + rec_size(len(payload))
        self.next_seq += 1

    def recv(self) -> tuple[str, Any]:
        cur = self.cursor
        while True:
            if cur == self.tail:
                self.cursor = cur
                return "timeout", None
            if cur < self.head:
                if self.head >= self.tail:
                    pos, seq = self.tail, self.next_seq
                else:
                    pos, seq = self.head, self.records[self.head][2]
                missed = seq - self.sub_seq
                assert missed >= 0
                if missed == 0:
                    # head only passed padding: nothing was lost, so no
                    # Lagged (see test_overwrite_no_spurious_lagged_over_padding)
                    cur = pos
                    continue
                self.lagged += missed
                self.cursor, self.sub_seq = pos, seq
                return "lagged", missed
            tag, _, seq, payload, size = self.records[cur]
            if tag == TAG_PAD:
                cur += size
                continue
            self.cursor, self.sub_seq = cur + size, seq + 1
            return "msg", payload


def _payload(i: int, n: int) -> bytes:
    return bytes((i * 31 + j * 7) & 0xFF for j in range(n))


OPS = st.one_of(
    st.tuples(st.just("send"), st.integers(0, 1 << 16)),
    st.tuples(st.just("reserve"), st.integers(0, 1 << 16)),
    st.tuples(st.just("abort"), st.integers(0, 1 << 16)),
    st.tuples(st.just("recv"), st.just(0)),
    st.tuples(st.just("recv"), st.just(0)),
)


@pytest.mark.parametrize("policy", ["block", "overwrite"])
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    capacity=st.sampled_from([128, 144, 208, 256, 400, 1024]),
    ops=st.lists(OPS, min_size=1, max_size=60),
)
def test_ring_matches_model(policy: str, capacity: int, ops: list[tuple[str, int]]) -> None:
    """Random message sizes (every alignment, up to the whole ring), sends,
    reserves, aborted reserves and receives against the model: tail, head,
    message numbers, every record's header (padding included) and every
    message and Lagged.missed the subscriber gets."""
    model = RingModel(capacity, policy)
    with Topic.create(None, capacity, policy) as t:  # type: ignore[arg-type]
        sub = t.subscribe()
        pub = t.publisher()
        seg = shmring.Segment.open(t.name)
        try:
            buf = seg.buf
            for i, (op, raw_n) in enumerate(ops):
                n = raw_n % (capacity - HDR + 1)
                if op == "recv":
                    kind, value = model.recv()
                    if kind == "timeout":
                        with pytest.raises(shmring.Timeout):
                            sub.recv(timeout=0)
                    elif kind == "lagged":
                        with pytest.raises(shmring.Lagged) as info:
                            sub.recv(timeout=0)
                        assert info.value.missed == value
                    else:
                        assert sub.recv(timeout=0) == value
                    assert sub.lagged == model.lagged
                else:
                    data = _payload(i, n)
                    pos = model.reserve(n)
                    if pos is None:
                        with pytest.raises(shmring.Timeout):
                            if op == "send":
                                pub.send(data, timeout=0)
                            else:
                                with pub.reserve(n, timeout=0):
                                    pass
                    elif op == "abort":
                        with pytest.raises(ZeroDivisionError):
                            with pub.reserve(n, timeout=0) as mv:
                                mv[:] = data
                                1 / 0
                    else:
                        if op == "send":
                            pub.send(data, timeout=0)
                        else:
                            with pub.reserve(n, timeout=0) as mv:
                                mv[:] = data
                        model.commit(pos, data)
                        assert header(buf, pos, capacity) == (n, TAG_BYTES, model.next_seq - 1)
                stats = t.stats()
                assert (stats["tail"], stats["head"], stats["published"]) == (model.tail, model.head, model.next_seq)
                for pos, (tag, ln, seq, _, _) in model.records.items():
                    if pos >= model.head and tag == TAG_PAD:
                        assert header(buf, pos, capacity) == (ln, TAG_PAD, seq)
                if model.last_pos is not None and model.last_pos >= model.head:
                    # (when an aborted reserve reclaimed the newest record,
                    # see test_topic_latest_after_reclaiming_abort)
                    assert t.latest() == model.records[model.last_pos][3]
        finally:
            seg.close()
            sub.close()
            pub.close()


@pytest.mark.parametrize("policy", ["block", "overwrite"])
def test_every_alignment_wraps_with_padding(topic: Callable[..., Topic], policy: str) -> None:
    """For every payload size modulo 16 and every ring offset, messages wrap
    through a padding record and arrive intact."""
    t = topic(256, policy)
    sub = t.subscribe()
    pub = t.publisher()
    seg = shmring.Segment.open(t.name)
    try:
        pads = 0
        for i in range(400):
            n = (i * 37) % 120
            m = _payload(i, n)
            tail = t.stats()["tail"]
            pub.send(m, timeout=0)
            new_tail = t.stats()["tail"]
            if new_tail - tail != rec_size(n):
                pads += 1
                assert tail % 256 + rec_size(n) > 256  # padding only where it would not fit
                assert new_tail % 256 == rec_size(n) % 256
                assert header(seg.buf, tail, 256) == (256 - tail % 256 - HDR, TAG_PAD, i)
            assert sub.recv(timeout=0) == m
        assert pads > 20
    finally:
        seg.close()


# ====================================================================================
# Several processes
# ====================================================================================


N_PER_PUB = 4000


def _mp_subscriber(t: Topic, ready: Any, results: Any, n_pubs: int, n_each: int) -> None:
    try:
        sub = t.subscribe()
        ready.set()
        nxt = [0] * n_pubs
        for _ in range(n_pubs * n_each):
            m = sub.recv(timeout=OP_TIMEOUT)
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


def _mp_publisher(t: Topic, pub_id: int, n: int, largest: int) -> None:
    pub = t.publisher()
    for seq in range(n):
        m = make_msg(pub_id, seq, msg_size(pub_id, seq, largest))
        if pub_id % 2 == 0:
            if seq % 3 == 0:
                with pub.reserve(len(m), timeout=OP_TIMEOUT) as mv:
                    mv[:] = m
            else:
                pub.send(m, timeout=OP_TIMEOUT)
        else:
            pub.send_obj((pub_id, seq, m), timeout=OP_TIMEOUT)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("spin_ns", [0, 20_000])
def test_two_publishers_three_subscribers(topic: Callable[..., Topic], kids: Kids, spin_ns: int) -> None:
    """Block policy: every subscriber process gets every message exactly
    once, in each publisher's order, intact (spin_ns=0: every wait sleeps)."""
    t = topic(2048, "block", spin_ns=spin_ns)
    results = FORK.Queue()
    readies = [FORK.Event() for _ in range(3)]
    subs = [kids.process(FORK, _mp_subscriber, t, ev, results, 2, N_PER_PUB) for ev in readies]
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


# -- overwrite: a reader racing a fast publisher -------------------------------------


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


# ====================================================================================
# Faults: dead subscribers and publishers
# ====================================================================================


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


# -- topic.latest() must not hang ---------------------------------------------------

# topic.latest() answers in microseconds; a child still in it after this long
# spins forever.
HANG_S = 2.0


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
    p.join(HANG_S)
    hung = p.is_alive()
    if hung:
        p.kill()
        p.join(5)
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
    p.join(HANG_S)
    hung = p.is_alive()
    if hung:
        p.kill()
        p.join(5)
    assert not hung, "topic.latest() inside a reserve() block that reclaimed the newest record spins forever"
    kind, value = a.recv()
    assert kind == "latest" and value is None  # m3 was overwritten by the reserve's payload
    assert a.recv() == ("after", b"r" * 100)


# ====================================================================================
# Corruption: garbage in the shared control block and records
# ====================================================================================


def _corrupt(buf: memoryview, case: str) -> None:
    d = u64(buf, CTRL["data_offset"])
    tail = u64(buf, CTRL["tail"])
    put = {
        "tail_huge": ("<Q", CTRL["tail"], 0xDEADBEEF0),
        "tail_unaligned": ("<Q", CTRL["tail"], tail + 8),
        "tail_ahead": ("<Q", CTRL["tail"], tail + 48),
        "head_huge": ("<Q", CTRL["head"], 0xDEADBEEF0),
        "head_past_tail_max": ("<Q", CTRL["head"], 2**64 - 16),
        "head_unaligned": ("<Q", CTRL["head"], 8),
        "head_mid_record": ("<Q", CTRL["head"], 16),
        "len_huge": ("<I", d, 0xFFFFFFFF),
        "len_big": ("<I", d, 1000),
        "tag_bad": ("<I", d + 4, 0x5A),
        "tag_pad": ("<I", d + 4, TAG_PAD),
    }
    if case == "records_garbage":
        buf[d : d + 240] = b"\xa5" * 240
    else:
        fmt, off, value = put[case]
        struct.pack_into(fmt, buf, off, value)


def _corruption_child(names: list[str], case: str, conn: Any) -> None:
    """For each op, on its own topic: subscribe, publish 5 messages, write the
    garbage, then try the op three times.  Expected shmring exceptions are
    reported; anything else propagates (exit code 1); a crash is a signal."""
    report: dict[str, list[str]] = {}
    for op, name in zip(("recv", "peek", "sub_latest", "send"), names):
        t = Topic.open(name)
        sub = t.subscribe()
        pub = t.publisher()
        for i in range(5):
            pub.send(bytes([i]) * 20)  # 48-byte records at 0, 48, ... 192
        seg = shmring.Segment.open(name)
        _corrupt(seg.buf, case)
        out = report.setdefault(op, [])
        for _ in range(3):
            try:
                if op == "recv":
                    m = sub.recv(timeout=0.02)
                elif op == "peek":
                    with sub.peek(timeout=0.02) as mv:
                        m = bytes(mv)
                elif op == "sub_latest":
                    m = sub.latest(timeout=0.02)
                else:
                    pub.send(b"z" * 20, timeout=0.02)
                    m = b"sent"
                out.append("sent" if m == b"sent" else f"msg{m[0]}" if m == bytes([m[0]]) * 20 else f"BAD {m!r}")
            except (shmring.CorruptedError, shmring.Lagged, shmring.Timeout) as e:
                out.append(type(e).__name__)
        seg.close()
    conn.send(report)


# What the first receive (recv and peek) and the first publish must give.
CORRUPTION_CASES = {
    "tail_huge": ("CorruptedError", "CorruptedError"),
    "tail_unaligned": ("msg0", "CorruptedError"),
    "tail_ahead": ("CorruptedError", "CorruptedError"),
    # A reclaim point past tail, unaligned or inside a record: a clean error
    # either way (the resume point is checked; a plausible one reads as lag).
    "head_huge": ("Lagged|CorruptedError", "CorruptedError"),
    "head_past_tail_max": ("Lagged|CorruptedError", None),
    "head_unaligned": ("Lagged|CorruptedError", None),
    "head_mid_record": ("Lagged|CorruptedError", None),
    "len_huge": ("CorruptedError", None),
    "len_big": ("CorruptedError", None),
    "tag_bad": ("CorruptedError", None),
    "tag_pad": ("CorruptedError", None),
    "records_garbage": ("CorruptedError", None),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("policy", ["block", "overwrite"])
@pytest.mark.parametrize("case", sorted(CORRUPTION_CASES))
def test_corruption_is_a_clean_error(
    new_name: Callable[[], str], kids: Kids, case: str, policy: str
) -> None:
    names = [new_name() for _ in range(4)]
    topics = [Topic.create(n, 256, policy) for n in names]  # type: ignore[arg-type]
    try:
        a, b = FORK.Pipe()
        p = kids.process(FORK, _corruption_child, names, case, b)
        p.join(OP_TIMEOUT)
        if p.is_alive():
            p.kill()
            p.join(5)
            raise AssertionError(f"{case}: the child hung")
        assert p.exitcode >= 0, f"{case}: the child was killed by signal {-p.exitcode} (a crash)"
        assert p.exitcode == 0, f"{case}: the child raised an unexpected exception (see its stderr)"
        report = a.recv()
    finally:
        for t in topics:
            t.close()
    first_read, first_send = CORRUPTION_CASES[case]
    allowed = {"CorruptedError", "Lagged", "Timeout", "sent"} | {f"msg{i}" for i in range(6)}
    for op, outcomes in report.items():
        assert set(outcomes) <= allowed, f"{op}: {outcomes}: garbage handed out as a message"
    assert report["recv"][0] in first_read.split("|") and report["peek"][0] in first_read.split("|"), report
    if first_send is not None:
        assert report["send"][0] == first_send, report
    if case.startswith(("tail", "len", "tag", "records")) and first_read == "CorruptedError":
        assert report["recv"] == ["CorruptedError"] * 3  # it stays an error, never garbage


# What pickle.loads may raise on random bytes.
UNPICKLING_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    ImportError,
    OverflowError,
    MemoryError,
    UnicodeDecodeError,
)


def _fuzz_child(name: str, seed: int, rounds: int, conn: Any) -> None:
    rng = random.Random(seed)
    t = Topic.open(name)
    seg = shmring.Segment.open(name)
    buf = seg.buf
    d = u64(buf, CTRL["data_offset"])
    counts: dict[str, int] = {}
    for r in range(rounds):
        if r % 10 == 0:  # start from a sane ring now and then
            struct.pack_into("<QQ", buf, CTRL["tail"], 0, 0)
        sub = t.subscribe()
        pub = t.publisher()
        for _ in range(rng.randrange(1, 8)):
            try:
                pub.send(rng.randbytes(rng.randrange(0, 100)), timeout=0)
            except (shmring.CorruptedError, shmring.Timeout):
                pass
        where = rng.choice(["tail", "head", "next_seq", "last_pos", "header", "ring", "subscriber"])
        if where == "subscriber":
            entry = [rng.choice([0, 1, 16, 2**64 - 16, rng.getrandbits(64)]) for _ in range(4)]
            struct.pack_into("<QQQQ", buf, SUBS + SUB_ENTRY * rng.randrange(0, 4), *entry)
        elif where in ("tail", "head", "next_seq", "last_pos"):
            value = rng.choice([0, 8, 16, 2**63, 2**64 - 16, rng.getrandbits(64), rng.randrange(0, 2048) * 16])
            struct.pack_into("<Q", buf, CTRL[where], value)
        elif where == "header":
            off = d + rng.randrange(0, 512 // 16) * 16
            tag = rng.choice([TAG_BYTES, TAG_OBJECT, TAG_PAD, 0, rng.getrandbits(32)])
            struct.pack_into("<IIQ", buf, off, rng.getrandbits(32), tag, rng.getrandbits(64))
        else:
            off = d + rng.randrange(0, 512 - 8)
            buf[off : off + 8] = rng.randbytes(8)
        for _ in range(3):
            op = rng.choice(["recv", "recv_bytes", "peek", "latest", "send"])
            try:
                if op == "recv":
                    sub.recv(timeout=0)
                elif op == "recv_bytes":
                    sub.recv_bytes(timeout=0)
                elif op == "peek":
                    with sub.peek(timeout=0):
                        pass
                elif op == "latest":
                    sub.latest(timeout=0)
                else:
                    pub.send(b"x" * rng.randrange(0, 64), timeout=0)
                counts["ok"] = counts.get("ok", 0) + 1
            except (shmring.CorruptedError, shmring.Lagged, shmring.Timeout) as e:
                counts[type(e).__name__] = counts.get(type(e).__name__, 0) + 1
            except UNPICKLING_ERRORS:
                if op not in ("recv", "latest"):
                    raise
                counts["unpickle"] = counts.get("unpickle", 0) + 1  # a garbage 'O' record
        sub.close()
        pub.close()
    seg.close()
    conn.send(counts)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("policy", ["block", "overwrite"])
def test_corruption_fuzz_never_crashes(topic: Callable[..., Topic], kids: Kids, policy: str) -> None:
    """Random garbage in tail, head, next_seq, last_pos, the subscriber
    table, record headers and payloads, then every reading and publishing
    call of a subscription and a publisher: shmring exceptions only, never
    a crash or a hang (topic.latest() is left out: see
    test_topic_latest_with_garbage_does_not_hang)."""
    t = topic(512, policy)
    a, b = FORK.Pipe()
    p = kids.process(FORK, _fuzz_child, t.name, 1234, 1500, b)
    p.join(20)
    if p.is_alive():
        p.kill()
        p.join(5)
        raise AssertionError("the fuzzing child hung")
    assert p.exitcode >= 0, f"the fuzzing child was killed by signal {-p.exitcode} (a crash)"
    assert p.exitcode == 0, "the fuzzing child raised an unexpected exception (see its stderr)"
    counts = a.recv()
    assert counts.get("CorruptedError", 0) > 0 and counts.get("ok", 0) > 0, counts


def _corrupt_latest_child(name: str, case: str, conn: Any) -> None:
    t = Topic.open(name)
    pub = t.publisher()
    for i in range(5):
        pub.send(bytes([i]) * 20)
    seg = shmring.Segment.open(name)
    buf = seg.buf
    tail = u64(buf, CTRL["tail"])
    if case == "last_pos_past_tail":
        struct.pack_into("<Q", buf, CTRL["last_pos"], tail + 0x1000)
    elif case == "tail_zero":
        struct.pack_into("<Q", buf, CTRL["tail"], 0)
    else:
        _corrupt(buf, case)
    try:
        conn.send(repr(t.latest()))
    except (shmring.CorruptedError, shmring.Lagged) as e:
        conn.send(type(e).__name__)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", ["head_huge", "last_pos_past_tail", "tail_huge"])
def test_topic_latest_with_garbage_does_not_hang(topic: Callable[..., Topic], kids: Kids, case: str) -> None:
    t = topic(256, "overwrite")
    a, b = FORK.Pipe()
    p = kids.process(FORK, _corrupt_latest_child, t.name, case, b)
    p.join(HANG_S)
    hung = p.is_alive()
    if hung:
        p.kill()
        p.join(5)
    assert not hung, f"{case}: topic.latest() spins forever (uninterruptibly) instead of raising CorruptedError"
    assert p.exitcode == 0, f"{case}: exit code {p.exitcode}"
    assert a.recv() in ("CorruptedError", "Lagged", "None", repr(bytes([4]) * 20))


def test_garbage_object_payload_is_a_clean_exception(topic: Callable[..., Topic]) -> None:
    """A send_obj record whose pickle was overwritten: recv raises (the
    unpickling error), recv_bytes still returns the raw bytes."""
    t = topic(256)
    sub = t.subscribe()
    t.publisher().send_obj({"a": 1})
    seg = shmring.Segment.open(t.name)
    try:
        d = u64(seg.buf, CTRL["data_offset"])
        assert header(seg.buf, 0, 256)[1] == TAG_OBJECT
        seg.buf[d + HDR : d + HDR + 4] = b"\xff\xfe\xfd\xfc"
    finally:
        seg.close()
    with pytest.raises(Exception) as info:
        sub.recv(timeout=0)
    assert not isinstance(info.value, (shmring.Timeout, shmring.Lagged))
    with pytest.raises(shmring.Timeout):
        sub.recv(timeout=0)  # the bad record was consumed
