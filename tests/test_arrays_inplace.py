"""numpy arrays in place: reserve_array / peek_array of a Channel, a topic
Publisher and a Subscription (shmring.arrays.ArrayLoan).

What they lend lies in the ring; when their block ends while something
still holds the array, nothing is lost: under on_escape="raise" a peeked
message is kept unread (read again once the array is gone) and a reserved
one is never sent; under "copy" the names bound to the array get a private
copy and the message goes on as usual, unless views of the array escaped.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shmring
from _array_helpers import DTYPES, OP_TIMEOUT, same, sample
from conftest import SPAWN, Kids

C_DIR = Path(__file__).resolve().parent / "c"
SHAPES = [(), (0,), (7,), (3, 4), (2, 0, 3), (2, 3, 4)]


@pytest.fixture
def ch(new_name: Callable[[], str]) -> Iterator[shmring.Channel]:
    with shmring.Channel.create(new_name(), 1 << 16) as c:
        yield c


def in_ring(a: Any) -> bool:
    """The array borrows its memory (from the ring, for the arrays lent here)."""
    return not a.flags.owndata and a.base is not None and not isinstance(a.base, bytes)


def private(a: Any) -> bool:
    """The array's memory is its own (ndarray.__setstate__ leaves it owning a copy, or over a bytes object)."""
    return a.flags.owndata or isinstance(a.base, bytes)


def dirty(ch: shmring.Channel) -> None:
    """Send and receive messages over the whole ring, so that no byte of it holds what it held."""
    for _ in range(3):
        ch.send(b"\xee" * ch.max_message, timeout=OP_TIMEOUT)
        ch.recv(timeout=OP_TIMEOUT)


# -- round trips ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_reserve_array_writes_the_message_send_array_writes(ch: shmring.Channel, dtype: str, shape: tuple[int, ...],
                                                           order: str) -> None:
    expected = np.asarray(sample(dtype, shape), order=order)
    with ch.reserve_array(shape, dtype, order) as a:
        assert a.shape == shape and a.dtype == np.dtype(dtype) and a.flags.writeable
        assert a.tobytes() == bytes(a.nbytes)  # zero-filled
        if len(shape) > 1 and a.size:
            assert a.flags.f_contiguous if order == "F" else a.flags.c_contiguous
        a[...] = expected
        del a
    got = ch.recv(timeout=OP_TIMEOUT)
    ch.send_array(expected)
    sent = ch.recv(timeout=OP_TIMEOUT)
    # byte for byte, but for the order named at offset 6: send_array names "C" for an array that is
    # both C- and Fortran-contiguous (0-d, 1-d, empty), reserve_array the order it was asked for
    assert got[6] == ord(order) and got[:6] + got[7:] == sent[:6] + sent[7:]


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_peek_array_reads_what_send_array_sent_in_place(ch: shmring.Channel, dtype: str, shape: tuple[int, ...],
                                                        order: str) -> None:
    sent = np.asarray(sample(dtype, shape), order=order)
    ch.send_array(sent)
    ch.send(b"next")
    with ch.peek_array(timeout=OP_TIMEOUT) as a:
        assert same(a, sent) and np.array_equal(a, sent)
        assert not a.flags.writeable
        assert in_ring(a) == (sent.size > 0)  # an array without elements needs nothing of the ring
        if len(shape) > 1 and sent.size and order == "F":
            assert a.flags.f_contiguous and not a.flags.c_contiguous
        with pytest.raises(ValueError, match="read-only"):
            a[...] = sent
        del a
    assert ch.recv(timeout=OP_TIMEOUT) == b"next"  # the block consumed its message, and only it


@settings(max_examples=60, deadline=None)
@given(frames=st.lists(st.tuples(st.sampled_from(DTYPES), st.lists(st.integers(0, 6), max_size=3).map(tuple),
                                 st.sampled_from("CF")), min_size=1, max_size=40))
def test_frames_in_flight_wrap_around_the_ring_intact(frames: list[tuple[str, tuple[int, ...], str]]) -> None:
    """Records of sizes that do not divide the ring, several in flight at a
    time, written with reserve_array and read with peek_array: every one
    arrives whole and in order, across the ring's end (padding records)."""
    with shmring.Channel.create(None, 4096) as c:
        in_flight: deque[Any] = deque()

        def check_oldest() -> None:
            expected = in_flight.popleft()
            with c.peek_array(timeout=0) as got:
                assert same(got, expected)
                del got

        for seed, (dtype, shape, order) in enumerate(frames):
            expected = np.asarray(sample(dtype, shape, seed), order=order)
            while True:
                try:
                    with c.reserve_array(shape, dtype, order, timeout=0) as a:
                        a[...] = expected
                        del a
                    break
                except shmring.Timeout:  # full: read one, then try again
                    check_oldest()
            in_flight.append(expected)
        while in_flight:
            check_oldest()
        assert c.try_recv() is None


def test_reserve_array_takes_numpy_shapes_and_dtypes(ch: shmring.Channel) -> None:
    with ch.reserve_array(np.int64(5), np.float32) as a:  # an integer for a 1-d shape, any dtype numpy takes
        a[:] = np.arange(5)
        del a
    with ch.reserve_array([2, np.uint8(3)], "i2", order="F") as a:
        a[...] = [[1, 2, 3], [4, 5, 6]]
        del a
    assert same(ch.recv_array(timeout=OP_TIMEOUT), np.arange(5, dtype=np.float32))
    got = ch.recv_array(timeout=OP_TIMEOUT)
    assert got.flags.f_contiguous and np.array_equal(got, [[1, 2, 3], [4, 5, 6]]) and got.dtype == np.int16


def test_reserve_array_is_zero_filled_over_old_data(new_name: Callable[[], str]) -> None:
    with shmring.Channel.create(new_name(), 4096) as c:
        dirty(c)
        with c.reserve_array((10, 10), "<f8") as a:
            assert not a.any()
            a[3, 4] = 1.5
            del a
        got = c.recv_array(timeout=OP_TIMEOUT)
        assert got.sum() == 1.5 and got[3, 4] == 1.5


# -- what the blocks refuse, and what they leave --------------------------------------------------------


@pytest.mark.parametrize(("args", "error", "words"), [
    (((3,), object), TypeError, "cannot be sent"),
    (((3,), [("x", "<i4")]), TypeError, "cannot be sent"),
    (((-1,), "<f8"), ValueError, "negative"),
    (((1,) * 33, "<f8"), ValueError, "32 dimensions"),
    (((2 ** 40, 2 ** 40), "<f8"), ValueError, "no array message"),
    (((3,), "<f8", "K"), ValueError, "order"),
])
def test_reserve_array_refuses_at_the_call(ch: shmring.Channel, args: tuple[Any, ...], error: type,
                                           words: str) -> None:
    with pytest.raises(error, match=words):
        ch.reserve_array(*args)
    assert ch.try_recv() is None
    ch.send_array(np.arange(3))  # the end is free
    assert np.array_equal(ch.recv_array(timeout=OP_TIMEOUT), np.arange(3))


def test_reserve_array_refuses_a_size_the_ring_can_never_hold(ch: shmring.Channel) -> None:
    too_large = ch.reserve_array((1 << 20,), "<f8")
    with pytest.raises(ValueError, match="can never fit"):
        with too_large as a:
            del a
    assert ch.try_recv() is None
    ch.send_array(np.arange(3))  # the end is free
    assert np.array_equal(ch.recv_array(timeout=OP_TIMEOUT), np.arange(3))


def test_on_escape_takes_raise_or_copy(ch: shmring.Channel) -> None:
    with pytest.raises(ValueError, match="'raise' or 'copy'"):
        ch.peek_array(on_escape="keep")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'raise' or 'copy'"):
        ch.reserve_array(3, "<i4", on_escape="")  # type: ignore[arg-type]


def test_an_exception_drops_the_reserved_message(ch: shmring.Channel) -> None:
    with pytest.raises(KeyError):
        with ch.reserve_array(4, "<i4") as a:
            a[:] = 7
            del a
            raise KeyError("half written")
    assert ch.try_recv() is None
    ch.send(b"next")
    assert ch.recv(timeout=OP_TIMEOUT) == b"next"


def test_an_exception_consumes_the_peeked_message_as_peek_does(ch: shmring.Channel) -> None:
    ch.send_array(np.arange(3))
    ch.send(b"next")
    with pytest.raises(KeyError):
        with ch.peek_array() as a:
            del a
            raise KeyError("seen")
    assert ch.recv(timeout=OP_TIMEOUT) == b"next"


@pytest.mark.parametrize("message", [b"", b"hello", bytes(64), b"SHNA" + bytes(60)])
def test_a_message_that_is_not_an_array_raises_and_is_consumed(ch: shmring.Channel, message: bytes) -> None:
    ch.send(message)
    ch.send_array(np.arange(3))
    with pytest.raises(ValueError, match="array message"):
        with ch.peek_array(timeout=OP_TIMEOUT):
            pass
    with ch.peek_array(timeout=OP_TIMEOUT) as a:
        assert np.array_equal(a, np.arange(3))
        del a


def test_a_raw_pointer_is_not_seen(ch: shmring.Channel) -> None:
    """A raw address taken from the array is no reference to it: nothing
    stops the block, and the address must not be used after it."""
    ch.send_array(np.arange(3))
    with ch.peek_array() as a:
        address = a.ctypes.data
        del a
    assert address and ch.try_recv() is None  # consumed as usual


def test_a_block_holds_its_end_and_is_entered_once(ch: shmring.Channel) -> None:
    loan = ch.reserve_array(3, "<i4")
    with loan as a:
        with pytest.raises(RuntimeError, match="reserve"):
            ch.send(b"x")  # the producer end is the block's until it ends
        del a
    with pytest.raises(RuntimeError, match="once"):
        with loan:
            pass
    assert "reserve_array" in repr(loan)
    assert np.array_equal(ch.recv_array(timeout=OP_TIMEOUT), np.zeros(3, "<i4"))


def test_the_roles_that_have_them(topic: Callable[..., shmring.Topic]) -> None:
    t = topic()
    pub, sub = t.publisher(), t.subscribe()
    assert not hasattr(pub, "peek_array") and not hasattr(sub, "reserve_array")
    with pytest.raises(AttributeError, match="Subscription"):
        pub.peek_array()
    with pytest.raises(AttributeError, match="Publisher"):
        sub.reserve_array(3, "<i4")


# -- escapes, on_escape="raise": nothing lost, nothing half-written sent ---------------------------------------


def test_an_escaped_peek_is_kept_unread_and_read_again(ch: shmring.Channel) -> None:
    ch.send_array(np.arange(6.0).reshape(2, 3))
    ch.send(b"later")
    with pytest.raises(shmring.BufferInUseError) as info:
        with ch.peek_array() as frame:
            pass
    words = str(info.value)
    for part in ("(2, 3)", "float64", f"{id(frame):#x}", "bound to 'frame'", "kept unread", "del it",
                 "on_escape='copy'"):
        assert part in words, (part, words)
    assert np.array_equal(frame, np.arange(6.0).reshape(2, 3))  # still valid: the message was kept
    with pytest.raises(shmring.BufferInUseError, match="'frame'"):
        ch.recv(timeout=OP_TIMEOUT)  # any call on that end, while the array lives
    del frame, info
    assert np.array_equal(ch.recv_array(timeout=OP_TIMEOUT), np.arange(6.0).reshape(2, 3))  # read again, once
    assert ch.recv(timeout=OP_TIMEOUT) == b"later"


def test_an_escaped_view_keeps_the_peek_and_is_named(ch: shmring.Channel) -> None:
    ch.send_array(np.arange(10))
    kept: list[Any] = []
    with pytest.raises(shmring.BufferInUseError, match="1 other reference to it .*; 1 view taken from it"):
        with ch.peek_array(on_escape="copy") as a:  # views cannot be moved: "copy" raises too
            part = a[2:5]
            kept.append(a)
            del a
    assert list(part) == [2, 3, 4]
    del kept[:]
    with pytest.raises(shmring.BufferInUseError, match="view"):
        ch.peek_array(timeout=0).__enter__()
    del part
    assert np.array_equal(ch.recv_array(timeout=OP_TIMEOUT), np.arange(10))


def test_an_escaped_reserve_is_never_sent(ch: shmring.Channel) -> None:
    with pytest.raises(shmring.BufferInUseError, match="bound to 'a'.*was not sent"):
        with ch.reserve_array(4, "<i4") as a:
            a[:2] = [1, 2]  # half written
    a[2:] = [3, 4]  # written after the block: into memory that was never published
    assert ch.try_recv() is None
    with pytest.raises(shmring.BufferInUseError, match="'a'"):
        ch.send(b"x")
    del a
    ch.send(b"next")  # the held reserve is dropped first
    assert ch.recv_many(10, timeout=OP_TIMEOUT) == [b"next"]
    assert ch.try_recv() is None


def test_an_exception_leaving_a_held_block_goes_on_with_a_note(ch: shmring.Channel) -> None:
    """The block's own exception is not replaced: the message is kept all the same."""
    ch.send_array(np.arange(3))

    def fail(x: Any) -> None:
        raise KeyError("in the block")

    with pytest.raises(KeyError) as info:
        with ch.peek_array() as a:
            fail(a)
    if sys.version_info >= (3, 11):  # add_note
        (note,) = info.value.__notes__
        assert "bound to 'a', 'x'" in note and "kept unread" in note
    del info, a  # the traceback held fail's frame, and its 'x'
    assert np.array_equal(ch.recv_array(timeout=OP_TIMEOUT), np.arange(3))


def test_names_looked_at_are_not_kept_alive(ch: shmring.Channel) -> None:
    """Finding the names of a function's frame (a snapshot of its locals
    before 3.13) must not keep what they held alive after they let go."""
    ch.send_array(np.arange(3))
    with pytest.raises(shmring.BufferInUseError, match="1 other reference"):
        with ch.peek_array(on_escape="copy") as a:
            view = memoryview(a)  # shares the array's memory: it cannot be moved
    assert view.tolist() == [0, 1, 2]  # still valid: the message was kept
    del view, a
    assert np.array_equal(ch.recv_array(timeout=OP_TIMEOUT), np.arange(3))


def test_close_waits_for_a_held_peek_and_leaves_it_unread(new_name: Callable[[], str]) -> None:
    with shmring.Channel.create(new_name(), 4096) as owner:
        owner.send_array(np.arange(4))
        rx = shmring.Channel.open(owner.name)
        with pytest.raises(shmring.BufferInUseError):
            with rx.peek_array() as a:
                pass
        with pytest.raises(shmring.BufferInUseError, match="'a'"):
            rx.close()
        del a
        rx.close()
        with shmring.Channel.open(owner.name) as again:
            assert np.array_equal(again.recv_array(timeout=OP_TIMEOUT), np.arange(4))


# -- escapes, on_escape="copy": the names get a private copy ------------------------------------------------------


def test_copy_leaves_a_peeked_array_of_its_own(ch: shmring.Channel) -> None:
    sent = np.asfortranarray(sample(">i4", (5, 7)))  # Fortran order, not the native byte order
    ch.send_array(sent)
    ch.send(b"later")
    with ch.peek_array(on_escape="copy") as a:
        alias = a
        assert in_ring(a)
    assert alias is a and private(a) and not a.flags.writeable
    assert same(a, sent) and a.flags.f_contiguous and a.dtype == np.dtype(">i4")
    assert ch.recv(timeout=OP_TIMEOUT) == b"later"  # the peeked message was consumed
    dirty(ch)
    assert same(a, sent)  # the ring went on: the copy did not


def test_copy_sends_the_reserved_message_and_leaves_the_array_writable(ch: shmring.Channel) -> None:
    with ch.reserve_array((3, 3), "<f4", on_escape="copy") as a:
        a[...] = 1.0
    assert private(a) and a.flags.writeable
    a[...] = 2.0  # after the block: the array is the caller's, the message is gone
    assert np.array_equal(ch.recv_array(timeout=OP_TIMEOUT), np.ones((3, 3), "<f4"))
    with ch.reserve_array((), "<u2", on_escape="copy") as z:  # 0-d
        z[...] = 7
    assert z.shape == () and z == 7 and private(z)
    assert ch.recv_array(timeout=OP_TIMEOUT) == 7


def test_copy_counts_a_closure_variable_once(ch: shmring.Channel) -> None:
    ch.send_array(np.arange(4))
    with ch.peek_array(on_escape="copy") as a:

        def total() -> int:
            return int(a.sum())

        assert total() == 6
    dirty(ch)
    assert total() == 6 and private(a)


def test_copy_takes_the_names_of_the_frames_an_exception_left(ch: shmring.Channel) -> None:
    ch.send_array(np.arange(4))
    ch.send(b"later")

    def fail(x: Any) -> None:
        raise KeyError("in the block")

    with pytest.raises(KeyError):
        with ch.peek_array(on_escape="copy") as a:
            fail(a)
    assert private(a) and np.array_equal(a, np.arange(4))
    assert ch.recv(timeout=OP_TIMEOUT) == b"later"  # consumed, as an exception does


def test_copy_at_module_level(ch: shmring.Channel) -> None:
    """A module's variables (exec'd here) are names too, and stay bound."""
    ch.send_array(np.arange(5))
    namespace: dict[str, Any] = {"ch": ch}
    exec(compile("with ch.peek_array(on_escape='copy') as a:\n    b = a\n", "<module>", "exec"), namespace)
    assert namespace["a"] is namespace["b"] and private(namespace["a"])
    assert np.array_equal(namespace["a"], np.arange(5)) and ch.try_recv() is None
    ch.send_array(np.arange(5))
    with pytest.raises(shmring.BufferInUseError, match="bound to 'a'"):
        exec(compile("with ch.peek_array() as a:\n    pass\n", "<module>", "exec"), namespace)
    del namespace["a"]
    assert np.array_equal(ch.recv_array(timeout=OP_TIMEOUT), np.arange(5))


# -- topics -------------------------------------------------------------------------------------------------------


def test_topic_publisher_and_subscriptions_in_place(topic: Callable[..., shmring.Topic]) -> None:
    t = topic(1 << 14)
    subs = [t.subscribe() for _ in range(3)]
    pub = t.publisher()
    expected = sample("<f8", (4, 6))
    with pub.reserve_array((4, 6), "<f8") as a:
        a[...] = expected
        del a
    for s in subs:
        with s.peek_array(timeout=OP_TIMEOUT) as got:
            assert same(got, expected) and in_ring(got)
            del got
    pub.send_array(expected)
    with pytest.raises(shmring.BufferInUseError, match="kept unread"):  # one subscriber holds it
        with subs[0].peek_array(timeout=OP_TIMEOUT) as held:
            pass
    with subs[1].peek_array(timeout=OP_TIMEOUT, on_escape="copy") as copied:
        pass
    del held
    assert same(subs[0].recv_array(timeout=OP_TIMEOUT), expected)  # read again
    assert same(copied, expected) and private(copied)
    with pytest.raises(shmring.Timeout):
        subs[1].recv(timeout=0)  # consumed


def test_an_escaped_topic_reserve_is_never_published_and_keeps_the_lock(topic: Callable[..., shmring.Topic]) -> None:
    t = topic(1 << 14)
    sub, pub, other = t.subscribe(), t.publisher(), t.publisher()

    def send_from_another_thread() -> str:
        result: list[str] = []

        def send() -> None:
            try:
                other.send(b"other", timeout=0.1)
                result.append("sent")
            except shmring.Timeout:
                result.append("Timeout")

        thread = threading.Thread(target=send)
        thread.start()
        thread.join(OP_TIMEOUT)
        return result[0]

    with pytest.raises(shmring.BufferInUseError, match="was not sent"):
        with pub.reserve_array(3, "<i8") as a:
            a[:] = 5
            assert send_from_another_thread() == "Timeout"  # the block holds the topic lock
    with pytest.raises(shmring.Timeout):
        sub.recv(timeout=0)
    assert send_from_another_thread() == "Timeout"  # and so does the array still held after it
    del a
    assert send_from_another_thread() == "sent"
    pub.send(b"next")
    assert [sub.recv(timeout=OP_TIMEOUT) for _ in range(2)] == [b"other", b"next"]


def test_a_peeked_array_overwritten_meanwhile_raises_lagged(topic: Callable[..., shmring.Topic]) -> None:
    t = topic(1024, "overwrite")
    sub, pub = t.subscribe(), t.publisher()
    pub.send_array(np.zeros(8))
    with pytest.raises(shmring.Lagged):
        with sub.peek_array(timeout=0) as a:
            for i in range(12):
                pub.send_array(np.full(8, i + 1.0))  # the ring goes round under the array
            del a


# -- between processes, and from a C peer --------------------------------------------------------------------------


FRAMES = 600


def _frame(i: int) -> Any:
    """Frame i: its dtype, shape and order vary (0-d and empty ones among them), its elements differ."""
    dtype = ["<f4", "|u1", ">i8", "<c8", "<u2", "|b1"][i % 6]
    shape: tuple[int, ...] = (i % 7 + 1, (i * 13) % 29 + 3)
    if i % 11 == 0:
        shape = ()
    elif i % 17 == 0:
        shape = (i % 3, 0)
    return np.asarray(sample(dtype, shape, seed=i), order="F" if i % 2 else "C")


def _produce(kind: str, name: str) -> int:
    if kind == "channel":
        end: Any = shmring.Channel.open(name)
    else:
        topic = shmring.Topic.open(name)
        end = topic.publisher()
    with end:
        for i in range(FRAMES):
            frame = _frame(i)
            with end.reserve_array(frame.shape, frame.dtype, "F" if frame.flags.f_contiguous and frame.ndim > 1
                                   else "C", timeout=OP_TIMEOUT) as a:
                a[...] = frame
                del a
    if kind == "topic":
        topic.close()
    return FRAMES


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["channel", "topic"])
def test_a_producer_process_and_a_consumer_in_place(kind: str, new_name: Callable[[], str], kids: Kids,
                                                    topic: Callable[..., shmring.Topic]) -> None:
    """Every frame written in place by another process is read in place
    whole and in order, over a ring whose size no frame divides."""
    if kind == "channel":
        handle: Any = shmring.Channel.create(new_name(), 1 << 14)
        reader, name = handle, handle.name
    else:
        handle = topic(1 << 14)  # "block": the publisher waits for the subscriber
        reader, name = handle.subscribe(), handle.name
    try:
        kid = kids.start(SPAWN, _produce, kind, name)
        for i in range(FRAMES):
            expected = _frame(i)
            with reader.peek_array(timeout=60 if i == 0 else OP_TIMEOUT) as got:  # the first waits for the child
                assert got.dtype == expected.dtype and got.shape == expected.shape, i
                assert zlib.crc32(got.tobytes(order="A")) == zlib.crc32(expected.tobytes(order="A")), f"frame {i}"
                assert got.flags.f_contiguous == expected.flags.f_contiguous, i
                del got
        assert kid.result(timeout=60) == FRAMES
    finally:
        if kind == "channel":
            handle.close()
        else:
            reader.close()


@pytest.mark.timeout(120)
def test_a_c_peers_array_messages_read_in_place(new_name: Callable[[], str], kids: Kids, tmp_path: Path) -> None:
    gcc = shutil.which("gcc")
    assert gcc is not None
    exe = tmp_path / "array_producer"
    built = subprocess.run([gcc, "-std=c99", "-pedantic", "-O2", "-Wall", "-Wextra", "-Werror", "-I",
                            shmring.get_include(), str(C_DIR / "array_producer.c"), "-o", str(exe)],
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0 and built.stderr == "", built.stderr
    count = 300
    with shmring.Channel.create(new_name(), 4096) as c:  # small, and no multiple of a record: many wraps
        peer = kids.popen([str(exe), c.name, str(count)])
        for k in range(count):
            rows, cols = k % 4 + 1, k % 5 + 2
            expected = k * 1000 + np.arange(rows)[:, None] * 10 + np.arange(cols)
            with c.peek_array(timeout=OP_TIMEOUT) as a:
                assert a.dtype == np.int32 and np.array_equal(a, expected), k
                assert a.flags.f_contiguous if k % 2 else a.flags.c_contiguous
                del a
        with c.peek_array(timeout=OP_TIMEOUT) as a:
            assert a.shape == () and a.dtype == np.float64 and a == 2.5
            del a
        with c.peek_array(timeout=OP_TIMEOUT) as a:
            assert a.shape == (3, 0) and a.dtype == np.uint8
            del a
        with pytest.raises(shmring.Closed):
            c.peek_array(timeout=OP_TIMEOUT).__enter__()
        out, err = peer.communicate(timeout=30)
        assert peer.returncode == 0, err
        assert out.strip() == f"sent {count + 2}"


def test_reserve_array_without_zeroing_starts_from_the_ring_and_sends_what_was_written(
        new_name: Callable[[], str]) -> None:
    """zero=False lends the elements as the ring holds them (this channel's
    earlier bytes); every element the producer writes arrives."""
    ch = shmring.Channel.create(new_name(), capacity=4096)
    try:
        for _ in range(100):  # the ring's bytes all 0xAB, round and round
            ch.send(b"\xab" * 100)
            ch.recv()
        with ch.reserve_array((16,), np.uint8, zero=False) as a:
            assert a.tobytes() != bytes(16)  # not zeroed: what the ring held
            a[:] = np.arange(16, dtype=np.uint8)
            del a
        assert np.array_equal(ch.recv_array(), np.arange(16, dtype=np.uint8))
        with ch.reserve_array((16,), np.uint8) as b:  # the default zeroes
            assert b.tobytes() == bytes(16)
            del b
        assert np.array_equal(ch.recv_array(), np.zeros(16, np.uint8))
    finally:
        ch.close()
