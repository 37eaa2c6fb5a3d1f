"""numpy arrays through a Channel and a Topic: send_array / recv_array and
the array message (include/shmring/array.h, docs/PROTOCOL.md section 7)."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shmring
from _array_helpers import DTYPES, OP_TIMEOUT, same, sample
from conftest import SPAWN, Kids


@pytest.fixture
def ch(new_name: Callable[[], str]) -> Any:
    with shmring.Channel.create(new_name(), 1 << 20) as c:
        yield c


# -- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 4), (2, 0, 3), (2, 3, 4)])
def test_every_plain_dtype_and_shape_round_trips(ch: Any, dtype: str, shape: tuple[int, ...]) -> None:
    a = sample(dtype, shape)
    ch.send_array(a)
    b = ch.recv_array(timeout=OP_TIMEOUT)
    assert same(a, b) and np.array_equal(a, b)
    assert b.flags.writeable and b.flags.owndata  # a copy of its own, out of the ring
    b[...] = a  # writable


def test_fortran_order_is_kept_and_strided_views_are_sent_contiguous(ch: Any) -> None:
    f = np.asfortranarray(sample("<f8", (4, 5)))
    ch.send_array(f)
    got = ch.recv_array(timeout=OP_TIMEOUT)
    assert got.flags.f_contiguous and not got.flags.c_contiguous and np.array_equal(got, f)
    strided = sample("<i4", (6, 8))[::2, 1::3]
    assert not (strided.flags.c_contiguous or strided.flags.f_contiguous)
    ch.send_array(strided)
    got = ch.recv_array(timeout=OP_TIMEOUT)
    assert got.flags.c_contiguous and np.array_equal(got, strided)
    ch.send_array([[1, 2], [3, 4]])  # anything numpy.asarray takes
    assert np.array_equal(ch.recv_array(timeout=OP_TIMEOUT), [[1, 2], [3, 4]])


@settings(max_examples=150, deadline=None)
@given(dtype=st.sampled_from(DTYPES), shape=st.lists(st.integers(0, 4), min_size=0, max_size=5).map(tuple),
       order=st.sampled_from("CF"), seed=st.integers(0, 2**16))
def test_any_array_round_trips_exactly(dtype: str, shape: tuple[int, ...], order: str, seed: int) -> None:
    with shmring.Channel.create(None, 1 << 16) as c:
        a = np.asarray(sample(dtype, shape, seed), order=order)
        c.send_array(a)
        b = c.recv_array(timeout=OP_TIMEOUT)
        assert b.dtype == a.dtype and b.shape == a.shape and np.array_equal(a, b)
        assert c.try_recv() is None  # one message, wholly consumed


def test_the_header_is_the_documented_one(ch: Any) -> None:
    a = np.arange(6, dtype="<u2").reshape(2, 3)
    ch.send_array(a)
    raw = ch.recv(timeout=OP_TIMEOUT)
    assert raw[:4] == b"SHNA" and raw[4:8] == bytes([1, 2, ord("C"), 0])
    assert raw[8:16] == b"<u2\0\0\0\0\0"
    assert int.from_bytes(raw[16:24], "little") == 48 and int.from_bytes(raw[24:32], "little") == 12
    assert [int.from_bytes(raw[32 + 8 * i : 40 + 8 * i], "little") for i in range(2)] == [2, 3]
    assert raw[48:] == a.tobytes() and len(raw) == 60


def test_send_array_writes_every_byte_of_its_message(new_name: Callable[[], str],
                                                    topic: Callable[..., shmring.Topic]) -> None:
    """send_array lends the ring without zeroing it first (it writes every
    byte): a message never carries what the ring held before."""
    ch = shmring.Channel.create(new_name(), capacity=4096)
    t = topic(4096)
    sub, pub = t.subscribe(), t.publisher()
    try:
        for end_in, end_out in ((ch, ch), (pub, sub)):
            for _ in range(20):  # the ring's bytes all 0xFF, round and round
                end_in.send(b"\xff" * 200)
                end_out.recv_bytes() if end_out is sub else end_out.recv()
            for shape, dtype in (((3,), "<u1"), ((5, 3), ">f8"), ((), "<i2"), ((0, 4), "<f4"), ((7,), "<U3")):
                a = np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape) if dtype[1] != "U" else \
                    np.array(["a", "bc", "def", "", "x", "yz", "q"], dtype=dtype)
                end_in.send_array(a)
                raw = end_out.recv_bytes() if end_out is sub else end_out.recv()
                header = shmring.arrays.pack_header(a.dtype, a.shape, "C")
                assert raw == header + a.tobytes(), (shape, dtype)
    finally:
        ch.close()
        sub.close()
        pub.close()


# -- refused ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.array([object()]), np.zeros(2, dtype=[("x", "<i4"), ("y", "<f8")]),
                                 np.zeros(2, dtype="V8")])
def test_dtypes_without_a_meaning_elsewhere_are_refused_and_nothing_is_sent(ch: Any, bad: Any) -> None:
    with pytest.raises(TypeError, match="cannot be sent"):
        ch.send_array(bad)
    assert ch.try_recv() is None


def test_an_array_larger_than_the_ring_is_refused_and_nothing_is_sent(new_name: Callable[[], str]) -> None:
    with shmring.Channel.create(new_name(), 4096) as c:
        with pytest.raises(ValueError):
            c.send_array(np.zeros(1024, dtype="<f8"))
        assert c.try_recv() is None
        c.send_array(np.ones(10))
        assert np.array_equal(c.recv_array(timeout=OP_TIMEOUT), np.ones(10))


def _damaged(offset: int, value: bytes) -> bytes:
    good = shmring.arrays.pack_header(np.dtype("<f4"), (3, 4), "C") + np.arange(12, dtype="<f4").tobytes()
    return good[:offset] + value + good[offset + len(value):]


@pytest.mark.parametrize("message", [
    b"", b"hello", b"SHNA", bytes(64),
    _damaged(0, b"X"),  # magic
    _damaged(4, b"\2"),  # version
    _damaged(5, b"\x21"),  # ndim over 32
    _damaged(5, b"\3"),  # ndim that moves the data offset
    _damaged(6, b"A"),  # order
    _damaged(7, b"\1"),  # reserved
    _damaged(8, b"|O8"),  # objects
    _damaged(9, b"f8"),  # another item size
    _damaged(8, b"<f4[ns]"),  # a unit on a float
    _damaged(16, b"\x40"),  # data offset
    _damaged(24, b"\x2f"),  # nbytes
    _damaged(32, (2**62).to_bytes(8, "little")),  # a shape that overflows
    _damaged(40, b"\5"),  # a shape that does not add up
    _damaged(0, b"") + b"\0",  # longer than the header says
    _damaged(0, b"")[:-1],  # shorter
])
def test_a_damaged_array_message_raises_value_error_and_the_channel_goes_on(ch: Any, message: bytes) -> None:
    ch.send(message)
    with pytest.raises(ValueError, match="array message"):
        ch.recv_array(timeout=OP_TIMEOUT)
    ch.send_array(np.arange(3))  # the damaged message was consumed; nothing else was
    assert np.array_equal(ch.recv_array(timeout=OP_TIMEOUT), np.arange(3))


# -- between processes ------------------------------------------------------------------------


FRAMES = 40
FRAME_SHAPE = (512, 512)  # float32: 1 MiB


def _frame(i: int) -> Any:
    a = np.full(FRAME_SHAPE, float(i), dtype="<f4")
    a[i % FRAME_SHAPE[0], :] = -1.0
    return a


def _send_frames(name: str) -> int:
    with shmring.Channel.open(name) as c:
        for i in range(FRAMES):
            c.send_array(_frame(i), timeout=OP_TIMEOUT)
        c.close()
    return FRAMES


def test_frames_cross_processes_intact(new_name: Callable[[], str], kids: Kids) -> None:
    with shmring.Channel.create(new_name(), 4 << 20) as c:
        kid = kids.start(SPAWN, _send_frames, c.name)
        for i in range(FRAMES):
            got = c.recv_array(timeout=60 if i == 0 else OP_TIMEOUT)  # the first waits for the child to start
            assert got.shape == FRAME_SHAPE and got.dtype == np.float32
            assert zlib.crc32(got.tobytes()) == zlib.crc32(_frame(i).tobytes()), f"frame {i} damaged"
        assert kid.result(timeout=60) == FRAMES


def test_topic_subscribers_each_get_the_array(topic: Callable[..., shmring.Topic]) -> None:
    t = topic(capacity=1 << 16)
    subs = [t.subscribe() for _ in range(3)]
    pub = t.publisher()
    a = sample("<i4", (10, 10))
    pub.send_array(a)
    for s in subs:
        assert same(s.recv_array(timeout=OP_TIMEOUT), a)
    pub.send(b"not an array")
    with pytest.raises(ValueError, match="array message"):
        subs[0].recv_array(timeout=OP_TIMEOUT)
    assert subs[1].recv(timeout=OP_TIMEOUT) == b"not an array"
