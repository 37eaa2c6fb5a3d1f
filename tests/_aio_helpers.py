"""Helpers of the shmring.aio tests: the child processes on the synchronous
side, and looks at what the async side leaves behind."""

from __future__ import annotations

import asyncio
import struct
import threading
import time
import zlib
from typing import Any

import shmring
from shmring import _core

WAITER_THREAD = "shmring-aio-waiter"


def frame(i: int) -> bytes:
    """Message ``i``: its number, a body of a size that varies, a CRC."""
    body = i.to_bytes(8, "little") + bytes([i % 251]) * (i % 97)
    return body + zlib.crc32(body).to_bytes(4, "little")


def number(data: bytes) -> int:
    """The number of a ``frame``, after checking it whole."""
    assert zlib.crc32(data[:-4]) == int.from_bytes(data[-4:], "little"), "torn or corrupted message"
    i = int.from_bytes(data[:8], "little")
    assert data == frame(i)
    return i


# -- the synchronous side, in child processes -----------------------------------------


def send_frames(ch: shmring.Channel, n: int, pause_every: int) -> None:
    """Send frames 0..n-1, pausing now and then so that the reader waits; then close."""
    for i in range(n):
        ch.send(frame(i), timeout=20)
        if pause_every and i % pause_every == 0:
            time.sleep(0.002)
    ch.close()


def recv_frames(ch: shmring.Channel, pause_every: int) -> list[int]:
    """Receive until the end of the stream, slowly now and then; the numbers."""
    got = []
    while True:
        try:
            data = ch.recv(timeout=20)
        except shmring.Closed:
            return got
        got.append(number(data))
        if pause_every and len(got) % pause_every == 0:
            time.sleep(0.002)


def echo(ch_in: shmring.Channel, ch_out: shmring.Channel) -> int:
    """Send back every message until the stream ends; how many."""
    n = 0
    while True:
        try:
            data = ch_in.recv(timeout=20)
        except shmring.Closed:
            ch_out.close()
            return n
        ch_out.send(data, timeout=20)
        n += 1


def put_numbers(q: shmring.Queue[int], start: int, stop: int, pause_every: int) -> None:
    for i in range(start, stop):
        q.put(i, timeout=20)
        if pause_every and i % pause_every == 0:
            time.sleep(0.001)


def get_numbers(q: shmring.Queue[int], n: int, pause_every: int) -> list[int]:
    got = []
    for k in range(n):
        got.append(q.get(timeout=20))
        if pause_every and k % pause_every == 0:
            time.sleep(0.002)
    return got


def publish(pub: shmring.Publisher, n: int, pause_every: int) -> None:
    for i in range(n):
        pub.send_obj(("msg", i), timeout=20)
        if pause_every and i % pause_every == 0:
            time.sleep(0.002)


def subscribe_slowly(t: shmring.Topic, n: int, ready: Any) -> list[int]:
    sub = t.subscribe()
    ready.set()
    got = []
    for _ in range(n):
        got.append(sub.recv(timeout=20)[1])
        if len(got) % 50 == 0:
            time.sleep(0.005)
    return got


def release_later(sem: shmring.Semaphore, delay: float) -> None:
    time.sleep(delay)
    sem.release()


def set_and_clear_later(ev: shmring.Event, delay: float) -> None:
    time.sleep(delay)
    ev.set()
    ev.clear()


def sleep_forever() -> None:
    time.sleep(3600)


# -- what the async side leaves -----------------------------------------------------


def queue_sleepers(q: shmring.Queue[Any]) -> tuple[int, int]:
    """(items_waiters, room_waiters) of the queue: the announced sleepers."""
    with memoryview(q._mapping) as mv:  # type: ignore[arg-type]
        _, items_waiters, _, room_waiters = struct.unpack_from("<4I", mv, _core.HEADER_SIZE + 256)
    return items_waiters, room_waiters


def waiter_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == WAITER_THREAD)


async def no_waiter_thread_within(seconds: float) -> bool:
    """Whether every waiter thread has left within ``seconds`` (they leave
    after a second with nothing to wait for)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not waiter_threads():
            return True
        await asyncio.sleep(0.05)
    return False
