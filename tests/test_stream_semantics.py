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

import io
import multiprocessing as mp
import os
import signal
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import shmring
from shmring import Topic, _core

from conftest import Kids

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


def _pool_task(arg: tuple[shmring.Channel, int]) -> int:
    ch, i = arg
    # The reproduction as written: no coordination between the
    # workers.  Before issue 9: Closed (the first dropped handle had ended
    # the stream).  Two workers sending at once share the producer end in
    # turn: the second send waits until the first worker's dropped handle
    # gives the end back.
    ch.send(b"message %d" % i)
    return i


@pytest.mark.parametrize("ctx", [FORK, SPAWN], ids=["fork", "spawn"])
def test_pool_workers_dropping_their_handles_deliver_every_message(ctx: Any, name: str) -> None:
    """Each worker re-attaches the pickled channel, sends, and drops its
    handle after the task; the next task's handle takes the producer end."""
    with shmring.Channel.create(name, 4096) as ch:
        with ctx.Pool(2) as pool:
            assert sorted(pool.map(_pool_task, [(ch, i) for i in range(4)])) == [0, 1, 2, 3]
        got = sorted(ch.recv(timeout=STEP) for _ in range(4))
        assert got == [b"message %d" % i for i in range(4)]
        assert not ch.stats()["writer_closed"]


def _one_liner_recv(name: str) -> bytes:
    return shmring.Channel.open(name).recv(timeout=STEP)


def test_one_liner_open_recv_in_a_child_does_not_close_the_reader(name: str, kids: Kids) -> None:
    with shmring.Channel.create(name, 4096) as ch:
        ch.send(b"one")
        assert kids.start(FORK, _one_liner_recv, name).result() == b"one"
        ch.send(b"two")  # no "Closed: the reader closed the channel"
        assert not ch.stats()["reader_closed"]
        assert kids.start(SPAWN, _one_liner_recv, name).result() == b"two"


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


def _dirty_channel_ring(ch: shmring.Channel) -> None:
    """Send and receive 0xEE-filled messages all around the ring, so that
    every byte of it holds old data, and leave the tail at offset 0."""
    for _ in range(2):
        ch.send(b"\xee" * ch.max_message)
        assert ch.recv() == b"\xee" * ch.max_message


def test_channel_reserve_is_zero_filled(name: str) -> None:
    with shmring.Channel.create(name, 256) as ch:
        _dirty_channel_ring(ch)
        with ch.reserve(40) as buf:
            assert bytes(buf) == bytes(40)
            buf[:3] = b"abc"
        assert ch.recv() == b"abc" + bytes(37)


def test_channel_commit_cuts_the_message(name: str) -> None:
    with shmring.Channel.create(name, 256) as ch:
        _dirty_channel_ring(ch)
        with ch.reserve(40) as buf:
            buf[:3] = b"abc"
            buf.commit(3)
        assert ch.recv() == b"abc"
        with ch.reserve(40) as buf:
            buf[:5] = b"hello"
            buf.commit(40)
            buf.commit(5)  # the last call wins
            assert buf.committed == 5
        with ch.reserve(16) as buf:
            buf.commit(0)
        assert ch.recv_many(5) == [b"hello", b""]
        assert ch.stats()["sent_bytes"] == 2 * ch.max_message + 3 + 5 + 0  # what was sent, not what was reserved


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


@pytest.mark.parametrize("kind", ["channel", "topic"])
def test_commit_bounds_and_lifetime(kind: str, name: str, topic: Callable[..., Topic]) -> None:
    if kind == "channel":
        ch = shmring.Channel.create(name, 1024)
        reserve: Callable[[int], _core.Loan] = ch.reserve
    else:
        pub = topic(1024).publisher()
        reserve = pub.reserve
    try:
        with reserve(10) as buf:
            for bad in (-1, 11):
                with pytest.raises(ValueError, match="0 to 10"):
                    buf.commit(bad)
            with pytest.raises(TypeError):
                buf.commit("3")  # type: ignore[arg-type]
            buf.commit(10)
        with pytest.raises(ValueError, match="over"):
            buf.commit(1)
    finally:
        if kind == "channel":
            ch.close()  # its only user: this removes it


def test_commit_is_refused_on_a_peek(name: str, topic: Callable[..., Topic]) -> None:
    with shmring.Channel.create(name, 1024) as ch:
        ch.send(b"read only")
        with ch.peek() as buf:
            assert buf.readonly and buf.committed is None
            with pytest.raises(TypeError, match="read-only"):
                buf.commit(1)
            with pytest.raises(TypeError):
                buf[0] = 1
        assert ch.try_recv() is None  # the peek consumed it all the same
    t = topic()
    sub, pub = t.subscribe(), t.publisher()
    pub.send(b"read only")
    with sub.peek(timeout=0) as buf:
        with pytest.raises(TypeError, match="read-only"):
            buf.commit(1)


@pytest.mark.parametrize("kind", ["channel", "topic"])
def test_loan_serves_buffer_users_without_numpy(kind: str, name: str, topic: Callable[..., Topic]) -> None:
    if kind == "channel":
        ch = shmring.Channel.create(name, 1024)
        reserve, peek, receive = ch.reserve, ch.peek, ch.recv
    else:
        t = topic(1024)
        sub, pub = t.subscribe(), t.publisher()
        reserve, peek, receive = pub.reserve, sub.peek, lambda: sub.recv(timeout=0)
    try:
        with reserve(16) as buf:
            assert len(buf) == 16 and buf.nbytes == 16 and buf[0] == 0
            assert io.BytesIO(b"0123456789").readinto(buf) == 10  # f.readinto(x)
            struct.pack_into("<I", buf, 12, 0xDEADBEEF)  # any buffer consumer
            view = memoryview(buf)  # memoryview(x), released before the block ends
            view[10:12] = b"!!"
            view.release()
            assert buf.cast("B")[10] == ord("!")  # memoryview API through the loan
            assert buf[10:12] == b"!!" and buf.tobytes()[:4] == b"0123"
            assert list(buf)[:2] == [ord("0"), ord("1")]
            assert buf.format == "B" and buf.itemsize == 1
            buf.release()  # drops the memoryview behind the API; the loan stays usable
            assert buf[0] == ord("0")
        expected = b"0123456789!!" + struct.pack("<I", 0xDEADBEEF)
        if kind == "channel":
            ch.send(expected)
        else:
            pub.send(expected)
        assert receive() == expected
        with peek() as seen:
            assert bytes(seen) == expected and seen == expected
            assert memoryview(seen).readonly
            sink = bytearray(16)
            sink[:] = seen  # a read-only buffer user
            assert bytes(sink) == expected
        with pytest.raises(ValueError, match="released"):
            bytes(seen)
        with pytest.raises(ValueError, match="released"):
            seen.tobytes()
    finally:
        if kind == "channel":
            ch.close()  # its only user: this removes it


@pytest.mark.parametrize("kind", ["channel", "topic"])
def test_escaped_view_keeps_the_reserve_until_released(kind: str, name: str, topic: Callable[..., Topic]) -> None:
    """A view that outlives its block: BufferInUseError at exit, nothing
    sent; the next call on that end completes the loan once it is released."""
    if kind == "channel":
        ch = shmring.Channel.create(name, 1024)
        reserve, send = ch.reserve, ch.send
        received = lambda: ch.recv_many(10, timeout=0)  # noqa: E731
    else:
        t = topic(1024)
        sub, pub = t.subscribe(), t.publisher()
        reserve, send = pub.reserve, pub.send
        received = lambda: [sub.recv(timeout=0) for _ in range(1)]  # noqa: E731
    try:
        with pytest.raises(shmring.BufferInUseError):
            with reserve(4) as buf:
                buf[:] = b"lost"
                escaped = memoryview(buf)
        with pytest.raises(shmring.BufferInUseError):
            send(b"next")  # the reserve is still out
        escaped.release()
        send(b"next")  # completes (drops) the reserve first
        assert received() == [b"next"]
    finally:
        if kind == "channel":
            ch.close()  # its only user: this removes it


# ==========================================================================
# 3. send_many: one publication
# ==========================================================================


def test_send_many_timeout_of_a_batch_that_fits_delivers_nothing(name: str) -> None:
    with shmring.Channel.create(name, 1024) as ch:
        for i in range(12):
            ch.send(bytes([i]) * 56)  # 12 x 64 of the 1024 bytes
        batch = [b"x" * 56] * 5  # 320 bytes: fits the ring, not the 256 left
        with pytest.raises(shmring.Timeout) as info:
            ch.send_many(batch, timeout=0.05)
        assert info.value.sent == 0  # type: ignore[attr-defined]
        with pytest.raises(shmring.Timeout) as info:
            ch.send_many(batch, timeout=0)
        assert info.value.sent == 0  # type: ignore[attr-defined]
        assert ch.recv_many(100) == [bytes([i]) * 56 for i in range(12)]
        assert ch.send_many(batch, timeout=0) == 5  # now it fits whole
        assert ch.recv_many(100) == batch


def test_send_many_larger_than_the_ring_goes_in_parts_and_says_how_many(name: str) -> None:
    with shmring.Channel.create(name, 256) as ch:
        batch = [bytes([i]) * 56 for i in range(10)]  # 640 bytes of records in a 256-byte ring
        with pytest.raises(shmring.Timeout) as info:
            ch.send_many(batch, timeout=0.05)
        sent = info.value.sent  # type: ignore[attr-defined]
        assert sent == 4
        assert ch.recv_many(100) == batch[:sent]


def test_send_many_whole_batch_that_needs_the_ring_from_offset_zero(name: str) -> None:
    """A batch of exactly one ring's worth, with the tail mid-ring: it is
    placed behind a padding record (never waiting for room it cannot have)."""
    with shmring.Channel.create(name, 256) as ch:
        ch.send(b"")
        assert ch.recv() == b""  # the tail is at offset 8 now
        batch = [bytes([i]) * 56 for i in range(4)]  # 4 x 64 = 256 bytes
        assert ch.send_many(batch, timeout=STEP) == 4
        assert ch.recv_many(10) == batch


def _slow_drain(name: str, n: int) -> list[bytes]:
    ch = shmring.Channel.open(name)
    out = []
    for _ in range(n):
        out.append(ch.recv(timeout=STEP))
        time.sleep(0.001)
    ch.close()
    return out


@pytest.mark.parametrize("capacity", [256, 4096])
def test_send_many_batches_arrive_whole_and_in_order(capacity: int, name: str, kids: Kids) -> None:
    sizes = [0, 1, 7, 8, 9, 23, 56, 100, capacity // 2 - 8]
    msgs = [bytes([i % 251]) * sizes[i % len(sizes)] for i in range(300)]
    with shmring.Channel.create(name, capacity) as ch:
        reader = kids.start(FORK, _slow_drain, name, len(msgs))
        i = 0
        while i < len(msgs):
            k = 1 + i % 9
            assert ch.send_many(msgs[i : i + k], timeout=STEP) == len(msgs[i : i + k])
            i += k
        assert reader.result() == msgs


# ==========================================================================
# 4. Threads
# ==========================================================================


def test_four_threads_sending_on_one_handle_deliver_every_message_once(name: str) -> None:
    per_thread = 3000
    with shmring.Channel.create(name, 4096) as ch:
        def sender(tid: int) -> None:
            for seq in range(per_thread):
                if seq % 3 == 0:
                    ch.send(struct.pack("<II", tid, seq), timeout=STEP)
                elif seq % 3 == 1:
                    assert ch.send_many([struct.pack("<II", tid, seq)], timeout=STEP) == 1
                else:
                    with ch.reserve(8, timeout=STEP) as buf:
                        struct.pack_into("<II", buf, 0, tid, seq)

        threads = [Worker(lambda tid=tid: sender(tid)) for tid in range(4)]  # type: ignore[misc]
        for t in threads:
            t.start()
        last = [-1] * 4
        for _ in range(4 * per_thread):
            tid, seq = struct.unpack("<II", ch.recv(timeout=STEP))
            assert seq == last[tid] + 1, f"thread {tid}: message {seq} after {last[tid]}"
            last[tid] = seq
        assert [t.finish() for t in threads] == [("returned", None)] * 4
        assert ch.try_recv() is None


def test_two_threads_receiving_on_one_handle_share_the_stream(name: str) -> None:
    n = 6000
    with shmring.Channel.create(name, 1024) as ch:
        def receiver() -> list[int]:
            got = []
            while True:
                m = ch.recv(timeout=STEP)
                if m == b"end":
                    return got
                got.append(int(m))

        threads = [Worker(receiver) for _ in range(2)]
        for t in threads:
            t.start()
        for i in range(n):
            ch.send(b"%d" % i, timeout=STEP)
        ch.send_many([b"end", b"end"], timeout=STEP)
        results = [t.finish() for t in threads]
        assert all(kind == "returned" for kind, _ in results)
        got = [x for _, part in results for x in part]
        assert sorted(got) == list(range(n))  # each exactly once
        for _, part in results:
            assert part == sorted(part)  # each thread saw its share in order


@pytest.mark.parametrize("wait", STRATEGIES)
def test_close_from_another_thread_wakes_a_blocked_recv(wait: str, name: str) -> None:
    with shmring.Channel.create(name, 1024, wait=wait) as ch:  # type: ignore[arg-type]
        waiter = Worker(ch.recv)  # no timeout: only close() can end it
        waiter.start()
        wait_inside(lambda: ch.recv(timeout=0), "recv")
        ch.close()
        assert ch.closed
        kind, exc = waiter.finish()
        assert kind == "raised" and isinstance(exc, shmring.Closed), exc
        with pytest.raises(shmring.Closed, match="handle is closed"):
            ch.recv(timeout=0)


@pytest.mark.parametrize("wait", STRATEGIES)
def test_close_from_another_thread_wakes_a_blocked_send(wait: str, name: str) -> None:
    with shmring.Channel.create(name, 256, wait=wait) as ch:  # type: ignore[arg-type]
        reader = shmring.Channel.open(name)
        assert reader.try_recv() is None  # a live reader holds its end
        while ch.try_send(b"f" * 24):
            pass
        waiter = Worker(lambda: ch.send(b"f" * 24))
        waiter.start()
        wait_inside(lambda: ch.send(b"", timeout=0), "send")
        ch.close()
        kind, exc = waiter.finish()
        assert kind == "raised" and isinstance(exc, shmring.Closed), exc
        received = reader.recv_many(100, timeout=1)
        assert received == [b"f" * 24] * 8  # what was sent before; nothing of the interrupted send
        with pytest.raises(shmring.Closed):
            reader.recv(timeout=1)  # the writer's close() ended the stream
        reader.close()


def test_close_wakes_the_threads_waiting_for_the_end_too(name: str) -> None:
    with shmring.Channel.create(name, 1024) as ch:
        first = Worker(ch.recv)
        first.start()
        wait_inside(lambda: ch.recv(timeout=0), "recv")
        second = Worker(ch.recv)  # waits for the first to leave the receiving end
        second.start()
        assert second.entered.wait(STEP)
        time.sleep(0.05)
        ch.close()
        for w in (first, second):
            kind, exc = w.finish()
            assert kind == "raised" and isinstance(exc, shmring.Closed), exc


def test_waiting_for_another_threads_call_honours_the_timeout(name: str) -> None:
    with shmring.Channel.create(name, 1024) as ch:
        holder = Worker(lambda: ch.recv(timeout=STEP))
        holder.start()
        wait_inside(lambda: ch.recv(timeout=0), "recv")
        with pytest.raises(shmring.Timeout, match="another thread"):
            ch.recv(timeout=0.1)
        ch.send(b"for the holder")
        assert holder.finish() == ("returned", b"for the holder")


def test_waiting_for_another_threads_call_wakes_for_ctrl_c(name: str) -> None:
    with shmring.Channel.create(name, 1024) as ch:
        holder = Worker(lambda: ch.recv(timeout=STEP))
        holder.start()
        wait_inside(lambda: ch.recv(timeout=0), "recv")
        timer = threading.Timer(0.1, os.kill, args=(os.getpid(), signal.SIGINT))
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                ch.recv(timeout=STEP)
        finally:
            timer.cancel()
        ch.send(b"x")
        assert holder.finish() == ("returned", b"x")


def test_close_inside_a_call_of_the_same_thread_is_refused(name: str) -> None:
    """A signal handler that runs inside a blocked recv cannot wait for the
    call it interrupted: close() there raises RuntimeError, every time."""
    with shmring.Channel.create(name, 1024) as ch:
        def handler(signum: int, frame: Any) -> None:
            ch.close()

        old = signal.signal(signal.SIGALRM, handler)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            with pytest.raises(RuntimeError, match="inside a call on this handle"):
                ch.recv(timeout=STEP)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        assert not ch.closed
        ch.send(b"still usable")
        assert ch.recv(timeout=1) == b"still usable"


def test_other_threads_wait_for_a_loan_and_its_own_thread_is_refused(name: str) -> None:
    with shmring.Channel.create(name, 1024) as ch:
        with ch.reserve(5) as buf:
            buf[:] = b"first"
            with pytest.raises(RuntimeError, match="reserve"):
                ch.send(b"mine")  # this thread would wait for itself
            other = Worker(lambda: ch.send(b"second", timeout=STEP))
            other.start()
            other.join(0.2)
            assert other.is_alive()  # it waits for the loan to complete
            exiter = Worker(lambda: buf.__exit__(None, None, None))
            exiter.start()
            kind, exc = exiter.finish()
            assert kind == "raised" and isinstance(exc, RuntimeError) and "thread that opened it" in str(exc)
        assert other.finish() == ("returned", None)
        assert ch.recv_many(10) == [b"first", b"second"]


def test_close_from_another_thread_during_a_loan_drops_the_reserve(name: str) -> None:
    with shmring.Channel.create(name, 1024) as ch:
        reader = shmring.Channel.open(name)
        assert reader.try_recv() is None
        opened, closed = threading.Event(), threading.Event()

        def writer() -> None:
            with ch.reserve(4) as buf:
                buf[:] = b"lost"
                opened.set()
                assert closed.wait(STEP)

        w = Worker(writer)
        w.start()
        assert opened.wait(STEP)
        ch.close()  # does not wait for the loan: it is not a call
        closed.set()
        kind, exc = w.finish()
        assert kind == "raised" and isinstance(exc, shmring.Closed) and "not sent" in str(exc), exc
        with pytest.raises(shmring.Closed):
            reader.recv(timeout=1)  # the stream ended without the dropped message
        reader.close()


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
