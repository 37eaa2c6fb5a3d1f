"""Channel API in one process: semantics, boundaries, errors, record layout.

Multi-process stress and fault tests live in test_channel_stress.py.
"""

from __future__ import annotations

import gc
import os
import pickle
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shmring
from shmring import _core

SHM = Path("/dev/shm")
REC = 8  # record header: u32 length, u32 tag
CTRL = 640  # control block before the ring's data (include/shmring.h)


def record_size(n: int) -> int:
    return REC + (n + 7) // 8 * 8


@pytest.fixture
def ch(name: str) -> Iterator[shmring.Channel]:
    with shmring.Channel.create(name, 1024) as channel:
        yield channel


# -- creating and opening ---------------------------------------------------


def test_create_defaults_and_properties(name: str) -> None:
    with shmring.Channel.create(name) as c:
        assert c.name == name and c.owner and not c.closed
        assert c.capacity == 1 << 20 and c.max_message == (1 << 20) - REC
        assert c.wait == "adaptive" and c.spin_ns == _core.CHANNEL_DEFAULT_SPIN_NS
        assert c.segment.info().kind == "channel"
        assert c.segment.size == CTRL + c.capacity
        assert "owner" in repr(c)
    assert not (SHM / name).exists()


def test_unique_name() -> None:
    with shmring.Channel.create() as a, shmring.Channel.create() as b:
        assert a.name != b.name


@pytest.mark.parametrize("capacity", [0, 63, 100, 1000, 3 << 10, 1 << 33])
def test_bad_capacity(name: str, capacity: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        shmring.Channel.create(name, capacity)
    assert not (SHM / name).exists()


def test_bad_arguments(name: str) -> None:
    with pytest.raises(TypeError):
        shmring.Channel.create(name, "1024")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="wait"):
        shmring.Channel.create(name, 1024, "sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="spin_ns"):
        shmring.Channel.create(name, 1024, spin_ns=-5)
    with pytest.raises(ValueError, match="mode"):
        shmring.Channel.create(name, 1024, mode=0o1777)
    with pytest.raises(TypeError, match="Channel.create"):
        shmring.Channel()
    assert not (SHM / name).exists()


def test_open_and_override_wait(ch: shmring.Channel) -> None:
    with shmring.Channel.open(ch.name, "spin", spin_ns=5) as other:
        assert other.wait == "spin" and other.spin_ns == 5 and not other.owner
    with shmring.Channel.open(ch.name) as other:
        assert other.wait == "adaptive"
    assert (SHM / ch.name).exists()  # a non-owner's with-block does not unlink


def test_open_a_plain_segment_is_refused(segment: shmring.Segment) -> None:
    with pytest.raises(ValueError, match="not a channel"):
        shmring.Channel.open(segment.name)


def test_open_missing(name: str) -> None:
    with pytest.raises(FileNotFoundError):
        shmring.Channel.open(name)


# -- messages ---------------------------------------------------------------


def test_send_recv_any_bytes_like(ch: shmring.Channel) -> None:
    import array

    ch.send(b"bytes")
    ch.send(bytearray(b"bytearray"))
    ch.send(memoryview(b"xmemoryviewx")[1:-1])
    ch.send(array.array("i", [1, 2]))
    ch.send(b"")
    assert ch.recv() == b"bytes"
    assert ch.recv() == b"bytearray"
    assert ch.recv() == b"memoryview"
    assert ch.recv() == array.array("i", [1, 2]).tobytes()
    assert ch.recv() == b""
    assert ch.try_recv() is None


@pytest.mark.parametrize("bad", ["text", 3, None, [1, 2]])
def test_send_wrong_types(ch: shmring.Channel, bad: object) -> None:
    with pytest.raises(TypeError):
        ch.send(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ch.try_send(bad)  # type: ignore[arg-type]
    assert ch.try_recv() is None  # nothing half-sent


def test_keywords_and_argument_errors(ch: shmring.Channel) -> None:
    ch.send(data=b"k", timeout=1.0)
    assert ch.recv(timeout=1) == b"k"
    with pytest.raises(TypeError, match="unexpected keyword"):
        ch.send(b"x", timeot=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="missing required"):
        ch.send()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="at most"):
        ch.send(b"x", 1, 2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="duplicate"):
        ch.send(b"x", data=b"y")  # type: ignore[misc]
    with pytest.raises(ValueError, match="non-negative"):
        ch.recv(timeout=-1)
    with pytest.raises(ValueError, match="non-negative"):
        ch.recv(timeout=float("nan"))
    with pytest.raises(TypeError):
        ch.recv(timeout="soon")  # type: ignore[arg-type]


def test_too_big_fails_at_once(ch: shmring.Channel) -> None:
    assert ch.max_message == 1024 - REC
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="can never fit"):
        ch.send(bytes(ch.max_message + 1))
    with pytest.raises(ValueError, match="can never fit"):
        ch.try_send(bytes(2000))
    with pytest.raises(ValueError, match="can never fit"):
        ch.reserve(ch.max_message + 1)
    assert time.monotonic() - t0 < 1
    ch.send(bytes(ch.max_message))  # the largest does fit, in an empty ring
    assert ch.recv() == bytes(ch.max_message)


def test_full_and_empty(ch: shmring.Channel) -> None:
    assert ch.try_recv() is None
    with pytest.raises(shmring.Timeout):
        ch.recv(timeout=0)
    n = 0
    while ch.try_send(bytes([n]) * 56):  # 64-byte records: 16 fill 1024 exactly
        n += 1
    assert n == 16
    assert ch.stats()["fill_bytes"] == 1024
    t0 = time.monotonic()
    with pytest.raises(shmring.Timeout) as info:
        ch.send(b"more", timeout=0.1)
    assert 0.09 <= time.monotonic() - t0 < 2
    assert isinstance(info.value, TimeoutError)
    for i in range(n):
        assert ch.recv() == bytes([i]) * 56
    assert ch.try_recv() is None


def test_timeout_waits_about_as_long_as_asked(ch: shmring.Channel) -> None:
    for timeout in (0.05, 0.2):
        t0 = time.monotonic()
        with pytest.raises(shmring.Timeout):
            ch.recv(timeout=timeout)
        assert timeout <= time.monotonic() - t0 < timeout + 1


def test_wrap_around_with_padding(ch: shmring.Channel) -> None:
    """Messages whose records do not fit before the end of the ring start
    again at offset 0 behind a padding record; every byte survives."""
    sent = 0
    for round_ in range(200):
        size = (round_ * 37) % (ch.max_message + 1)
        msg = bytes((round_ + i) % 251 for i in range(size))
        ch.send(msg)
        assert ch.recv() == msg
        sent += record_size(size)
    stats = ch.stats()
    assert stats["head"] == stats["tail"] >= sent  # padding records count too
    assert stats["sent_messages"] == stats["received_messages"] == 200


def test_send_many_recv_many(ch: shmring.Channel) -> None:
    msgs = [bytes([i]) * (i % 20) for i in range(40)]
    assert ch.send_many(msgs) == 40
    got = ch.recv_many(25)
    assert got == msgs[:25]
    assert ch.recv_many(100) == msgs[25:]
    assert ch.send_many(iter([b"a", bytearray(b"b")])) == 2  # any iterable of buffers
    assert ch.recv_many(max_messages=10, timeout=1) == [b"a", b"b"]
    assert ch.send_many([]) == 0
    with pytest.raises(shmring.Timeout):
        ch.recv_many(5, timeout=0)
    with pytest.raises(ValueError):
        ch.recv_many(0)


def test_send_many_stops_at_timeout_and_says_how_far(ch: shmring.Channel) -> None:
    with pytest.raises(shmring.Timeout) as info:
        ch.send_many([bytes(100)] * 20, timeout=0.05)
    sent = info.value.sent  # type: ignore[attr-defined]
    assert 0 < sent < 20
    assert len(ch.recv_many(100)) == sent


def test_send_many_bad_item_delivers_nothing(ch: shmring.Channel) -> None:
    """The batch is checked whole before anything is written (issue 9)."""
    with pytest.raises(TypeError):
        ch.send_many([b"one", b"two", "three", b"four"])  # type: ignore[list-item]
    assert ch.try_recv() is None
    with pytest.raises(ValueError, match="can never fit"):
        ch.send_many([b"one", bytes(ch.max_message + 1), b"three"])
    assert ch.try_recv() is None
    assert ch.send_many([b"one", b"two"]) == 2
    assert ch.recv_many(10) == [b"one", b"two"]


def test_recv_into(ch: shmring.Channel) -> None:
    ch.send(b"0123456789")
    small = bytearray(4)
    with pytest.raises(ValueError, match="too small"):
        ch.recv_into(small)
    buf = bytearray(16)
    assert ch.recv_into(buf) == 10  # the message stayed until it fitted
    assert bytes(buf[:10]) == b"0123456789"
    with pytest.raises(TypeError):
        ch.recv_into(b"readonly")
    with pytest.raises(shmring.Timeout):
        ch.recv_into(buf, timeout=0)


# -- zero copy --------------------------------------------------------------


def test_reserve_commits_on_exit(ch: shmring.Channel) -> None:
    with ch.reserve(5) as mv:
        assert isinstance(mv, _core.Loan) and len(mv) == 5 and not mv.readonly
        mv[:] = b"hello"
        assert ch.try_recv() is None  # not visible before the commit
    assert ch.recv() == b"hello"


def test_reserve_discarded_on_exception(ch: shmring.Channel) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with ch.reserve(5) as mv:
            mv[:] = b"wrong"
            raise RuntimeError("boom")
    assert ch.try_recv() is None
    ch.send(b"next")
    assert ch.recv() == b"next"


def test_reserve_blocks_other_sends_until_done(ch: shmring.Channel) -> None:
    region = ch.reserve(3)
    with pytest.raises(RuntimeError, match="reserve"):
        ch.send(b"x")
    with region as mv:
        mv[:] = b"abc"
    ch.send(b"x")
    assert ch.recv_many(5) == [b"abc", b"x"]


def test_peek_releases_on_exit(ch: shmring.Channel) -> None:
    ch.send(b"first")
    ch.send(b"second")
    with ch.peek() as mv:
        assert mv.readonly and bytes(mv) == b"first"
        with pytest.raises(TypeError):
            mv[0] = 1
    assert ch.recv() == b"second"


def test_peek_without_with_consumes_nothing(ch: shmring.Channel) -> None:
    ch.send(b"kept")
    region = ch.peek()
    assert region.nbytes == 4
    del region
    assert ch.recv() == b"kept"


def test_view_used_after_release_raises(ch: shmring.Channel) -> None:
    ch.send(b"gone")
    with ch.peek() as mv:
        pass
    with pytest.raises(ValueError, match="released"):
        bytes(mv)
    with ch.reserve(4) as wmv:
        wmv[:] = b"ok!!"
    with pytest.raises(ValueError):
        wmv[0] = 1


def test_escaped_slice_keeps_the_message(ch: shmring.Channel) -> None:
    ch.send(b"precious")
    with pytest.raises(shmring.BufferInUseError, match="still alive"):
        with ch.peek() as mv:
            escaped = mv[2:5]
    assert bytes(escaped) == b"eci"  # still valid memory: the record was kept
    ch.send(b"later")
    with pytest.raises(shmring.BufferInUseError):
        ch.recv()  # the held record cannot be released yet
    escaped.release()
    assert ch.recv() == b"later"  # the peeked record was released first


def test_escaped_export_from_reserve(ch: shmring.Channel) -> None:
    with pytest.raises(shmring.BufferInUseError):
        with ch.reserve(4) as mv:
            mv[:] = b"abcd"
            exported = memoryview(mv)  # a buffer export, as numpy would take
    assert ch.try_recv() is None  # not committed while a view lives
    exported.release()
    ch.close()  # the pending reserve is discarded, the handle closes


def test_region_entered_twice(ch: shmring.Channel) -> None:
    ch.send(b"x")
    region = ch.peek()
    with region:
        with pytest.raises(RuntimeError, match="once"):
            region.__enter__()


# -- closing ----------------------------------------------------------------


def test_writer_close_ends_the_stream(name: str) -> None:
    with shmring.Channel.create(name, 1024) as reader:
        writer = shmring.Channel.open(name)
        writer.send_many([b"a", b"b", b"c"])
        writer.close()
        assert writer.closed
        assert list(reader) == [b"a", b"b", b"c"]
        with pytest.raises(shmring.Closed) as info:
            reader.recv(timeout=5)
        assert isinstance(info.value, EOFError)
        with pytest.raises(shmring.Closed):
            reader.try_recv()
        assert reader.stats()["writer_closed"]


def test_reader_close_stops_the_writer(name: str) -> None:
    with shmring.Channel.create(name, 1024) as writer:
        reader = shmring.Channel.open(name)
        writer.send(b"x")
        assert reader.recv() == b"x"
        reader.close()
        with pytest.raises(shmring.Closed, match="reader closed"):
            writer.send(b"y")
        with pytest.raises(shmring.Closed):
            writer.try_send(b"y")


def test_closed_handle(ch: shmring.Channel) -> None:
    ch.close()
    ch.close()  # idempotent
    for call in (lambda: ch.send(b"x"), ch.recv, ch.try_recv, lambda: ch.reserve(1), ch.peek):
        with pytest.raises(shmring.Closed, match="handle is closed"):
            call()
    with pytest.raises(ValueError, match="closed"):
        pickle.dumps(ch)


def test_unused_handle_close_does_not_end_the_stream(name: str) -> None:
    with shmring.Channel.create(name, 1024) as c:
        bystander = shmring.Channel.open(name)
        bystander.close()  # never sent nor received: holds no end
        c.send(b"still open")
        assert c.recv(timeout=1) == b"still open"


def test_dropped_writer_handle_gives_its_end_back_without_ending_the_stream(name: str) -> None:
    """Garbage collection never ends a stream (issue 9): what the dropped
    writer sent arrives, the stream stays open, and another handle can take
    the producer end."""
    with shmring.Channel.create(name, 1024) as reader:
        writer = shmring.Channel.open(name)
        writer.send(b"last")
        del writer
        gc.collect()
        assert reader.recv() == b"last"
        with pytest.raises(shmring.Timeout):
            reader.recv(timeout=0.1)
        assert not reader.stats()["writer_closed"]
        with shmring.Channel.open(name) as successor:
            successor.send(b"more")
            assert reader.recv(timeout=1) == b"more"


def test_dropped_reader_handle_does_not_stop_the_writer(name: str) -> None:
    with shmring.Channel.create(name, 1024) as writer:
        reader = shmring.Channel.open(name)
        writer.send(b"first")
        assert reader.recv(timeout=1) == b"first"
        del reader
        gc.collect()
        writer.send(b"second")  # no Closed: the reader end was only given back
        assert not writer.stats()["reader_closed"]
        with shmring.Channel.open(name) as successor:
            assert successor.recv(timeout=1) == b"second"


def test_segment_stays_mapped_while_the_channel_uses_it(ch: shmring.Channel) -> None:
    with pytest.raises(shmring.BufferInUseError):
        ch.segment.close()
    ch.send(b"fine")
    assert ch.recv() == b"fine"


# -- ends and threads -------------------------------------------------------


def test_two_handles_in_one_process_cannot_share_an_end(ch: shmring.Channel) -> None:
    ch.send(b"mine")
    with shmring.Channel.open(ch.name) as other:
        with pytest.raises(shmring.RoleTaken, match="another handle in this process"):
            other.send(b"theirs")
        with pytest.raises(shmring.RoleTaken):
            with other.reserve(1):
                pass
        assert ch.recv() == b"mine"
        with pytest.raises(shmring.RoleTaken):
            other.recv(timeout=0)
    with shmring.Channel.open(ch.name) as third:
        ch.close()  # gives both ends back, and (as the reader) closes the stream
        with pytest.raises(shmring.Closed, match="reader closed"):
            third.send(b"too late")


def test_try_calls_do_not_wait_for_another_threads_call(ch: shmring.Channel) -> None:
    """A thread blocked in recv holds the receiving end: try_recv from
    another thread returns None at once (it never waits), recv(timeout=0)
    times out, and the sending end stays free."""
    got: list[bytes] = []
    t = threading.Thread(target=lambda: got.append(ch.recv(timeout=10)))
    t.start()
    deadline = time.monotonic() + 10
    while True:  # until the thread is inside recv
        with pytest.raises(shmring.Timeout) as info:
            ch.recv(timeout=0)
        if "another thread" in str(info.value):
            break
        assert time.monotonic() < deadline, "the thread never entered recv"
        time.sleep(0.01)
    assert ch.try_recv() is None
    ch.send(b"wake")
    t.join(10)
    assert not t.is_alive() and got == [b"wake"]


def test_blocking_recv_releases_the_gil(ch: shmring.Channel) -> None:
    ticks = 0
    done = threading.Event()

    def counter() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0.001)

    t = threading.Thread(target=counter)
    t.start()
    try:
        with pytest.raises(shmring.Timeout):
            ch.recv(timeout=0.3)
    finally:
        done.set()
        t.join()
    assert ticks > 50  # the other thread ran while recv waited


# -- stats ------------------------------------------------------------------


def test_stats(ch: shmring.Channel) -> None:
    ch.send_many([b"12345", b"678"])
    s = ch.stats()
    assert s["sent_messages"] == 2 and s["sent_bytes"] == 8
    assert s["fill_bytes"] == record_size(5) + record_size(3)
    assert s["producer_pid"] == os.getpid() and s["producer_alive"]
    ch.recv_many(10)
    ch.try_recv()  # an empty ring hands everything back
    s = ch.stats()
    assert s["received_messages"] == 2 and s["received_bytes"] == 8 and s["fill_bytes"] == 0
    assert s["consumer_pid"] == os.getpid()
    assert not s["writer_closed"] and not s["reader_closed"]


# -- pickling ---------------------------------------------------------------


def test_pickle_reattaches_with_same_overrides(ch: shmring.Channel) -> None:
    with shmring.Channel.open(ch.name, "adaptive", spin_ns=1234) as tuned:
        clone = pickle.loads(pickle.dumps(tuned))
        try:
            assert clone.name == ch.name and clone.wait == "adaptive" and clone.spin_ns == 1234
            assert not clone.owner
        finally:
            clone.close()


# -- the record layout, property-based ---------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    capacity_log=st.integers(6, 12),
    ops=st.lists(st.tuples(st.booleans(), st.integers(0, 4096)), min_size=1, max_size=120),
)
def test_records_against_a_model(new_name: Callable[[], str], capacity_log: int, ops: list[tuple[bool, int]]) -> None:
    """Random interleavings of sends and receives against a model of the
    ring's accounting (docs/PROTOCOL.md): 8-byte record headers, 8-byte
    alignment, padding where a record would cross the end.  A send must fit
    exactly when the model says so."""
    capacity = 1 << capacity_log
    with shmring.Channel.create(new_name(), capacity) as c:
        ring: deque[tuple[int, bytes | None]] = deque()  # (record bytes, message or None for padding)
        head = tail = 0
        for seq, (is_send, size) in enumerate(ops):
            if is_send:
                size %= c.max_message + 1
                msg = struct.pack("<I", seq)[: min(4, size)] + bytes([seq % 256]) * max(0, size - 4)
                need = record_size(size)
                contig = capacity - tail % capacity
                if need > contig and capacity - (tail - head) >= contig:
                    ring.append((contig, None))  # padding is written as soon as it fits
                    tail += contig
                fits = need <= capacity - tail % capacity and capacity - (tail - head) >= need
                assert c.try_send(msg) is fits
                if fits:
                    ring.append((need, msg))
                    tail += need
            else:
                got = c.try_recv()
                while ring and ring[0][1] is None:  # the reader steps over padding
                    head += ring.popleft()[0]
                if ring:
                    rec, msg = ring.popleft()
                    assert got == msg
                    head += rec
                else:
                    assert got is None
            s = c.stats()
            assert (s["tail"], s["head"]) == (tail, head)
        rest = [m for _, m in ring if m is not None]
        assert (c.recv_many(10_000) if rest else []) == rest
