"""The loan of reserve() and peek(), the same buffer type for Channel and
Topic (issue 9): commit(k) and its bounds, read-only peeks, the buffer
protocol without numpy, and a view that escapes its block.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable

import pytest

import shmring
from shmring import Topic, _core


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


@pytest.mark.parametrize("kind", ["channel", "topic"])
def test_a_held_peek_is_kept_unread_for_its_holder(kind: str, name: str, topic: Callable[..., Topic]) -> None:
    """keep_if_held(): the holder is named in every BufferInUseError while
    its view lives, and the peeked message is then read again, not consumed
    (shmring.arrays' peek_array keeps messages this way)."""
    if kind == "channel":
        ch = shmring.Channel.create(name, 1024)
        send, peek, receive = ch.send, ch.peek, ch.recv
        nothing_left = lambda: ch.try_recv() is None  # noqa: E731
    else:
        t = topic(1024)
        sub, pub = t.subscribe(), t.publisher()
        send, peek, receive = pub.send, sub.peek, lambda: sub.recv(timeout=0)

        def nothing_left() -> bool:
            with pytest.raises(shmring.Timeout):
                sub.recv(timeout=0)
            return True

    try:
        for message in (b"first", b"second", b"third"):
            send(message)
        with pytest.raises(shmring.BufferInUseError, match="my view is still alive: the peeked message is kept"):
            with peek() as buf:
                escaped = memoryview(buf)
                buf.keep_if_held("my view")
        assert bytes(escaped) == b"first"  # the message was kept: still valid memory
        with pytest.raises(shmring.BufferInUseError, match="my view"):
            receive()
        escaped.release()
        assert receive() == b"first"  # read again
        assert receive() == b"second"
        with peek() as buf:  # held by nothing: a held peek is consumed as any other
            with pytest.raises(TypeError, match="str"):
                buf.keep_if_held(b"bytes")  # type: ignore[arg-type]
            buf.keep_if_held("nobody")
        with pytest.raises(ValueError, match="over"):
            buf.keep_if_held("too late")
        assert nothing_left()  # "third" was consumed
    finally:
        if kind == "channel":
            ch.close()  # its only user: this removes it


def test_a_held_peek_whose_loan_is_dropped_stays_unread(name: str) -> None:
    """The loan of a held peek goes away with its last view (garbage, not a
    call on its end): the message is left unread, not consumed."""
    with shmring.Channel.create(name, 1024) as ch:
        ch.send(b"kept")
        with pytest.raises(shmring.BufferInUseError):
            with ch.peek() as buf:
                buf.keep_if_held("the view")
                view = buf[1:3]
        del buf
        view.release()  # the loan's last reference: it is freed here
        del view
        assert ch.recv(timeout=0) == b"kept"


def test_a_held_reserve_is_dropped_not_sent(name: str) -> None:
    with shmring.Channel.create(name, 1024) as ch:
        with pytest.raises(shmring.BufferInUseError, match="the view is still alive: the reserved message was not sent"):
            with ch.reserve(4) as buf:
                buf[:] = b"half"
                escaped = memoryview(buf)
                buf.keep_if_held("the view")
        escaped.release()
        ch.send(b"next")  # drops the reserve first
        assert ch.recv_many(10, timeout=0) == [b"next"]
