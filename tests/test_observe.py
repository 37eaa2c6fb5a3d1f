"""``shmring.observe``: what the monitoring tools (``top``, ``inspect``,
``stats``) read from shared memory: every kind's counters, who waits, the
attached processes, topic subscribers and their lag, lock holders (dead
ones too), a named primitive's type and state; rates from two looks; and
that looking never writes a byte, never attaches, and survives a hostile
mapping."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import struct
import time
from collections.abc import Callable
from contextlib import ExitStack, closing
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import shmring
from shmring import _core, observe

from _cli_helpers import cli
from conftest import FORK, Kids, eventually

SHM = Path("/dev/shm")
OBJECT_TYPE_OFFSET = 84  # the header's object_type (docs/PROTOCOL.md, the segment header)


def digest(name: str) -> str:
    return hashlib.sha256((SHM / name).read_bytes()).hexdigest()


PRIMITIVES: list[tuple[Callable[[str], Any], str, dict[str, Any]]] = [
    (lambda n: shmring.AtomicInt64.create(n), "AtomicInt64", {"value": 0}),
    (lambda n: shmring.AtomicInt32.create(n), "AtomicInt32", {"value": 0}),
    (lambda n: shmring.AtomicFlag.create(n), "AtomicFlag", {"set": False}),
    (lambda n: shmring.Semaphore.create(n, 3), "Semaphore", {"value": 3, "waiters": 0}),
    (lambda n: shmring.SpinLock.create(n), "SpinLock", {"holder_pid": 0, "owner_died_pending": False}),
    (lambda n: shmring.Mutex.create(n), "Mutex", {"holder_pid": 0, "state": "consistent", "sleepers": False}),
    (lambda n: shmring.Event.create(n), "Event", {"set": False, "waiters": 0}),
]


@pytest.mark.parametrize(("make", "primitive", "state"), PRIMITIVES, ids=[p[1] for p in PRIMITIVES])
def test_a_named_primitive_says_which_it_is_and_its_state(
    make: Callable[[str], Any], primitive: str, state: dict[str, Any], name: str
) -> None:
    obj = make(name)
    try:
        view = observe.look(name)
        assert view.kind == "sync"
        assert view.primitive is not None and view.primitive["primitive"] == primitive
        for key, value in state.items():
            assert view.primitive[key] == value, key
        assert [p.pid for p in view.processes] == [os.getpid()]
        assert view.processes[0].command == Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    finally:
        obj.close()


def test_primitive_state_follows_the_object(new_name: Callable[[], str]) -> None:
    with ExitStack() as stack:
        sem = shmring.Semaphore.create(new_name(), 2)
        counter = shmring.AtomicInt64.create(new_name())
        event = shmring.Event.create(new_name())
        mutex = shmring.Mutex.create(new_name())
        for obj in (sem, counter, event, mutex):
            stack.callback(obj.close)
        sem.acquire()
        counter.store(-42)
        event.set()
        mutex.acquire()
        try:
            assert observe.look(sem.name).primitive == {"primitive": "Semaphore", "value": 1, "waiters": 0}
            assert observe.look(counter.name).primitive == {"primitive": "AtomicInt64", "value": -42}
            assert observe.look(event.name).primitive == {"primitive": "Event", "set": True, "waiters": 0}
            lock = observe.look(mutex.name).lock
            assert lock == observe.Lock(holder_pid=os.getpid(), holder_alive=True, owner_died_pending=False)
        finally:
            mutex.release()
        assert observe.look(mutex.name).lock == observe.Lock(0, False, False)


def _hold_and_hang(mutex: shmring.Mutex, ready: Any) -> None:
    mutex.acquire()
    ready.set()
    time.sleep(60)


def test_a_lock_whose_holder_died_is_shown_pending(name: str, kids: Kids) -> None:
    mutex = shmring.Mutex.create(name)
    with closing(mutex):
        ready = FORK.Event()
        child = kids.process(FORK, _hold_and_hang, mutex, ready)
        assert ready.wait(10)
        assert observe.look(name).lock == observe.Lock(child.pid, True, False)
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        assert observe.look(name).lock == observe.Lock(child.pid, False, True)
        with pytest.raises(shmring.OwnerDied):
            mutex.acquire()
        view = observe.look(name)
        assert view.lock == observe.Lock(os.getpid(), True, False)
        assert view.primitive is not None and view.primitive["state"] == "owner_died"
        mutex.mark_consistent()
        mutex.release()
        assert observe.look(name).primitive == {
            "primitive": "Mutex", "state": "consistent", "owner_died_pending": False, "sleepers": False,
            "holder_pid": 0, "holder_alive": False,
        }


@pytest.mark.parametrize("bad_type", [0, 8, 0xFFFFFFFF, 6])
def test_a_hostile_object_type_is_shown_unknown(bad_type: int, name: str) -> None:
    """The type tag is not trusted: out of range, or naming a primitive bigger
    than the payload (6, a 24-byte mutex, in an 8-byte atomic's segment)."""
    with closing(shmring.AtomicInt64.create(name)):
        with open(SHM / name, "r+b") as f:
            f.seek(OBJECT_TYPE_OFFSET)
            f.write(struct.pack("<I", bad_type))
        assert observe.look(name).primitive == {"primitive": "unknown"}


def _consume_slowly(ch_name: str, block: Any) -> None:
    with shmring.Channel.open(ch_name) as ch:
        block.wait(10)
        ch.recv(timeout=10)


def test_channel_counters_fill_and_a_waiting_consumer(name: str, kids: Kids) -> None:
    with shmring.Channel.create(name, 4096) as ch:
        for i in range(5):
            ch.send(bytes(100))
        assert ch.recv() == bytes(100)
        view = observe.look(name)
        assert view.counters == {"messages_in": 5, "messages_out": 1, "bytes_in": 500, "bytes_out": 100}
        assert view.fill == pytest.approx(4 * 112 / 4096)
        assert view.waiting == {"producers": 0, "consumers": 0}
    with shmring.Channel.create(name + "w", 4096) as ch:
        go = FORK.Event()
        kids.process(FORK, _consume_slowly, ch.name, go)
        go.set()
        assert eventually(lambda: observe.look(ch.name).waiting["consumers"] == 1, 10), "the sleeping reader"
        ch.send(b"x")
        assert eventually(lambda: observe.look(ch.name).waiting["consumers"] == 0, 10)
        kids.join(kids.procs, 10)


def _get_one(q: shmring.Queue[Any]) -> Any:
    return q.get(timeout=10)


def test_queue_counts_bytes_in_and_out_and_waiting_getters(name: str, kids: Kids) -> None:
    with shmring.Queue(name=name) as q:
        waiter = kids.start(FORK, _get_one, q)
        assert eventually(lambda: observe.look(name).waiting["consumers"] == 1, 10)
        q.put(b"a" * 10)
        assert waiter.result() == b"a" * 10
        before = observe.look(name).counters
        q.put(b"b" * 1000)
        q.get()
        after = observe.look(name).counters
        assert after["messages_in"] - before["messages_in"] == 1
        assert after["messages_out"] - before["messages_out"] == 1
        grown_in = after["bytes_in"] - before["bytes_in"]
        assert grown_in == after["bytes_out"] - before["bytes_out"] and 1000 <= grown_in < 1100
        view = observe.look(name)
        assert view.items == 0 and view.waiting == {"producers": 0, "consumers": 0, "joiners": 0}
        assert view.lock == observe.Lock(0, False, False)


def test_topic_lists_subscribers_with_their_lag(name: str) -> None:
    with shmring.Topic.create(name, capacity=1 << 16) as topic, topic.publisher() as pub, \
            topic.subscribe() as fast, topic.subscribe() as slow:
        for i in range(10):
            pub.send(b"%d" % i)
        for _ in range(10):
            fast.recv()
        for _ in range(3):
            slow.recv()
        view = observe.look(name)
        behind = sorted(s.behind_messages for s in view.subscribers)
        assert behind == [0, 7]
        assert all(s.pid == os.getpid() and s.alive and s.consistent and s.lagged == 0 for s in view.subscribers)
        assert view.counters["messages_in"] == 10
        assert 0 < view.fill <= 1  # type: ignore[operator]


def test_topic_delivery_rate_counts_subscribers_present_in_both_looks(name: str) -> None:
    with shmring.Topic.create(name, capacity=1 << 16) as topic, topic.publisher() as pub, \
            topic.subscribe() as sub:
        first = observe.snapshot([name])
        for i in range(8):
            pub.send(b"12345678")
        for _ in range(8):
            sub.recv()
        with topic.subscribe():  # joined between the looks: not counted
            second = observe.snapshot([name])
        elapsed = second.time - first.time
        rate = observe.rates(first, second)[second.objects[0].key]
        assert rate["messages_in"] * elapsed == pytest.approx(8)
        assert rate["messages_out"] * elapsed == pytest.approx(8)
        assert rate["bytes_out"] == pytest.approx(rate["bytes_in"])


def test_a_hostile_subscriber_cursor_is_flagged_not_used(name: str) -> None:
    with shmring.Topic.create(name, capacity=4096) as topic, topic.subscribe():
        mapping = _core.open(name, False, True, False)
        try:
            buf = memoryview(mapping)
            table = _core.HEADER_SIZE + 384  # the subscriber table follows the 384-byte control block
            struct.pack_into("<Q", buf, table + 8, 2**63)  # its cursor, far beyond the topic
            buf.release()
            view = observe.look(name)
        finally:
            mapping.close()
        assert [(s.consistent, s.behind_bytes, s.behind_messages) for s in view.subscribers] == [(False, 0, 0)]


def test_rates_are_deltas_over_the_interval_and_never_negative() -> None:
    def view(counters: dict[str, int]) -> observe.ObjectView:
        return observe.ObjectView("x", "channel", 1, 7, 1, False, (), 0.0, None, counters, {})

    before = observe.Snapshot(10.0, (view({"messages_in": 100, "bytes_in": 1000}),))
    after = observe.Snapshot(12.0, (view({"messages_in": 300, "bytes_in": 500}),))
    assert observe.rates(before, after) == {("x", 7): {"messages_in": 100.0}}
    assert observe.rates(after, before) == {}


def test_looking_writes_nothing_and_attaches_nothing(new_name: Callable[[], str]) -> None:
    """Quiescent objects of every kind: their bytes, before and after every
    way of looking at them, are the same."""
    with shmring.Channel.create(new_name(), 4096) as ch, shmring.Queue(name=new_name()) as q, \
            shmring.Topic.create(new_name(), capacity=4096) as topic, topic.subscribe() as sub, \
            topic.publisher() as pub, closing(shmring.Mutex.create(new_name())) as mutex:
        ch.send(b"abc")
        q.put({"k": 1})
        pub.send(b"x")
        mutex.acquire()
        names = [ch.name, q.name, topic.name, mutex.name]
        before = {n: digest(n) for n in names}
        rosters = {n: observe.look(n).processes for n in names}
        first = observe.snapshot()
        observe.report(first, observe.snapshot())
        for args in (["stats"], ["stats", "--json"], *(["inspect", n] for n in names)):
            assert cli(*args).returncode == 0, args
        assert {n: digest(n) for n in names} == before
        assert {n: observe.look(n).processes for n in names} == rosters
        mutex.release()
        assert sub.recv() == b"x"


def test_the_report_matches_its_documented_schema(new_name: Callable[[], str]) -> None:
    schema = json.loads(resources.files("shmring").joinpath("top.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    damaged = new_name()
    made = [new_name(), new_name()]
    with shmring.Channel.create(new_name(), 4096) as ch, shmring.Queue(name=new_name()) as q, \
            shmring.Topic.create(new_name(), capacity=4096) as topic, topic.subscribe(), \
            closing(shmring.Semaphore.create(made[0], 1)), shmring.Segment.create(made[1], 64), \
            shmring.Segment.create(damaged, 64):
        with open(SHM / damaged, "r+b") as f:
            f.seek(16)
            f.write(struct.pack("<I", 99))  # its kind: outside the known ones, a checksum mismatch too
        ch.send(b"a")
        q.put(1)
        first = observe.snapshot()
        doc = json.loads(json.dumps(observe.report(first, observe.snapshot())))
        jsonschema.validate(doc, schema)
        ours = {ch.name, q.name, topic.name, damaged} | {n for n in made}
        kinds = {o["kind"] for o in doc["objects"] if o["name"] in ours}
        assert {"channel", "queue", "topic", "sync", "segment", "damaged"} <= kinds
        problems = [o["problem"] for o in doc["objects"] if o["name"] == damaged]
        assert problems and problems[0]


QUEUE_LOCK_OWNER = _core.HEADER_SIZE + 128  # the queue's lock word (docs/PROTOCOL.md 5.1)
TOPIC_LOCK_OWNER = _core.HEADER_SIZE + 64  # the topic's lock word (docs/PROTOCOL.md 6.1)
TOPIC_TAIL, TOPIC_NEXT_SEQ = _core.HEADER_SIZE + 128, _core.HEADER_SIZE + 144
SUBSCRIBER_TABLE = _core.HEADER_SIZE + 384


def poke(name: str, offset: int, value: int) -> None:
    with open(SHM / name, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack("<Q", value & (2**64 - 1)))


@pytest.mark.parametrize("token", [0xFFFFFFFF00000000, 2**64 - 1, (2**31 + 5) << 32 | 7])
@pytest.mark.parametrize("kind", ["queue", "topic"])
def test_a_hostile_lock_word_shows_a_dead_holder_and_no_crash(kind: str, token: int, name: str) -> None:
    """Any value in a lock's owner word (a pid beyond what os.kill takes, the
    abandoned marker): the look goes on and shows the holder as dead."""
    make = (lambda: shmring.Queue(name=name)) if kind == "queue" else (
        lambda: shmring.Topic.create(name, capacity=4096))
    with make():
        poke(name, QUEUE_LOCK_OWNER if kind == "queue" else TOPIC_LOCK_OWNER, token)
        (view,) = observe.snapshot([name]).objects
        assert view.lock is not None and view.lock.holder_pid == token >> 32
        assert not view.lock.holder_alive and view.lock.owner_died_pending
        poke(name, QUEUE_LOCK_OWNER if kind == "queue" else TOPIC_LOCK_OWNER, 0)


def peek(name: str, offset: int) -> int:
    with open(SHM / name, "rb") as f:
        f.seek(offset)
        return int(struct.unpack("<Q", f.read(8))[0])


@pytest.mark.parametrize(
    ("pokes"),
    [
        {SUBSCRIBER_TABLE + 8: 2**63},  # its cursor far ahead of the topic
        {TOPIC_TAIL: 10 * 4096},  # the topic's tail further ahead of the cursor than the ring holds
        {SUBSCRIBER_TABLE + 16: 2**62},  # its message count ahead of the topic's
    ],
    ids=["cursor-ahead", "cursor-too-far-behind", "count-ahead"],
)
def test_impossible_subscriber_numbers_are_flagged(pokes: dict[int, int], name: str) -> None:
    with shmring.Topic.create(name, capacity=4096) as topic, topic.subscribe():
        saved = {offset: peek(name, offset) for offset in pokes}
        for offset, value in pokes.items():
            poke(name, offset, value)
        (sub,) = observe.look(name).subscribers
        for offset, value in saved.items():
            poke(name, offset, value)
        assert (sub.consistent, sub.behind_bytes, sub.behind_messages) == (False, 0, 0)


def _subscribe_and_read(name: str, until: int) -> int:
    with shmring.Topic.open(name) as topic, topic.subscribe() as sub:
        got = 0
        while got < until:
            try:
                sub.recv(timeout=10)
            except shmring.Lagged:
                pass
            got += 1
        return got


def test_honest_moving_subscribers_are_never_flagged(name: str, kids: Kids) -> None:
    """A subscriber that moves on while the topic is read is never seen
    ahead of the topic (the subscriber's words are read first)."""
    with shmring.Topic.create(name, capacity=1 << 16) as topic, topic.publisher() as pub:
        readers = [kids.start(FORK, _subscribe_and_read, name, 20_000) for _ in range(2)]
        assert eventually(lambda: len(observe.look(name).subscribers) == 2, 10)
        flagged = looks = 0
        for i in range(20_000):
            pub.send(b"%d" % i)
            if i % 5 == 0:
                looks += 1
                flagged += sum(not s.consistent for s in observe.look(name).subscribers)
        assert [r.result() for r in readers] == [20_000, 20_000]
        assert looks == 4000 and flagged == 0


def test_a_topics_read_rate_leaves_out_what_subscribers_missed(name: str) -> None:
    with shmring.Topic.create(name, capacity=4096, policy="overwrite") as topic, topic.publisher() as pub, \
            topic.subscribe() as sub:
        first = observe.snapshot([name])
        for i in range(1000):
            pub.send(b"%08d" % i)
        read = 0
        while True:
            try:
                sub.recv(timeout=0)
                read += 1
            except shmring.Lagged:
                continue
            except shmring.Timeout:
                break
        second = observe.snapshot([name])
        rate = observe.rates(first, second)[second.objects[0].key]
        assert 0 < read < 1000
        assert rate["messages_out"] * (second.time - first.time) == pytest.approx(read)
