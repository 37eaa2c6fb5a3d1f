"""The end of a channel's stream, and handles that go away.

Only close() (or the death of the process holding an end) ends a stream:
the writer's close() lets the reader drain what was sent and then get
Closed; the reader's makes sends raise Closed; either wakes a peer blocked
on it.  A handle dropped without close() (garbage collection, a Pool task's
argument) gives its ends back and ends nothing (issue 9).
"""

from __future__ import annotations

import gc
import pickle
import time
from collections.abc import Callable
from typing import Any

import pytest

import shmring
from shmring import Channel

from _channel_helpers import (
    OP_TIMEOUT, STRATEGIES, Agent, _producer, check_msg, every_strategy_fork_and_spawn, recv_seq, size_mix, size_of,
)
from conftest import CONTEXTS, FORK, SPAWN, STEP, Kids, record_size


def test_writer_close_ends_the_stream(name: str) -> None:
    with shmring.Channel.create(name, 1024) as reader:
        writer = shmring.Channel.open(name)
        writer.send_many([b"a", b"b", b"c"])
        writer.close()
        assert writer.closed
        assert list(reader) == [b"a", b"b", b"c"]
        with pytest.raises(shmring.Closed) as info:
            reader.recv(timeout=5)
        assert isinstance(info.value, EOFError)
        with pytest.raises(shmring.Closed):
            reader.try_recv()
        assert reader.stats()["writer_closed"]


def test_reader_close_stops_the_writer(name: str) -> None:
    with shmring.Channel.create(name, 1024) as writer:
        reader = shmring.Channel.open(name)
        writer.send(b"x")
        assert reader.recv() == b"x"
        reader.close()
        with pytest.raises(shmring.Closed, match="reader closed"):
            writer.send(b"y")
        with pytest.raises(shmring.Closed):
            writer.try_send(b"y")


def test_closed_handle(ch: shmring.Channel) -> None:
    ch.close()
    ch.close()  # idempotent
    for call in (lambda: ch.send(b"x"), ch.recv, ch.try_recv, lambda: ch.reserve(1), ch.peek):
        with pytest.raises(shmring.Closed, match="handle is closed"):
            call()
    with pytest.raises(ValueError, match="closed"):
        pickle.dumps(ch)


def test_unused_handle_close_does_not_end_the_stream(name: str) -> None:
    with shmring.Channel.create(name, 1024) as c:
        bystander = shmring.Channel.open(name)
        bystander.close()  # never sent nor received: holds no end
        c.send(b"still open")
        assert c.recv(timeout=1) == b"still open"


def test_dropped_writer_handle_gives_its_end_back_without_ending_the_stream(name: str) -> None:
    """Garbage collection never ends a stream (issue 9): what the dropped
    writer sent arrives, the stream stays open, and another handle can take
    the producer end."""
    with shmring.Channel.create(name, 1024) as reader:
        writer = shmring.Channel.open(name)
        writer.send(b"last")
        del writer
        gc.collect()
        assert reader.recv() == b"last"
        with pytest.raises(shmring.Timeout):
            reader.recv(timeout=0.1)
        assert not reader.stats()["writer_closed"]
        with shmring.Channel.open(name) as successor:
            successor.send(b"more")
            assert reader.recv(timeout=1) == b"more"


def test_dropped_reader_handle_does_not_stop_the_writer(name: str) -> None:
    with shmring.Channel.create(name, 1024) as writer:
        reader = shmring.Channel.open(name)
        writer.send(b"first")
        assert reader.recv(timeout=1) == b"first"
        del reader
        gc.collect()
        writer.send(b"second")  # no Closed: the reader end was only given back
        assert not writer.stats()["reader_closed"]
        with shmring.Channel.open(name) as successor:
            assert successor.recv(timeout=1) == b"second"


def test_segment_stays_mapped_while_the_channel_uses_it(ch: shmring.Channel) -> None:
    with pytest.raises(shmring.BufferInUseError):
        ch.segment.close()
    ch.send(b"fine")
    assert ch.recv() == b"fine"


def _pool_task(arg: tuple[shmring.Channel, int]) -> int:
    ch, i = arg
    # The reproduction as written: no coordination between the
    # workers.  Before issue 9: Closed (the first dropped handle had ended
    # the stream).  Two workers sending at once share the producer end in
    # turn: the second send waits until the first worker's dropped handle
    # gives the end back.
    ch.send(b"message %d" % i)
    return i


@pytest.mark.parametrize("ctx", [FORK, SPAWN], ids=["fork", "spawn"])
def test_pool_workers_dropping_their_handles_deliver_every_message(ctx: Any, name: str) -> None:
    """Each worker re-attaches the pickled channel, sends, and drops its
    handle after the task; the next task's handle takes the producer end."""
    with shmring.Channel.create(name, 4096) as ch:
        with ctx.Pool(2) as pool:
            assert sorted(pool.map(_pool_task, [(ch, i) for i in range(4)])) == [0, 1, 2, 3]
        got = sorted(ch.recv(timeout=STEP) for _ in range(4))
        assert got == [b"message %d" % i for i in range(4)]
        assert not ch.stats()["writer_closed"]


def _one_liner_recv(name: str) -> bytes:
    return shmring.Channel.open(name).recv(timeout=STEP)


def test_one_liner_open_recv_in_a_child_does_not_close_the_reader(name: str, kids: Kids) -> None:
    with shmring.Channel.create(name, 4096) as ch:
        ch.send(b"one")
        assert kids.start(FORK, _one_liner_recv, name).result() == b"one"
        ch.send(b"two")  # no "Closed: the reader closed the channel"
        assert not ch.stats()["reader_closed"]
        assert kids.start(SPAWN, _one_liner_recv, name).result() == b"two"


# -- across processes ---------------------------------------------------------


@pytest.mark.timeout(30)
@every_strategy_fork_and_spawn
def test_writer_close_then_reader_drains(wait: str, ctx_name: str, channel: Callable[..., Channel],
                                         kids: Kids) -> None:
    """The writer sends everything that fits and closes before the reader
    starts: the reader gets every message, then Closed, every time."""
    capacity = 4096
    sizes = (0, 1, 13, 64, 200)
    ch = channel(capacity, wait)
    n = 0
    used = 0
    while used + record_size(size_of(n, sizes)) <= capacity:
        used += record_size(size_of(n, sizes))
        n += 1
    p = kids.process(CONTEXTS[ctx_name], _producer, ch, wait, "send", 0, n, sizes)
    p.join(OP_TIMEOUT)
    assert p.exitcode == 0
    assert ch.stats()["writer_closed"]
    assert recv_seq(ch, "recv", 0, n, sizes) == n
    for call in (ch.recv, lambda: ch.recv(timeout=1), ch.try_recv, lambda: ch.recv_many(3),
                 lambda: ch.recv_into(bytearray(10)), ch.peek):
        with pytest.raises(shmring.Closed) as ei:
            call()
        assert isinstance(ei.value, EOFError)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("wait", STRATEGIES)
def test_iteration_ends_at_writer_close(wait: str, channel: Callable[..., Channel], kids: Kids) -> None:
    """``for msg in ch`` yields the whole stream (which goes round a small
    ring many times) and ends cleanly at the writer's close."""
    capacity = 256
    sizes = size_mix("mixed", capacity)
    n = 3000
    ch = channel(capacity, wait)
    kids.process(FORK, _producer, ch.name, wait, "send", 0, n, sizes)
    count = 0
    for data in ch:
        check_msg(data, count, sizes)
        count += 1
    assert count == n
    assert list(ch) == []
    # Closing is permanent: a later producer cannot reopen the stream.
    late = Agent(kids, FORK, ch.name)
    with pytest.raises(shmring.Closed, match="already ended"):
        late("send", b"too late", timeout=1)
    with pytest.raises(shmring.Closed):
        ch.recv(timeout=0.1)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("wait", STRATEGIES)
def test_writer_close_wakes_blocked_reader(wait: str, channel: Callable[..., Channel], kids: Kids) -> None:
    ch = channel(4096, wait)
    producer = Agent(kids, FORK, ch.name, wait)
    producer("send", b"one", timeout=5)
    assert ch.recv(timeout=5) == b"one"
    producer.start("later", 0.3, "close")
    t0 = time.monotonic()
    with pytest.raises(shmring.Closed):
        ch.recv()  # no timeout: the close must wake it
    elapsed = time.monotonic() - t0
    assert 0.25 <= elapsed < 2.0, elapsed
    producer.reply()


@pytest.mark.timeout(30)
@every_strategy_fork_and_spawn
def test_reader_close_makes_send_raise_closed(wait: str, ctx_name: str, channel: Callable[..., Channel],
                                              kids: Kids) -> None:
    ch = channel(4096, wait)
    consumer = Agent(kids, CONTEXTS[ctx_name], ch.name, wait)
    ch.send(b"hello")
    assert consumer("recv", timeout=5) == b"hello"
    consumer("close")
    assert ch.stats()["reader_closed"]
    for call in (lambda: ch.send(b"x"), lambda: ch.send(b"x", timeout=1), lambda: ch.try_send(b"x"),
                 lambda: ch.send_many([b"x"]), lambda: ch.reserve(1)):
        with pytest.raises(shmring.Closed) as ei:
            call()
        assert isinstance(ei.value, EOFError)
    assert consumer.stop() == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("wait", STRATEGIES)
def test_reader_close_wakes_blocked_writer(wait: str, channel: Callable[..., Channel], kids: Kids) -> None:
    ch = channel(256, wait)
    consumer = Agent(kids, FORK, ch.name, wait)
    ch.send(b"claim")
    assert consumer("recv", timeout=5) == b"claim"
    assert consumer("try_recv") is None
    while ch.try_send(b"z" * 24):
        pass
    consumer.start("later", 0.3, "close")
    t0 = time.monotonic()
    with pytest.raises(shmring.Closed):
        ch.send(b"b" * 24)  # does not fit; no timeout: the reader's close must wake it
    elapsed = time.monotonic() - t0
    assert 0.25 <= elapsed < 2.0, elapsed
    consumer.reply()
