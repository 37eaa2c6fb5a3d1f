"""shmring.aio under cancellation and faults: cancelled gets take nothing,
cancelled sends send whole messages or nothing, a turn given to a cancelled
coroutine goes on to the next, killed peers and the kernel without
futex_waitv (one waiter thread per object).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import Callable, Iterator
import pytest

import shmring
import shmring.aio as aio

from _aio_helpers import frame, get_numbers, number, put_numbers, queue_sleepers, recv_frames, send_frames, sleep_forever
from conftest import FORK, Kids

pytestmark = pytest.mark.asyncio


@pytest.fixture(params=["waitv", "thread-per-object"])
def waiter_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Both ways of sleeping: futex_waitv, and one thread per object waited on."""
    if request.param == "thread-per-object":
        monkeypatch.setattr(aio, "_USE_WAITV", False)
    yield request.param


async def test_cancelled_getters_take_nothing(kids: Kids, waiter_kind: str) -> None:
    """A storm of getters cancelled at random while a producer process puts:
    every item is received exactly once, by a getter that was not cancelled."""
    q: shmring.Queue[int] = shmring.Queue()
    view: aio.Queue[int] = aio.Queue(q)
    n = 3_000
    got: list[int] = []
    rng = random.Random(20261206)

    async def getter() -> None:
        while True:
            got.append(await view.get())

    tasks = [asyncio.create_task(getter()) for _ in range(20)]
    kid = kids.start(FORK, put_numbers, q, 0, n, 20)
    cancelled = 0
    for _ in range(20_000):
        if len(got) >= n:
            break
        await asyncio.sleep(rng.choice((0, 0, 0.0005)))
        victim = rng.randrange(len(tasks))
        tasks[victim].cancel()
        cancelled += 1
        tasks[victim] = asyncio.create_task(getter())
    kid.result()
    while len(got) < n:  # the storm is over: the rest arrive
        await asyncio.sleep(0.01)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert sorted(got) == list(range(n))
    assert cancelled > 100
    assert queue_sleepers(q) == (0, 0)
    q.close()


async def test_cancelled_recv_loses_no_message(channel: Callable[..., shmring.Channel], kids: Kids,
                                               waiter_kind: str) -> None:
    ch = channel(capacity=4096)
    view = aio.Channel(ch)
    n = 5_000
    kid = kids.start(FORK, send_frames, ch, n, 50)
    rng = random.Random(7)
    got, cancelled_asleep, timeouts = [], 0, 0
    while True:
        task = asyncio.create_task(view.recv())
        await asyncio.sleep(0)  # it runs: it takes a message, or it sleeps
        if not task.done() and rng.random() < 0.5:
            task.cancel()
            cancelled_asleep += 1
        try:
            got.append(number(await asyncio.wait_for(task, rng.choice((0.0001, 0.001, 0.01)))))
        except (asyncio.CancelledError, TimeoutError):
            timeouts += 1
        except shmring.Closed:
            break
    kid.result()
    assert got == list(range(n))
    assert cancelled_asleep > 10  # the producer's pauses leave it asleep often


async def test_cancelled_send_sends_all_or_nothing(channel: Callable[..., shmring.Channel], kids: Kids,
                                                   waiter_kind: str) -> None:
    ch = channel(capacity=4096)
    view = aio.Channel(ch)
    kid = kids.start(FORK, recv_frames, ch, 20)
    rng = random.Random(11)
    sent: list[int] = []
    i = 0
    while len(sent) < 3_000:
        try:
            await asyncio.wait_for(view.send(frame(i)), rng.choice((0.0001, 0.001, 0.01)))
            sent.append(i)
        except TimeoutError:
            pass  # not sent: the reader must never see a part of it
        i += 1
    view.close()
    assert kid.result() == sent  # whole frames, in order, exactly the ones that were sent
    assert len(sent) < i  # some sends were cancelled


async def test_a_turn_given_to_a_cancelled_getter_goes_to_the_next(waiter_kind: str) -> None:
    q: shmring.Queue[int] = shmring.Queue()
    view: aio.Queue[int] = aio.Queue(q)
    first = asyncio.create_task(view.get())
    second = asyncio.create_task(view.get())
    await asyncio.sleep(0.05)
    key = next(iter(aio._waiters().keys.values()))
    while key.active or len(key.sleepers) != 2:  # (a slice's look may be under way)
        await asyncio.sleep(0.001)
    q.put(1)
    while not key.active:  # the waiter thread saw the put: `first` has the turn, and has not run yet
        await asyncio.sleep(0)
    first.cancel()
    assert await asyncio.wait_for(second, 5) == 1
    assert first.cancelled()
    assert queue_sleepers(q) == (0, 0)
    q.close()


async def test_a_wake_taken_and_unused_goes_to_another_process(kids: Kids, waiter_kind: str) -> None:
    """This loop's waiter and a sync consumer process both sleep on the
    queue; items put one by one all arrive although every async get is
    cancelled as soon as it is woken (a wake it took is passed on)."""
    q: shmring.Queue[int] = shmring.Queue()
    view: aio.Queue[int] = aio.Queue(q)
    kid = kids.start(FORK, get_numbers, q, 50, 0)
    stop = False

    async def flaky_getter() -> None:
        while not stop:
            task = asyncio.create_task(view.get())
            await asyncio.sleep(0)
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if task in done:
                q.put(task.result())  # give it back: the consumer process is to have every item
            else:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    flaky = asyncio.create_task(flaky_getter())
    for i in range(50):
        q.put(i)
        await asyncio.sleep(0.005)
    got = await asyncio.to_thread(kid.result, 30)
    stop = True
    await asyncio.wait_for(flaky, 5)
    assert sorted(got) == list(range(50))
    q.close()


async def test_a_killed_producer_ends_the_wait(channel: Callable[..., shmring.Channel], kids: Kids,
                                               waiter_kind: str) -> None:
    ch = channel(capacity=4096)
    proc = kids.process(FORK, _claim_and_sleep, ch)
    view = aio.Channel(ch)
    assert await asyncio.wait_for(view.recv(), 20) == b"x"
    task = asyncio.create_task(view.recv())
    await asyncio.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    with pytest.raises(shmring.PeerGone):
        await asyncio.wait_for(task, 5)


def _claim_and_sleep(ch: shmring.Channel) -> None:
    ch.try_send(b"x")  # claims the producer end
    sleep_forever()


async def test_many_objects_at_once(channel: Callable[..., shmring.Channel], kids: Kids, waiter_kind: str) -> None:
    """Twenty channels awaited at once by one loop, each fed by its own process."""
    chans = [channel(capacity=4096) for _ in range(20)]
    for ch in chans:
        kids.start(FORK, send_frames, ch, 300, 30)

    async def drain(ch: shmring.Channel) -> list[int]:
        return [number(m) async for m in aio.Channel(ch)]

    results = await asyncio.wait_for(asyncio.gather(*(drain(ch) for ch in chans)), 60)
    assert all(r == list(range(300)) for r in results)
    threads = len(aio._waiters().sleepers)  # this loop's waiter threads (idle ones leave after a second)
    if waiter_kind == "waitv":
        assert threads == 1
    else:
        assert 1 < threads <= 20

