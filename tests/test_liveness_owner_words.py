"""Owner words that no live holder wrote: a stray write puts a token into a
lock's or a channel end's owner word (PROTOCOL.md 1.5 and 3.1: a process token
is ``pid << 32 | (start_time & 0xffffffff)``, its start field never 0).  The
next caller takes the lock or the end over as from a dead holder within a
bounded time, never waits for ever.

The hostile word is written through an mmap of /dev/shm/<name> at the
documented offset (payload at 4096); the caller runs in a child process.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

import shmring

from conftest import FORK, Kids

PAYLOAD = 4096  # PROTOCOL.md 1: the header page, then the payload
OFFSETS = {  # payload offsets of the owner words (PROTOCOL.md 3.1, 4, 5.1, 6.1)
    "topic_lock": 64,
    "queue_lock": 128,
    "mutex": 0,
    "channel_producer": 136,
    "channel_consumer": 264,
}


def _start_ticks(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[19])  # field 22


def hostile_tokens() -> dict[str, int]:
    """Words naming a live process (this test's) that cannot be its token."""
    pid = os.getpid()
    real = _start_ticks(pid) & 0xFFFFFFFF
    return {
        "live_pid_start_0": pid << 32,
        "live_pid_wrong_start": pid << 32 | ((real + 12345) & 0xFFFFFFFF or 7),
        "pid_0": 0x1234,
        "pid_above_pid_max": (1 << 22) + 1 << 32 | 1,
    }


def poke(name: str, offset: int, value: int) -> None:
    with open(f"/dev/shm/{name}", "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
        struct.pack_into("<Q", m, PAYLOAD + offset, value)


def _take(kind: str, name: str) -> str:
    """In the child: the call that needs the owner word's lock or end."""
    if kind == "topic_lock":
        topic = shmring.Topic.open(name)
        topic.subscribe(timeout=5).close()
        topic.close()
        return "taken"
    if kind == "queue_lock":
        q = shmring.Queue.open(name)
        q.put(b"x", timeout=5)
        out = q.get(timeout=5)
        q.close()
        return "taken" if out == b"x" else f"got {out!r}"
    if kind == "mutex":
        m = shmring.Mutex.open(name)
        try:
            m.acquire(timeout=5)
        except shmring.OwnerDied:
            return "taken"  # granted, told the data may need repair
        return "taken without OwnerDied"
    ch = shmring.Channel.open(name)
    if kind == "channel_producer":
        ch.send(b"x", timeout=5)
    else:
        ch.try_recv()
    ch.close()
    return "taken"


def _make(kind: str, name: str) -> object:
    if kind == "topic_lock":
        return shmring.Topic.create(name, 4096, "block")
    if kind == "queue_lock":
        return shmring.Queue(name=name)
    if kind == "mutex":
        return shmring.Mutex.create(name)
    return shmring.Channel.create(name, 4096)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("token", sorted(hostile_tokens()))
@pytest.mark.parametrize("kind", sorted(OFFSETS))
def test_an_unverifiable_owner_word_is_taken_over(
    new_name: Callable[[], str], kids: Kids, kind: str, token: str
) -> None:
    """Regression (issue 14): a lock or channel end whose owner word names a
    live pid with start time 0 (or a start time not that process's, a pid 0,
    a pid above pid_max) is taken over as a dead holder's, within a bounded
    time; Topic.subscribe() takes a timeout."""
    name = new_name()
    obj = _make(kind, name)
    try:
        poke(name, OFFSETS[kind], hostile_tokens()[token])
        kid = kids.start(FORK, _take, kind, name)
        assert kid.result(timeout=10) == "taken"
    finally:
        obj.close()  # type: ignore[attr-defined]


def _subscribe_in_time(name: str) -> str:
    topic = shmring.Topic.open(name)
    try:
        topic.subscribe(timeout=0.2)
    except shmring.Timeout as e:
        return type(e).__name__ if isinstance(e, TimeoutError) else "not a TimeoutError"
    finally:
        topic.close()
    return "subscribed"


@pytest.mark.timeout(30)
def test_subscribe_times_out_while_a_live_publisher_holds_the_lock(
    new_name: Callable[[], str], kids: Kids
) -> None:
    """Regression (issue 14): subscribe(timeout) raises Timeout (a
    TimeoutError) while a live process holds the topic lock (here, a
    reserve() loan kept open)."""
    name = new_name()
    with shmring.Topic.create(name, 4096, "block") as topic, topic.publisher() as pub:
        with pub.reserve(8):
            kid = kids.start(FORK, _subscribe_in_time, name)
            assert kid.result(timeout=10) == "Timeout"
