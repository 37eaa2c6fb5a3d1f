"""Regressions for what the review of Queue and Topic found (each test
failed, crashed or hung before its fix)."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import pytest

import shmring

SHM = Path("/dev/shm")
RING = 1 << 20


def _crash_holding_lock(q: shmring.Queue) -> None:
    pid = os.fork()
    if pid == 0:
        q._crash_in_put(3)  # never returns
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status)


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
