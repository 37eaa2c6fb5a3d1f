"""put_many / get_many (faster-fifo's API) and raw bytes.

A batch is serialized whole before the first byte goes into the ring and
goes in all or nothing (it waits for room for all of it, and a timeout
delivers none of it); put_bytes/get_bytes skip the serializer; data_size()
counts payload bytes; faster-fifo's buffer helpers.
"""

from __future__ import annotations

import pickle
import queue
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import shmring

from _queue_helpers import OP_TIMEOUT, SMALL, Point, later
from conftest import record_size


def test_put_many_get_many(sq: shmring.Queue) -> None:
    sq.put_many([1, 2, 3])
    sq.put_many((x for x in "ab"))  # any iterable
    sq.put_many([])  # nothing
    sq.put_many_nowait([None, Point(0, 0)])
    assert sq.qsize() == 7
    assert sq.get_many(max_messages_to_get=2) == [1, 2]
    assert sq.get_many_nowait(max_messages_to_get=1) == [3]
    assert sq.get_many(block=False) == ["a", "b", None, Point(0, 0)]
    with pytest.raises(queue.Empty):
        sq.get_many(block=False)
    with pytest.raises(queue.Empty):
        sq.get_many_nowait()
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        sq.get_many(timeout=0.2)
    assert 0.18 <= time.monotonic() - t0 < 1.5
    sq.put(5)
    assert sq.get_many(True, 1.0, 100) == [5]
    t = later(0.2, lambda: sq.put_many([6, 7]))
    assert sq.get_many(timeout=OP_TIMEOUT) == [6, 7]  # a batch arrives whole
    t.join(5)


def test_put_many_is_all_or_nothing(name: str) -> None:
    with shmring.Queue(3, name=name) as q:
        q.put_many([1, 2])
        with pytest.raises(queue.Full):
            q.put_many_nowait(["a", "b"])
        t0 = time.monotonic()
        with pytest.raises(queue.Full):
            q.put_many(["a", "b"], timeout=0.2)
        assert 0.18 <= time.monotonic() - t0 < 1.5
        assert q.qsize() == 2
        q.put_many(["c"])
        assert q.full()
        with pytest.raises(ValueError, match="never fit"):
            q.put_many([1, 2, 3, 4])  # more than maxsize: can never fit
        assert q.get_many() == [1, 2, "c"]
    with shmring.Queue(max_size_bytes=256, name=name) as q:
        with pytest.raises(ValueError, match="never fit together"):
            q.put_many([b"x" * 100, b"y" * 100, b"z" * 100])  # > 256 ring bytes in records
        assert q.qsize() == 0
        q.put_many([b"x" * 60, b"y" * 60])
        with pytest.raises(queue.Full):
            q.put_many_nowait([b"x" * 60, b"y" * 60])  # fits the ring, not now
        assert q.qsize() == 2
        assert q.get_many() == [b"x" * 60, b"y" * 60]


def test_put_many_waits_until_the_whole_batch_fits(name: str) -> None:
    with shmring.Queue(4, name=name) as q:
        q.put_many([0, 1, 2])
        t = later(0.2, lambda: [q.get(timeout=OP_TIMEOUT) for _ in range(2)])
        t0 = time.monotonic()
        q.put_many([3, 4, 5], timeout=OP_TIMEOUT)
        assert time.monotonic() - t0 >= 0.15
        t.join(5)
        assert q.get_many() == [2, 3, 4, 5]


class _Refused(Exception):
    pass


def _dumps_refusing(obj: Any) -> bytes:
    if obj == "refuse":
        raise _Refused("cannot serialize this one")
    if obj == "not bytes":
        return "a str"  # type: ignore[return-value]
    return pickle.dumps(obj)


def _items_then_error() -> Iterator[Any]:
    yield 1
    yield 2
    raise _Refused("the iterable broke")


@pytest.mark.parametrize(
    ("items", "exc"),
    [
        ([1, lambda: 0, 3], (pickle.PicklingError, AttributeError, TypeError)),  # unpicklable in the middle
        ([1, threading.Lock(), 3], TypeError),
        ([1, "refuse", 3], _Refused),  # the serializer raises for the middle item
        ([1, "not bytes", 3], TypeError),  # the serializer returns a str for it
        ("generator", _Refused),  # the iterable itself fails part-way
    ],
    ids=["lambda", "lock", "dumps-raises", "dumps-not-bytes", "iterable-raises"],
)
def test_put_many_serializes_the_whole_batch_before_writing(name: str, items: Any, exc: Any) -> None:
    """Partial batches are explicit: every item is serialized before the
    first byte goes into the ring, so an item that fails in the middle
    delivers nothing, not the items before it."""
    with shmring.Queue(name=name, dumps=_dumps_refusing, loads=pickle.loads) as q:
        q.put("before")
        with pytest.raises(exc):
            q.put_many(_items_then_error() if items == "generator" else items)
        st = q.stats()
        assert (q.qsize(), st["puts"], st["used_bytes"]) == (1, 1, record_size(len(pickle.dumps("before"))))
        q.put("after")
        assert q.get_many_nowait() == ["before", "after"]


def test_put_many_that_times_out_delivers_nothing_even_with_room_for_part(name: str) -> None:
    """A batch waits for room for all of it; when the time runs out it
    delivers none, even though room for some of it came meanwhile (maxsize,
    and bytes on a bounded ring)."""
    with shmring.Queue(4, name=name) as q:
        q.put_many([0, 1, 2])
        t = later(0.1, lambda: q.get(timeout=OP_TIMEOUT))  # room for 2 of the 3
        with pytest.raises(queue.Full):
            q.put_many(["a", "b", "c"], timeout=0.5)
        t.join(5)
        assert q.stats()["puts"] == 3
        assert q.get_many_nowait() == [1, 2]
    with shmring.Queue(max_size_bytes=SMALL, name=name, dumps=bytes, loads=bytes) as q:
        q.put_many([b"x" * 56] * 4)  # four 64-byte records: full
        t = later(0.1, lambda: q.get(timeout=OP_TIMEOUT))  # room for one record of 64
        with pytest.raises(queue.Full):
            q.put_many([b"y" * 56, b"z" * 56], timeout=0.5)
        t.join(5)
        assert q.stats()["used_bytes"] == 3 * 64 and q.stats()["puts"] == 4
        with pytest.raises(queue.Full):
            q.put_many_nowait([b"y" * 56, b"z" * 56])
        assert q.get_many_nowait() == [b"x" * 56] * 3
        q.put_many_nowait([b"y" * 56, b"z" * 56])  # and it goes in whole once it fits
        assert q.get_many_nowait() == [b"y" * 56, b"z" * 56]


class _Shrinker:
    """Pickling it empties the list put_many was given."""

    def __init__(self, victims: list[Any]) -> None:
        self.victims = victims

    def __reduce__(self) -> tuple[Any, ...]:
        self.victims.clear()
        return (int, (7,))


def test_put_many_survives_a_list_changed_while_pickling(name: str) -> None:
    with shmring.Queue(name=name) as q:
        items: list[Any] = ["a"]
        items.insert(0, _Shrinker(items))
        items += [b"x" * 100 for _ in range(50)]
        q.put_many(items)  # snapshot taken before pickling: no use of freed items
        got = q.get_many_nowait()
        assert got[0] == 7 and got[1] == "a" and len(got) == 52


def test_data_size_counts_payload_bytes(sq: shmring.Queue) -> None:
    assert sq.data_size() == 0
    sq.put_bytes(b"x" * 10)
    obj = {"k": list(range(10))}
    sq.put(obj)
    assert sq.data_size() == 10 + len(sq.dumps(obj))
    assert sq.dumps(obj) == pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
    assert sq.loads(sq.dumps(obj)) == obj
    sq.get()
    assert sq.data_size() == len(sq.dumps(obj))
    sq.get()
    assert sq.data_size() == 0


def test_put_bytes_get_bytes(sq: shmring.Queue) -> None:
    sq.put_bytes(b"raw")
    sq.put_bytes(bytearray(b"ba"))
    sq.put_bytes(memoryview(b"xmvx")[1:3])
    sq.put_bytes(b"")
    sq.put("obj")
    assert sq.get_bytes() == b"raw"
    assert sq.get() == b"ba"  # get() of a put_bytes item returns the bytes, unpickled
    assert sq.get_bytes(True, 1.0) == b"mv"
    assert sq.get_bytes(block=False) == b""
    assert sq.get_bytes() == pickle.dumps("obj", pickle.HIGHEST_PROTOCOL)  # raw pickle
    with pytest.raises(queue.Empty):
        sq.get_bytes(block=False)
    with pytest.raises(queue.Empty):
        sq.get_bytes(timeout=0.05)
    with pytest.raises(TypeError):
        sq.put_bytes("not bytes")  # type: ignore[arg-type]
    sq.put_bytes(b"q" * 100, block=False)
    sq.put_bytes(data=b"k", timeout=1)
    assert sq.get_many() == [b"q" * 100, b"k"]


def test_reallocate_msg_buffer_and_parse_messages(sq: shmring.Queue) -> None:
    sq.reallocate_msg_buffer(12345)
    assert sq.max_bytes_to_read == 12345
    msgs = [1, "two", [3]]
    buf = b"".join(struct.pack("N", len(d)) + d for d in map(sq.dumps, msgs))
    assert sq.parse_messages(3, len(buf), bytearray(buf)) == msgs
    assert sq.parse_messages(1, len(buf), buf) == [1]
