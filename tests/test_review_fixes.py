"""Regressions for what the review of Queue and Topic found (each test
failed, crashed or hung before its fix)."""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path
from typing import Any

import pytest

import shmring

SHM = Path("/dev/shm")
RING = 1 << 20


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


def test_overflow_removes_a_chunk_left_unpublished_by_a_killed_producer(name: str) -> None:
    (SHM / f"{name}.q0").write_bytes(b"")  # created, never published: its maker died
    with shmring.Queue(name=name) as q:
        q.put_bytes(b"y" * (RING + 1))  # needs chunk 0
        assert q.stats()["overflow_chunks"] == 1
        assert q.get_bytes(timeout=1) == b"y" * (RING + 1)


def _crash_holding_lock(q: shmring.Queue) -> None:
    pid = os.fork()
    if pid == 0:
        q._crash_in_put(3)  # never returns
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status)


@pytest.mark.timeout(30)
def test_recovery_removes_every_chunk_left_past_the_chain(name: str) -> None:
    with shmring.Queue(name=name) as q:
        for i in (0, 1, 2):
            (SHM / f"{name}.q{i}").write_bytes(b"")  # a killed multi-chunk put_many's leftovers
        _crash_holding_lock(q)
        q.put("after")  # takes the dead holder's lock over, recounts, cleans up
        assert not any((SHM / f"{name}.q{i}").exists() for i in (0, 1, 2))
        assert q.get(timeout=1) == "after"


def test_a_consumer_unmaps_chunks_another_consumer_retired(name: str) -> None:
    with shmring.Queue(name=name) as q:
        other = shmring.Queue.open(name)
        for _ in range(3):
            q.put_bytes(b"z" * 700_000)  # main ring, then chunks 0 and 1
        assert q.get_bytes() and q.get_bytes()  # q maps chunk 0 and retires it
        assert other.get_bytes()  # other maps chunk 1 and retires it
        q.put("next")
        assert q.get() == "next"
        maps = Path("/proc/self/maps").read_text()
        assert f"{name}.q0" not in maps and f"{name}.q1" not in maps
        other.close()


def test_a_spin_window_over_50_ms_is_refused(name: str) -> None:
    with pytest.raises(ValueError):
        shmring.Queue(name=name, spin_ns=60_000_000)
    with shmring.Queue(name=name, spin_ns=50_000_000) as q:
        seg = shmring.Segment.open(name)
        struct.pack_into("<I", seg.buf, 28, 2_000_000_000)  # a hostile peer's 2 s poll
        with pytest.raises(shmring.CorruptedError):
            shmring.Queue.open(name)
        seg.close()
        q.put(1)
        assert q.get() == 1


def test_overwrite_publisher_refuses_a_misaligned_reclaim_point(name: str) -> None:
    with shmring.Topic.create(name, 256, "overwrite") as t:
        pub = t.publisher()
        for i in range(20):
            pub.send(b"m%d" % i)
        seg = shmring.Segment.open(name)
        head = struct.unpack_from("<Q", seg.buf, 136)[0]  # head: docs/PROTOCOL.md 6.1
        struct.pack_into("<Q", seg.buf, 136, head + 8)
        with pytest.raises(shmring.CorruptedError):
            for i in range(20):
                pub.send(b"n" * 100)
        seg.close()
        pub.close()


def test_pickled_queue_state_is_plain(name: str) -> None:
    with shmring.Queue(name=name) as q:
        clone = pickle.loads(pickle.dumps(q))
        q.put(1)
        assert clone.get(timeout=1) == 1
        clone.close()


def _publish_forever(topic: shmring.Topic, stop: Any, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    pub = topic.publisher()
    msg = b"x" * 48
    while not stop.is_set():
        for _ in range(1000):
            pub.send(msg)


@pytest.mark.timeout(60)
def test_a_lagging_subscriber_on_a_full_overwrite_ring_never_sees_false_corruption(name: str) -> None:
    """Resuming after a lag read head, then tail: a publish in between made a
    full ring look impossible (tail - head > capacity) and raised
    CorruptedError.  Publisher and reader on different CPUs race hardest."""
    import multiprocessing as mp
    import time

    cpus = sorted(os.sched_getaffinity(0))
    pin = len(cpus) >= 2
    ctx = mp.get_context("fork")
    with shmring.Topic.create(name, 1 << 20, "overwrite") as topic:
        sub = topic.subscribe()
        stop = ctx.Event()
        p = ctx.Process(target=_publish_forever, args=(topic, stop, cpus[0] if pin else None))
        before = os.sched_getaffinity(0)
        p.start()
        if pin:
            os.sched_setaffinity(0, {cpus[1]})
        got = lagged = 0
        try:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                try:
                    sub.recv_bytes(timeout=1)
                    got += 1
                except shmring.Lagged:
                    lagged += 1
                if got % 5000 == 0:
                    time.sleep(0.002)  # fall behind now and then: the ring fills in ~2 ms
        finally:
            os.sched_setaffinity(0, before)
            stop.set()
            p.join(10)
            sub.close()
        assert p.exitcode == 0 and got > 0 and lagged > 0  # it did lag, and recovered every time


@pytest.mark.timeout(30)
def test_locking_the_topic_again_inside_an_open_reserve_is_an_error_not_a_hang(name: str) -> None:
    with shmring.Topic.create(name, 4096, "block") as t:
        pub, other = t.publisher(), t.publisher()
        with pub.reserve(4) as mv:
            mv[:] = b"abcd"
            with pytest.raises(RuntimeError, match="open reserve"):
                other.send(b"x")
            with pytest.raises(RuntimeError, match="open reserve"):
                t.subscribe()
        sub = t.subscribe()  # after the block: fine
        other.send(b"after")
        assert sub.recv(timeout=1) == b"after"
        for end in (pub, other, sub):
            end.close()
