"""shmring.aio and the lives of event loops and processes: a waiter thread
per loop, gone with its loop; a loop closed or dropped is not kept alive by
shmring; a forked child's loop gets threads of its own; a process that
exits, or is killed, while a coroutine waits takes nothing."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import time
import weakref
from collections.abc import Callable
from typing import Any

import pytest

import shmring
import shmring.aio as aio

from _aio_helpers import get_numbers, number, queue_sleepers, send_frames, waiter_threads
from conftest import FORK, Kids


async def _sleep_once(ch: shmring.Channel) -> None:
    """One wait that sleeps (so that the loop gets a waiter thread)."""
    with pytest.raises(shmring.Timeout):
        await aio.Channel(ch).recv(timeout=0.2)


@pytest.mark.parametrize("factory", ["asyncio", "uvloop"])
def test_a_closed_loop_is_let_go_with_its_thread(channel: Callable[..., shmring.Channel], factory: str) -> None:
    import uvloop

    loop = asyncio.new_event_loop() if factory == "asyncio" else uvloop.new_event_loop()
    ch = channel(capacity=4096)
    loop.run_until_complete(_sleep_once(ch))
    assert waiter_threads() >= 1
    ref = weakref.ref(loop)
    loop.close()
    del loop
    deadline = time.monotonic() + 5
    while (ref() is not None or waiter_threads()) and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.05)
    assert ref() is None, "shmring keeps a closed loop alive"
    assert waiter_threads() == 0


def _child_loop(ch: shmring.Channel) -> list[int]:
    async def drain() -> list[int]:
        return [number(m) async for m in aio.Channel(ch)]

    return asyncio.run(drain())


def test_a_forked_child_waits_with_threads_of_its_own(channel: Callable[..., shmring.Channel], kids: Kids) -> None:
    """The parent has waited on a loop (its waiter thread is not in the
    child); the child's own loop gets its own thread."""
    warm = channel(capacity=4096)
    asyncio.run(_sleep_once(warm))
    ch = channel(capacity=4096)
    consumer = kids.start(FORK, _child_loop, ch)
    producer = kids.start(FORK, send_frames, ch, 2_000, 100)
    producer.result()
    assert consumer.result() == list(range(2_000))  # every frame checked whole in the child


def _leave_a_getter_waiting(q: shmring.Queue[int], ready: Any) -> None:
    """asyncio.run ends with a get still waiting: the loop cancels it, and
    the process exits normally (its handle dropped, never closed)."""
    async def main() -> None:
        asyncio.get_running_loop().create_task(aio.Queue(q).get())
        await asyncio.sleep(0.2)
        ready.set()

    asyncio.run(main())


def _wait_forever_on(q: shmring.Queue[int], ready: Any) -> None:
    async def main() -> None:
        task = asyncio.get_running_loop().create_task(aio.Queue(q).get())
        await asyncio.sleep(0.2)
        ready.set()
        await task

    asyncio.run(main())


def test_a_process_exiting_with_a_waiting_get_withdraws_it(kids: Kids) -> None:
    q: shmring.Queue[int] = shmring.Queue()
    ready = FORK.Event()
    proc = kids.process(FORK, _leave_a_getter_waiting, q, ready)
    assert ready.wait(20)
    proc.join(20)
    assert proc.exitcode == 0
    assert queue_sleepers(q) == (0, 0)  # the cancelled get withdrew its announcement
    consumer = kids.start(FORK, get_numbers, q, 100, 0)
    for i in range(100):
        q.put(i)
    assert consumer.result() == list(range(100))
    q.close()


def test_a_process_killed_while_its_get_waits_takes_nothing(kids: Kids) -> None:
    """SIGKILL while a coroutine is announced: it took nothing, and the
    others get every item (its stale announcement costs spare wake calls)."""
    q: shmring.Queue[int] = shmring.Queue()
    ready = FORK.Event()
    proc = kids.process(FORK, _wait_forever_on, q, ready)
    assert ready.wait(20)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(20)
    consumer = kids.start(FORK, get_numbers, q, 100, 0)
    for i in range(100):
        q.put(i)
    assert consumer.result() == list(range(100))
    assert q.qsize() == 0
    q.close()


@pytest.mark.parametrize("use_waitv", [True, False])
def test_interrupt_wakes_a_waiter_thread_at_once(use_waitv: bool) -> None:
    """The waiter thread's sleep on its control word alone ends at
    interrupt(), with futex_waitv and without (not at the end of a slice)."""
    import threading

    ws = shmring._core.WaitSet(use_waitv=use_waitv)
    woke: list[float] = []

    def sleeper() -> None:
        ws.wait([], ws.control, 10)
        woke.append(time.monotonic())

    th = threading.Thread(target=sleeper)
    th.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    ws.interrupt()
    th.join(5)
    assert woke and woke[0] - t0 < 0.03  # a 50 ms slice would be too late
