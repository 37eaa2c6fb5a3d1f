"""The value encoding of queue items (include/shmring/value.h, record tag
'V'): items made only of exact None, bool, 64-bit int, float, bytes, str
and tuples of them skip pickle; everything else is pickled as before, and
every item comes back equal and of the same type either way."""

from __future__ import annotations

import math
import pickle
import struct
from collections import namedtuple
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shmring
from _queue_helpers import DATA, HEAD, TAG_OBJECT, TAG_VALUE
from conftest import u64

encode, decode = shmring._core.value_encode, shmring._core.value_decode

SCALARS = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=True)
           | st.binary(max_size=40) | st.text(max_size=20))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4).map(tuple), max_leaves=20)
Point = namedtuple("Point", "x y")


class Int(int):
    pass


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (NaN equal to NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b) and struct.pack("<d", a) == struct.pack("<d", b)
    return bool(a == b)


def tag_of_first_item(q: shmring.Queue[Any]) -> int:
    seg = shmring.Segment.open(q.name)
    try:
        off = DATA + u64(seg.buf, HEAD) % q.capacity
        tag: int = struct.unpack_from("<I", seg.buf, off + 4)[0]
        return tag
    finally:
        seg.close()


@settings(max_examples=300, deadline=None)
@given(value=VALUES)
def test_any_plain_value_round_trips_encoded(value: Any) -> None:
    data = encode(value)
    assert data is not None
    assert same(decode(data), value)


@settings(max_examples=100, deadline=None)
@given(values=st.lists(VALUES, min_size=1, max_size=8))
def test_plain_items_travel_value_encoded_and_come_back_the_same(values: list[Any]) -> None:
    with shmring.Queue() as q:
        q.put(values[0])
        assert tag_of_first_item(q) == TAG_VALUE
        assert same(q.get(), values[0])
        q.put_many(values)
        assert all(same(a, b) for a, b in zip(q.get_many(), values))


@pytest.mark.parametrize("item", [
    2**63, -(2**63) - 1, Int(5), Point(1, 2), [1, 2], {"a": 1}, {1}, "\ud800", bytearray(b"x"), 1j,
    (1, [2]), ((((((((((((((((((1,),),),),),),),),),),),),),),),),),),  # 17 tuples deep
])
def test_other_items_are_pickled_as_before(name: str, item: Any) -> None:
    assert encode(item) is None
    with shmring.Queue(name=name) as q:
        q.put(item)
        assert tag_of_first_item(q) == TAG_OBJECT
        got = q.get()
        assert type(got) is type(item) and (got == item or item != item)


def test_a_batch_with_one_item_that_does_not_encode_is_pickled_whole(name: str) -> None:
    with shmring.Queue(name=name) as q:
        q.put_many([1, Point(2, 3), "x"])
        assert tag_of_first_item(q) == TAG_OBJECT
        assert q.get_many() == [1, Point(2, 3), "x"]


def test_a_queue_with_its_own_serializer_never_value_encodes(name: str) -> None:
    with shmring.Queue(name=name, dumps=lambda o: pickle.dumps(o, 2), loads=pickle.loads) as q:
        q.put(7)
        assert tag_of_first_item(q) == TAG_OBJECT
        assert q.get_bytes() == pickle.dumps(7, 2)


def test_get_bytes_of_a_value_encoded_item_is_its_pickle(name: str) -> None:
    with shmring.Queue(name=name) as q:
        q.put((1, "two", b"3", 4.0, None, True))
        assert q.get_bytes() == pickle.dumps((1, "two", b"3", 4.0, None, True), pickle.HIGHEST_PROTOCOL)


def test_the_encoding_is_the_documented_one() -> None:
    i64, u32 = struct.Struct("=q"), struct.Struct("=I")
    assert encode(None) == b"N" and encode(True) == b"T" and encode(False) == b"F"
    assert encode(-2) == b"i" + i64.pack(-2)
    assert encode(0.5) == b"d" + struct.pack("=d", 0.5)
    assert encode(b"ab") == b"b" + u32.pack(2) + b"ab"
    assert encode("é") == b"s" + u32.pack(2) + "é".encode()
    assert encode((1, ())) == b"t" + u32.pack(2) + b"i" + i64.pack(1) + b"t" + u32.pack(0)


@pytest.mark.parametrize("data", [
    b"", b"?", b"i\0\0", b"d1234567", b"b\5\0\0\0abcd", b"s\1\0", b"t\3\0\0\0NN",
    b"t\xff\xff\xff\xffN",  # more values than bytes: refused before any allocation
    b"NN",  # bytes after the value
    b"s\2\0\0\0\xff\xfe",  # not UTF-8
    b"t\1\0\0\0" * 17 + b"N",  # nested deeper than 16
])
def test_a_damaged_encoding_raises_corrupted_error(data: bytes) -> None:
    with pytest.raises(shmring.CorruptedError, match="value-encoded"):
        decode(data)


def test_a_damaged_value_record_raises_and_the_queue_goes_on(name: str) -> None:
    with shmring.Queue(name=name) as q:
        q.put(("a", 1))
        q.put("next")
        seg = shmring.Segment.open(name)
        try:
            off = DATA + u64(seg.buf, HEAD) % q.capacity
            seg.buf[off + 8] = ord("?")  # the first item's kind
        finally:
            seg.close()
        with pytest.raises(shmring.CorruptedError, match="value-encoded"):
            q.get()
        assert q.get() == "next"


def test_a_queue_made_without_the_values_flag_gets_pickles(new_name: Callable[[], str]) -> None:
    # What an earlier release made: processes of this one pickle into it.
    name = new_name()
    mapping = shmring._core.create_queue(name, 4096, 0, 0, 20000, 0o600)
    q = shmring.Queue.open(name)
    mapping.leave()  # q's attachment keeps the queue; the last to leave removes it
    mapping.close()
    try:
        q.put((1, 2))
        assert tag_of_first_item(q) == TAG_OBJECT
        assert q.get() == (1, 2)
    finally:
        q.close()


def test_an_item_that_shares_one_object_many_times_is_pickled_at_once(name: str) -> None:
    # pickle writes a shared object once; the encoding would write it at
    # every place it is reached: past 4,096 values the item is pickled.
    t: Any = "leaf"
    for _ in range(6):
        t = (t,) * 10  # 10**6 leaves, 7 distinct objects
    assert encode(t) is None
    with shmring.Queue(max_size_bytes=4096, name=name) as q:
        q.put_many([t, t])
        assert tag_of_first_item(q) == TAG_OBJECT
        assert q.get() == t


def test_a_reader_with_its_own_loads_gets_the_pickle_of_a_value_encoded_item(name: str) -> None:
    seen: list[bytes] = []

    def loads(data: bytes) -> Any:
        seen.append(bytes(data))
        return ("wrapped", pickle.loads(data))

    with shmring.Queue(name=name) as writer:
        reader = shmring.Queue.open(name, loads=loads)
        try:
            writer.put((1, 2))
            assert tag_of_first_item(writer) == TAG_VALUE
            assert reader.get() == ("wrapped", (1, 2))
            assert seen == [pickle.dumps((1, 2), pickle.HIGHEST_PROTOCOL)]
        finally:
            reader.close()


def reference_encoding(value: Any) -> bytes:
    """PROTOCOL.md section 5.2, written out in Python."""
    if value is None or value is True or value is False:
        return {None: b"N", True: b"T", False: b"F"}[value]
    if type(value) is int:
        return b"i" + struct.pack("=q", value)
    if type(value) is float:
        return b"d" + struct.pack("=d", value)
    if type(value) in (bytes, str):
        data = value if type(value) is bytes else value.encode()
        return (b"b" if type(value) is bytes else b"s") + struct.pack("=I", len(data)) + data
    return b"t" + struct.pack("=I", len(value)) + b"".join(reference_encoding(v) for v in value)


@pytest.mark.parametrize("size", [*range(490, 530), 1000, 70_000])
def test_items_around_the_one_walk_buffer_encode_as_documented(size: int) -> None:
    # Small items are written in one walk through a 512-byte buffer, larger
    # ones sized first: every size across that boundary, flat and nested,
    # bytes and multi-byte text, gives the documented encoding.
    items = [
        b"x" * size,
        (7, b"y" * size, None),
        ((1.5, "é" * (size // 2)), (True, (b"z" * (size // 3), -1))),
        tuple(range(min(size // 9, 4000))),  # (past 4,096 values an item is pickled)
    ]
    for item in items:
        assert encode(item) == reference_encoding(item)
        assert same(decode(encode(item)), item)


@pytest.mark.parametrize("size", [10, 600])
def test_a_lone_surrogate_anywhere_means_pickle_at_any_size(size: int) -> None:
    assert encode((b"a" * size, "ok", "\ud800")) is None
    assert encode(("\ud800", b"a" * size)) is None
    assert encode((1, 2**70)) is None and encode((b"a" * size, 2**70)) is None
