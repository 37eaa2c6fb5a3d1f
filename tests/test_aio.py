"""shmring.aio: async views over Channel, Queue, Topic, Semaphore and Event,
talking to synchronous processes on the other side, every message checked,
on asyncio's loop and on uvloop (the loop factories of conftest.py).
"""

from __future__ import annotations

import asyncio
import queue
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

import shmring
import shmring.aio as aio

from _aio_helpers import (
    echo,
    frame,
    get_numbers,
    no_waiter_thread_within,
    number,
    publish,
    put_numbers,
    queue_sleepers,
    recv_frames,
    release_later,
    send_frames,
    set_and_clear_later,
    subscribe_slowly,
)
from conftest import CONTEXTS, FORK, Kids

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("start", ["fork", "spawn"])
async def test_channel_sync_producer_async_consumer(channel: Callable[..., shmring.Channel], kids: Kids,
                                                    start: str) -> None:
    ch = channel(capacity=1 << 14)
    n = 20_000
    kid = kids.start(CONTEXTS[start], send_frames, ch, n, 500)
    got = [number(m) async for m in aio.Channel(ch)]
    kid.result()
    assert got == list(range(n))


async def test_channel_async_producer_sync_consumer(channel: Callable[..., shmring.Channel], kids: Kids) -> None:
    ch = channel(capacity=4096)  # a small ring: the sends wait for room
    n = 10_000
    kid = kids.start(FORK, recv_frames, ch, 300)
    view = aio.Channel(ch)
    for i in range(n):
        await view.send(frame(i))
    view.close()
    assert kid.result() == list(range(n))


async def test_channel_round_trips_with_a_sync_echo(channel: Callable[..., shmring.Channel], kids: Kids) -> None:
    ping, pong = channel(capacity=4096), channel(capacity=4096)
    kid = kids.start(FORK, echo, ping, pong)
    a_ping, a_pong = aio.Channel(ping), aio.Channel(pong)
    for i in range(2_000):
        await a_ping.send(frame(i))
        assert number(await a_pong.recv()) == i
    a_ping.close()
    with pytest.raises(shmring.Closed):
        await a_pong.recv()
    assert kid.result() == 2_000


async def test_channel_recv_many_gets_what_is_there(channel: Callable[..., shmring.Channel], kids: Kids) -> None:
    ch = channel(capacity=1 << 16)
    kid = kids.start(FORK, send_frames, ch, 5_000, 100)
    view, got = aio.Channel(ch), []
    while True:
        try:
            batch = await view.recv_many(64)
        except shmring.Closed:
            break
        assert 1 <= len(batch) <= 64
        got += [number(m) for m in batch]
    kid.result()
    assert got == list(range(5_000))


async def test_thousand_getters_on_one_loop_each_item_once(kids: Kids) -> None:
    q: shmring.Queue[int] = shmring.Queue()
    view: aio.Queue[int] = aio.Queue(q)
    n = 1_000
    getters = [asyncio.create_task(view.get()) for _ in range(n)]
    await asyncio.sleep(0.2)  # all of them asleep on the one queue
    assert queue_sleepers(q) == (1, 0)  # one announcement for the whole loop
    kid = kids.start(FORK, put_numbers, q, 0, n, 50)
    got = await asyncio.wait_for(asyncio.gather(*getters), 30)
    kid.result()
    assert sorted(got) == list(range(n))
    assert queue_sleepers(q) == (0, 0)
    q.close()


async def test_queue_async_put_waits_for_room(kids: Kids) -> None:
    q: shmring.Queue[int] = shmring.Queue(maxsize=4)
    view: aio.Queue[int] = aio.Queue(q)
    n = 3_000
    kid = kids.start(FORK, get_numbers, q, n, 100)
    for i in range(n):
        await view.put(i)
    assert kid.result() == list(range(n))
    assert queue_sleepers(q) == (0, 0)
    q.close()


async def test_queue_get_many_and_put_many(kids: Kids) -> None:
    q: shmring.Queue[int] = shmring.Queue(maxsize=64)
    view: aio.Queue[int] = aio.Queue(q)
    kid = kids.start(FORK, put_numbers, q, 0, 5_000, 200)
    got: list[int] = []
    while len(got) < 5_000:
        batch = await view.get_many(100)
        assert 1 <= len(batch) <= 100
        got += batch
    kid.result()
    assert got == list(range(5_000))
    await view.put_many(range(64))
    with pytest.raises(queue.Full):  # the whole batch or nothing
        await view.put_many([1], timeout=0.05)
    assert await view.get_many(1000) == list(range(64))
    q.close()


async def test_topic_sync_publisher_async_subscriber(topic: Callable[..., shmring.Topic], kids: Kids) -> None:
    t = topic(capacity=1 << 14, policy="block")
    sub = aio.Subscription(t.subscribe())
    pub = t.publisher()
    kid = kids.start(FORK, publish, pub, 5_000, 300)
    got = [(await sub.recv())[1] for _ in range(2_500)]
    while len(got) < 5_000:
        batch = await sub.recv_many(100)
        assert 1 <= len(batch) <= 100
        got += [m[1] for m in batch]
    kid.result()
    assert got == list(range(5_000))
    sub.close()
    pub.close()


async def test_topic_async_publisher_waits_for_a_slow_subscriber(topic: Callable[..., shmring.Topic],
                                                                 kids: Kids) -> None:
    t = topic(capacity=4096, policy="block")
    ready = FORK.Event()
    kid = kids.start(FORK, subscribe_slowly, t, 2_000, ready)
    assert ready.wait(20)
    pub = aio.Publisher(t.publisher())
    for i in range(2_000):
        await pub.send_obj(("msg", i))
    assert kid.result() == list(range(2_000))
    pub.close()


async def test_semaphore_acquire_woken_by_another_process(kids: Kids) -> None:
    sem = shmring.Semaphore.create(None, 0)
    try:
        view = aio.Semaphore(sem)
        kid = kids.start(FORK, release_later, sem, 0.2)
        t0 = time.monotonic()
        assert await view.acquire(timeout=10) is True
        assert 0.1 < time.monotonic() - t0 < 5
        kid.result()
        assert await view.acquire(timeout=0.05) is False
        view.release()
        async with view:
            assert sem.value == 0
        assert sem.value == 1  # released on leaving
        assert await view.acquire(timeout=0) is True
    finally:
        sem.unlink()
        sem.close()


async def test_event_set_then_cleared_at_once_still_wakes(kids: Kids) -> None:
    ev = shmring.Event.create()
    try:
        view = aio.Event(ev)
        kid = kids.start(FORK, set_and_clear_later, ev, 0.2)
        assert await view.wait(timeout=10) is True
        kid.result()
        assert not view.is_set()  # cleared by then: the wait saw the set all the same
        assert await view.wait(timeout=0.05) is False
        view.set()
        assert await view.wait() is True
    finally:
        ev.unlink()
        ev.close()


async def test_timeouts_give_the_sync_calls_outcomes(channel: Callable[..., shmring.Channel],
                                                     topic: Callable[..., shmring.Topic]) -> None:
    ch = channel(capacity=4096)
    view = aio.Channel(ch)
    t0 = time.monotonic()
    with pytest.raises(shmring.Timeout):
        await view.recv(timeout=0.1)
    assert 0.09 < time.monotonic() - t0 < 2
    with pytest.raises(shmring.Timeout):
        await view.recv(timeout=0)
    while ch.try_send(b"x" * 500):
        pass
    with pytest.raises(shmring.Timeout):
        await view.send(b"y" * 500, timeout=0.05)
    q: shmring.Queue[int] = shmring.Queue(maxsize=1)
    aq: aio.Queue[int] = aio.Queue(q)
    with pytest.raises(queue.Empty):
        await aq.get(timeout=0.05)
    await aq.put(1)
    with pytest.raises(queue.Full):
        await aq.put(2, timeout=0.05)
    sub = aio.Subscription(topic(capacity=4096).subscribe())
    with pytest.raises(shmring.Timeout):
        await sub.recv(timeout=0.05)
    with pytest.raises(TimeoutError):  # asyncio's own timeouts work too
        await asyncio.wait_for(aq.put(3), 0.05)
    if sys.version_info >= (3, 11):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await sub.recv()
    assert await aq.get() == 1
    assert queue_sleepers(q) == (0, 0)  # nothing stays announced after a timeout
    with pytest.raises(ValueError, match="timeout"):
        await aq.get(timeout=-1)
    q.close()
    sub.close()


async def test_waits_end_when_the_peer_dies(channel: Callable[..., shmring.Channel], kids: Kids) -> None:
    ch = channel(capacity=4096)
    kid = kids.start(FORK, send_frames, ch, 1, 0)
    view = aio.Channel(ch)
    assert number(await view.recv()) == 0
    with pytest.raises(shmring.Closed):
        await view.recv()
    kid.result()


async def test_a_close_elsewhere_ends_the_wait(channel: Callable[..., shmring.Channel]) -> None:
    ch = channel(capacity=4096)
    view = aio.Channel(ch)
    task = asyncio.create_task(view.recv())
    await asyncio.sleep(0.1)
    ch.close()  # the sync handle, under the waiting coroutine
    with pytest.raises((shmring.Closed, ValueError)):
        await asyncio.wait_for(task, 5)


async def test_idle_wait_costs_no_cpu_and_the_thread_leaves(channel: Callable[..., shmring.Channel]) -> None:
    ch = channel(capacity=4096)
    view = aio.Channel(ch)
    cpu0, t0 = time.process_time(), time.monotonic()
    with pytest.raises(shmring.Timeout):
        await view.recv(timeout=1.0)
    assert time.monotonic() - t0 >= 0.99
    assert time.process_time() - cpu0 < 0.1  # every thread of the process: no spinning anywhere
    assert await no_waiter_thread_within(5)


async def test_wrap_picks_the_view(channel: Callable[..., shmring.Channel]) -> None:
    ch = channel(capacity=4096)
    assert isinstance(aio.wrap(ch), aio.Channel)
    q: shmring.Queue[Any] = shmring.Queue()
    assert isinstance(aio.wrap(q), aio.Queue)
    q.close()
    with pytest.raises(TypeError, match="no async view"):
        aio.wrap(object())
