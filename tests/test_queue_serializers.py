"""Serializers of shmring.Queue: custom dumps/loads (checked, raising in put()
and get(), travelling with the queue to spawn children) and subclasses that
override dumps()/loads() or add attributes of their own.

Helpers at module level run in child processes (spawn re-imports this
module), so they must stay importable.
"""

from __future__ import annotations

import json
import pickle
import threading
from collections.abc import Callable
from typing import Any

import pytest

import shmring

from _queue_helpers import OP_TIMEOUT, Point
from conftest import SHM, SPAWN


def _json_dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _json_loads(data: bytes) -> Any:
    return json.loads(data.decode())


def test_custom_dumps_loads(name: str) -> None:
    with shmring.Queue(name=name, dumps=_json_dumps, loads=_json_loads) as q:
        q.put({"a": [1, 2]})
        assert q.get_bytes() == b'{"a": [1, 2]}'
        q.put([1, "x"])
        assert q.get() == [1, "x"]
        q.put_many([1, 2])
        assert q.get_many() == [1, 2]
        assert q.dumps((1, 2)) == b"[1, 2]" and q.loads(b"[3]") == [3]
        with pytest.raises(TypeError):
            q.put({1, 2})  # json cannot encode a set: raised in put(), nothing queued
        assert q.qsize() == 0
        other = shmring.Queue.open(name, dumps=_json_dumps, loads=_json_loads)
        q.put((1, 2))
        assert other.get() == [1, 2]
        copy = pickle.loads(pickle.dumps(q))  # keeps the serializers
        q.put({"k": None})
        assert copy.get() == {"k": None}
        other.close()
        copy.close()  # the last of the three handles out removes the queue: the name is free again
    with shmring.Queue(name=name, dumps=lambda o: bytearray(b"ba"), loads=bytes) as q:  # type: ignore[arg-type, return-value]
        q.put("anything")
        assert q.get() == b"ba"
    with shmring.Queue(name=name, dumps=lambda o: "not bytes") as q:  # type: ignore[arg-type, return-value]
        with pytest.raises(TypeError, match="bytes-like"):
            q.put(1)
        assert q.qsize() == 0


@pytest.mark.parametrize("kwargs", [{"dumps": 42}, {"loads": "not callable"}])
def test_refused_serializer_leaves_no_segment(name: str, kwargs: dict[str, Any]) -> None:
    try:
        with pytest.raises(TypeError, match="callables"):
            shmring.Queue(name=name, **kwargs)
        assert not (SHM / name).exists(), "Queue() raised, but left its segment behind in /dev/shm"
    finally:
        (SHM / name).unlink(missing_ok=True)  # report the leak once, as this failure


def test_unpicklable_object_raises_in_put(sq: shmring.Queue) -> None:
    # multiprocessing.Queue pickles in its feeder thread, so put() succeeds
    # there and the item is silently dropped; shmring pickles in put().
    with pytest.raises(TypeError):
        sq.put(threading.Lock())
    with pytest.raises(TypeError):
        sq.put_many([1, threading.Lock(), 3])  # all or nothing
    assert sq.qsize() == 0
    sq.put("next")
    assert sq.get() == "next"


def _bad_loads(data: bytes) -> Any:
    raise RuntimeError("cannot decode")


def test_loads_error_propagates_and_queue_stays_usable(name: str) -> None:
    with shmring.Queue(name=name, loads=_bad_loads) as q:
        q.put(1)
        with pytest.raises(RuntimeError, match="cannot decode"):
            q.get()
        q.put_bytes(b"raw")  # raw items never go through loads
        assert q.get() == b"raw"


class PrefixQueue(shmring.Queue):
    """faster-fifo style: a subclass that overrides dumps()/loads()."""

    def dumps(self, obj: Any) -> bytes:
        return b"PFX" + pickle.dumps(obj)

    def loads(self, data: bytes) -> Any:
        assert data[:3] == b"PFX", data[:10]
        return pickle.loads(data[3:])


class TaggedQueue(shmring.Queue):
    """A user subclass with an attribute of its own."""

    def __init__(self, *args: Any, tag: str = "none", **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.tag = tag

    def describe(self) -> str:
        return f"{self.tag}:{self.qsize()}"


def test_subclass_overriding_dumps_and_loads(name: str) -> None:
    with PrefixQueue(name=name) as q:
        q.put(("x", 1))
        assert q.get_bytes().startswith(b"PFX")
        q.put_many([1, 2])
        q.put(3)
        assert q.get() == 1 and q.get_many() == [2, 3]
        copy = pickle.loads(pickle.dumps(q))
        assert type(copy) is PrefixQueue
        copy.put("via copy")
        assert q.get_bytes().startswith(b"PFX")


def _subclass_child(q: Any, out: Any) -> None:
    out.put((type(q).__qualname__, getattr(q, "tag", None), q.describe(), q.get(timeout=OP_TIMEOUT)))
    q.put("from child")


@pytest.mark.timeout(60)
def test_subclass_pickled_to_a_spawn_child_keeps_its_class(name: str, new_name: Callable[[], str]) -> None:
    with TaggedQueue(5, name=name, tag="blue") as q, PrefixQueue(name=new_name()) as out:
        q.put(Point(1, 1))
        p = SPAWN.Process(target=_subclass_child, args=(q, out))
        p.start()
        assert out.get(timeout=30) == ("TaggedQueue", "blue", "blue:1", Point(1, 1))
        p.join(30)
        assert p.exitcode == 0
        assert q.get(timeout=OP_TIMEOUT) == "from child"
        assert q.maxsize == 5


def _custom_serializer_child(q: Any) -> None:
    q.put(q.get(timeout=OP_TIMEOUT) + ["child"])


@pytest.mark.timeout(60)
def test_custom_serializers_travel_to_a_spawn_child(name: str) -> None:
    with shmring.Queue(name=name, dumps=_json_dumps, loads=_json_loads) as q:
        q.put(["parent"])
        p = SPAWN.Process(target=_custom_serializer_child, args=(q,))
        p.start()
        p.join(30)
        assert p.exitcode == 0
        assert q.get_bytes() == b'["parent", "child"]'
