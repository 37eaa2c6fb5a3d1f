"""Waiting on a channel, with every wait strategy: timeouts kept (a spin
window never outlasts one), the GIL released, Ctrl-C honoured within 100 ms,
and a blocked "adaptive" or "block" waiter costing almost no CPU.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import shmring
from shmring import Channel

from _channel_helpers import STRATEGIES, Agent, every_strategy_fork_and_spawn, make_msg
from conftest import CONTEXTS, FORK, Kids


def test_timeout_waits_about_as_long_as_asked(ch: shmring.Channel) -> None:
    for timeout in (0.05, 0.2):
        t0 = time.monotonic()
        with pytest.raises(shmring.Timeout):
            ch.recv(timeout=timeout)
        assert timeout <= time.monotonic() - t0 < timeout + 1


def test_blocking_recv_releases_the_gil(ch: shmring.Channel) -> None:
    ticks = 0
    done = threading.Event()

    def counter() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0.001)

    t = threading.Thread(target=counter)
    t.start()
    try:
        with pytest.raises(shmring.Timeout):
            ch.recv(timeout=0.3)
    finally:
        done.set()
        t.join()
    assert ticks > 50  # the other thread ran while recv waited


@pytest.mark.timeout(30)
@pytest.mark.parametrize("wait", STRATEGIES)
def test_timeouts_on_empty_and_full(wait: str, channel: Callable[..., Channel], kids: Kids) -> None:
    ch = channel(256, wait)
    producer = Agent(kids, FORK, ch.name, wait)
    producer("send", b"x", timeout=5)  # a live producer holds its end
    assert ch.recv(timeout=5) == b"x"
    assert ch.try_recv() is None
    for call in (lambda: ch.recv(timeout=0.1), lambda: ch.recv_many(5, timeout=0.1),
                 lambda: ch.recv_into(bytearray(256), timeout=0.1), lambda: ch.peek(timeout=0.1)):
        t0 = time.monotonic()
        with pytest.raises(shmring.Timeout) as ei:
            call()
        elapsed = time.monotonic() - t0
        assert isinstance(ei.value, TimeoutError)
        assert 0.09 <= elapsed < 1.0, elapsed
    t0 = time.monotonic()
    with pytest.raises(shmring.Timeout):
        ch.recv(timeout=0)
    assert time.monotonic() - t0 < 0.5
    # Full ring on the producer's side.
    n = producer("fill", 24)
    assert n >= 256 // 32 - 1
    y = b"y" * 24  # a 32-byte record: more than is left
    for args in (("send", y), ("send_many", [y])):
        outcome, err, elapsed = producer("timed", *args, timeout=0.1)
        assert outcome == "raised" and isinstance(err, shmring.Timeout), (args, err)
        assert 0.09 <= elapsed < 1.0, (args, elapsed)
    outcome, err, _ = producer("timed", "send_many", [y, y], timeout=0.1)
    assert getattr(err, "sent", None) == 0, "a timed-out send_many says how much of the batch went out"
    for i in range(n):
        assert ch.recv(timeout=5) == make_msg(i, 24)
    assert ch.try_recv() is None  # nothing of the timed-out sends got in


@pytest.mark.timeout(30)
@pytest.mark.parametrize("side", ["reader", "writer"])
def test_adaptive_spin_window_respects_timeout(side: str, channel: Callable[..., Channel], kids: Kids) -> None:
    spin_ns = 100_000_000  # the largest window the API accepts
    ch = channel(256, "adaptive")
    peer = Agent(kids, FORK, ch.name)
    mine = Channel.open(ch.name, "adaptive", spin_ns=spin_ns)
    try:
        if side == "reader":
            peer("send", b"claim", timeout=5)  # a live producer holds its end
            assert mine.recv(timeout=5) == b"claim"
            call: Callable[[], Any] = lambda: mine.recv(timeout=0.005)  # noqa: E731
        else:
            assert peer("try_recv") is None  # a live consumer holds its end
            while mine.try_send(b"s" * 24):
                pass
            call = lambda: mine.send(b"s" * 24, timeout=0.005)  # noqa: E731
        for _ in range(3):
            t0 = time.monotonic()
            with pytest.raises(shmring.Timeout):
                call()
            elapsed = time.monotonic() - t0
            assert elapsed < 0.05, f"timeout=0.005 returned after {elapsed * 1000:.0f} ms"
    finally:
        mine.close()


@pytest.mark.timeout(30)
@every_strategy_fork_and_spawn
def test_sigint_interrupts_blocked_recv(wait: str, ctx_name: str, channel: Callable[..., Channel],
                                        kids: Kids) -> None:
    ch = channel(4096, wait)
    ch.send(b"first")
    consumer = Agent(kids, CONTEXTS[ctx_name], ch.name, wait)
    assert consumer("recv", timeout=5) == b"first"
    consumer.start("interruptible", "recv")  # no timeout
    consumer.wait_ready()
    time.sleep(0.25)  # well past every spin phase: deep in the wait
    t_signal = time.monotonic()  # CLOCK_MONOTONIC is the same clock in the child
    os.kill(consumer.pid, signal.SIGINT)
    outcome, t_raised = consumer.reply()
    assert outcome == "interrupted"
    latency = t_raised - t_signal
    assert latency < 0.1, f"KeyboardInterrupt came {latency * 1000:.0f} ms after SIGINT"
    # Still usable: a message sent afterwards arrives.
    ch.send(b"after")
    assert consumer("recv", timeout=5) == b"after"
    assert consumer("try_recv") is None


@pytest.mark.timeout(30)
@pytest.mark.parametrize("wait", STRATEGIES)
def test_sigint_interrupts_blocked_send(wait: str, channel: Callable[..., Channel], kids: Kids) -> None:
    capacity = 256
    ch = channel(capacity, wait)
    producer = Agent(kids, FORK, ch.name, wait)
    assert ch.try_recv() is None  # this process is the (live, idle) consumer
    n = producer("fill", 24)
    assert n == capacity // 32
    producer.start("interruptible", "send", b"interrupted")
    producer.wait_ready()
    time.sleep(0.25)
    t_signal = time.monotonic()
    os.kill(producer.pid, signal.SIGINT)
    outcome, t_raised = producer.reply()
    assert outcome == "interrupted"
    latency = t_raised - t_signal
    assert latency < 0.1, f"KeyboardInterrupt came {latency * 1000:.0f} ms after SIGINT"
    for i in range(n):
        assert ch.recv(timeout=5) == make_msg(i, 24)
    assert ch.try_recv() is None  # the interrupted message did not get in
    producer("send", b"after", timeout=5)
    assert ch.recv(timeout=5) == b"after"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("side", ["reader", "writer"])
@pytest.mark.parametrize("wait", ["adaptive", "block"])
def test_blocked_wait_uses_almost_no_cpu(wait: str, side: str, channel: Callable[..., Channel], kids: Kids) -> None:
    """Regression guard (the benchmark measures the real figure): waiting
    ~1 s with a live peer costs under 5% of a core."""
    ch = channel(4096, wait)
    agent = Agent(kids, FORK, ch.name, wait)
    if side == "reader":
        ch.send(b"claim")
        assert agent("recv", timeout=5) == b"claim"
        assert agent("try_recv") is None
        outcome, cpu, wall = agent("cpu_of", "recv", timeout=1.0)
    else:
        assert ch.try_recv() is None
        assert agent("fill", 56) == 4096 // 64
        outcome, cpu, wall = agent("cpu_of", "send", b"x", timeout=1.0)
    assert outcome == "timeout"
    assert 0.95 <= wall < 2.0, wall
    assert cpu < 0.05 * wall, f"{wait} {side} used {cpu / wall:.1%} of a core while blocked"
