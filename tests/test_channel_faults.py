"""A channel's peer killed with SIGKILL: mid-stream, inside reserve(), inside
send_many().  The survivor gets only complete messages and then PeerGone in
bounded time (never a hang), and a new process can take the dead one's end
and carry on.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable, Sequence

import pytest

import shmring
from shmring import Channel

from _channel_helpers import (
    OP_TIMEOUT, Agent, _producer, _stream, check_msg, every_strategy_fork_and_spawn, expect_end_of_stream, msg,
    recv_seq, size_mix, size_of, wait_for_claim,
)
from conftest import CONTEXTS, FORK, Kids, record_size


def _drain_until_peer_gone(ch: Channel, seq: int, sizes: Sequence[int], limit: int) -> int:
    """Receive valid, contiguous messages until PeerGone; returns the next seq."""
    start = seq
    with pytest.raises(shmring.PeerGone) as ei:
        while True:
            check_msg(ch.recv(timeout=OP_TIMEOUT), seq, sizes)
            seq += 1
            assert seq - start <= limit, "more messages after the kill than the ring can hold"
    assert isinstance(ei.value, ConnectionError)
    assert "died" in str(ei.value)
    return seq


@pytest.mark.timeout(60)
@every_strategy_fork_and_spawn
def test_producer_sigkill_midstream_then_new_producer(wait: str, ctx_name: str, channel: Callable[..., Channel],
                                                     kids: Kids) -> None:
    """A producer streaming non-stop is SIGKILLed: the reader gets only
    complete messages, contiguous from 0, then PeerGone within 2 s.  A new
    producer process then claims the end and the same reader carries on
    with its messages; several rounds of this (fork), then a clean end."""
    ctx = CONTEXTS[ctx_name]
    capacity = 4096
    sizes = size_mix("mixed", capacity)
    ch = channel(capacity, wait)
    rng = random.Random(f"{wait}-{ctx_name}")
    seq = 0
    rounds = 3 if ctx_name == "fork" else 1
    for _ in range(rounds):
        p = kids.process(ctx, _stream, ch.name, wait, seq, sizes)
        wait_for_claim(ch, "producer", p.pid)
        target = seq + rng.randrange(200, 1500)
        while seq < target:
            check_msg(ch.recv(timeout=OP_TIMEOUT), seq, sizes)
            seq += 1
        os.kill(p.pid, signal.SIGKILL)
        t_kill = time.monotonic()
        seq = _drain_until_peer_gone(ch, seq, sizes, capacity // 8)
        elapsed = time.monotonic() - t_kill
        assert elapsed < 2.0, f"PeerGone came {elapsed:.2f} s after the kill"
        p.join(5)
        assert p.exitcode == -signal.SIGKILL
        # Still no producer: a non-blocking receive says so at once.
        t0 = time.monotonic()
        with pytest.raises(shmring.PeerGone):
            ch.recv(timeout=0)
        assert time.monotonic() - t0 < 0.5
    # Last producer: a finite stream and a clean close.
    p = kids.process(ctx, _stream, ch.name, wait, seq, sizes, 500)
    wait_for_claim(ch, "producer", p.pid)
    seq = recv_seq(ch, "recv", seq, 500, sizes)
    expect_end_of_stream(ch)
    p.join(OP_TIMEOUT)
    assert p.exitcode == 0
    assert ch.stats()["received_messages"] == seq


@pytest.mark.timeout(30)
@every_strategy_fork_and_spawn
def test_consumer_sigkill_unblocks_producer(wait: str, ctx_name: str, channel: Callable[..., Channel],
                                            kids: Kids) -> None:
    """The consumer dies by SIGKILL while the producer waits on a full ring:
    the producer's send raises PeerGone (bounded time), never hangs."""
    ch = channel(256, wait)
    consumer = Agent(kids, CONTEXTS[ctx_name], ch.name, wait)
    ch.send(b"claim")
    assert consumer("recv", timeout=5) == b"claim"
    while ch.try_send(b"f" * 40):
        pass
    consumer.start("later", 0.3, "kill")
    t0 = time.monotonic()
    with pytest.raises(shmring.PeerGone, match=rf"consumer process {consumer.pid} died") as ei:
        ch.send(b"b" * 40)  # does not fit; no timeout
    elapsed = time.monotonic() - t0
    assert isinstance(ei.value, ConnectionError)
    assert 0.25 <= elapsed < 2.3, elapsed
    consumer.proc.join(5)
    assert consumer.proc.exitcode == -signal.SIGKILL
    with pytest.raises(shmring.PeerGone):
        ch.send(b"b" * 40, timeout=1)


@pytest.mark.timeout(30)
def test_new_consumer_after_consumer_sigkill(channel: Callable[..., Channel], kids: Kids) -> None:
    """After a consumer dies, a new consumer process claims the end and
    resumes from the last head the dead one published: a contiguous run of
    messages, starting no later than right after what the dead one saw."""
    # The whole stream fits in the ring, so that the producer never waits
    # for room (it would rightly get PeerGone while no consumer lives).
    capacity = 1 << 17
    sizes = (12, 13, 20, 31, 40, 56)  # >= 12 bytes: each carries its seq
    n = 1500
    assert sum(record_size(size_of(s, sizes)) for s in range(n)) <= capacity
    ch = channel(capacity, "adaptive")
    first = Agent(kids, FORK, ch.name)
    producer = kids.process(FORK, _producer, ch.name, None, "send", 0, n, sizes)
    seen = first("recv_seq", "recv", 0, 700, sizes)
    first.kill()
    second = Agent(kids, FORK, ch.name)
    # The dead consumer may not have handed back its last messages: they
    # come again (at-least-once), but nothing may be skipped.
    data = second("recv", timeout=OP_TIMEOUT)
    resume = int.from_bytes(data[:8], "little")
    assert resume <= seen, f"resumed at #{resume}, but the dead consumer had only seen up to #{seen - 1}"
    check_msg(data, resume, sizes)
    assert second("recv_seq", "recv", resume + 1, n - resume - 1, sizes) == n
    with pytest.raises(shmring.Closed):
        second("recv", timeout=OP_TIMEOUT)
    producer.join(OP_TIMEOUT)
    assert producer.exitcode == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", ["plain", "needs-padding", "largest", "empty", "unwritten"])
def test_producer_killed_inside_reserve(case: str, channel: Callable[..., Channel], kids: Kids) -> None:
    """A producer SIGKILLed inside a reserve() block, half-way through
    writing: the reader never sees the partial record (nor a stray padding
    record), gets PeerGone, and a new producer's messages come through
    clean."""
    capacity = 256
    sizes = (20,)  # 32-byte records
    ch = channel(capacity, "block")
    before = {"plain": 3, "needs-padding": 7, "largest": 2, "empty": 1, "unwritten": 5}[case]
    n = {"plain": 100, "needs-padding": 100, "largest": capacity - 8, "empty": 0, "unwritten": 64}[case]
    written = 0 if case == "unwritten" else n // 2
    producer = Agent(kids, FORK, ch.name)
    producer("send_seq", "send", 0, before, sizes)
    assert recv_seq(ch, "recv", 0, before, sizes) == before
    assert ch.try_recv() is None
    producer.start("reserve_and_die", n, written)
    # Poll while it works: the largest message must wait for us to skip
    # the padding in front of it; nothing of the partial record may show.
    deadline = time.monotonic() + OP_TIMEOUT
    while producer.proc.is_alive():
        assert ch.try_recv() is None, "a partial record became visible"
        assert time.monotonic() < deadline, "the producer never reached its reserve() block"
        time.sleep(0.001)
    producer.proc.join(5)
    assert producer.proc.exitcode == -signal.SIGKILL
    with pytest.raises(shmring.PeerGone):
        ch.recv(timeout=OP_TIMEOUT)
    stats = ch.stats()
    assert stats["tail"] == stats["head"], "the dead producer's partial record was published"
    successor = Agent(kids, FORK, ch.name)
    successor.start("send_seq", "reserve", before, 20, sizes)
    # Until the successor claims the end, the dead producer holds it and a
    # recv rightly says PeerGone.
    wait_for_claim(ch, "producer", successor.pid)
    assert recv_seq(ch, "recv", before, 20, sizes) == before + 20
    assert successor.reply() == 20
    assert successor.stop() == 0
    expect_end_of_stream(ch)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("capacity", [256, 1 << 16])
def test_producer_killed_while_its_send_many_collects_the_batch(capacity: int, channel: Callable[..., Channel],
                                                                 kids: Kids) -> None:
    """SIGKILL from the batch's own iterator: send_many collects and checks
    the whole batch before it writes anything, so nothing of it arrives; the
    reader gets what was sent before, whole, then PeerGone."""
    sizes = size_mix("mixed", capacity)
    ch = channel(capacity, "adaptive")
    producer = Agent(kids, FORK, ch.name)
    assert ch.try_recv() is None
    producer("send_seq", "send", 0, 3, sizes)  # the producer holds its end
    producer.start("send_many_and_die", 3, 400, sizes)
    assert _drain_until_peer_gone(ch, 0, sizes, 400) == 3


@pytest.mark.timeout(30)
@pytest.mark.parametrize("capacity", [256, 1 << 16])
def test_producer_killed_inside_a_send_many_larger_than_the_ring(capacity: int, channel: Callable[..., Channel],
                                                                  kids: Kids) -> None:
    """SIGKILL while a batch larger than the ring waits for room (it goes in
    parts): the reader gets a prefix of the batch, whole and in order (every
    part was published before the producer waited), then PeerGone."""
    sizes = size_mix("mixed", capacity)
    k = 400
    batch = [msg(s, sizes) for s in range(k)]
    assert sum(record_size(len(m)) for m in batch) > capacity
    ch = channel(capacity, "adaptive")
    producer = Agent(kids, FORK, ch.name)
    assert ch.try_recv() is None  # the reader holds its end
    producer.start("send_many", batch, timeout=OP_TIMEOUT)
    deadline = time.monotonic() + OP_TIMEOUT
    while ch.stats()["sent_messages"] == 0:  # the first part is published when the ring fills up
        assert time.monotonic() < deadline, "the producer never published a part of its batch"
        time.sleep(0.002)
    producer.kill()
    seq = _drain_until_peer_gone(ch, 0, sizes, k)
    assert 0 < seq < k
    assert seq == ch.stats()["sent_messages"]  # everything published arrived


def _send_then_die(ch: Channel, n: int) -> None:
    for i in range(n):
        ch.send(i.to_bytes(8, "little"))
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.timeout(30)
def test_try_recv_reports_a_dead_producer(channel: Callable[..., Channel]) -> None:
    """try_recv never waits, but it does not return None forever either: once
    the dead producer's messages are drained it raises PeerGone."""
    ch = channel(4096, "block")
    proc = FORK.Process(target=_send_then_die, args=(ch, 5))
    proc.start()
    proc.join(10)
    got = []
    deadline = time.monotonic() + 5
    with pytest.raises(shmring.PeerGone):
        while time.monotonic() < deadline:
            msg = ch.try_recv()
            if msg is not None:
                got.append(msg)
            time.sleep(0.001)
    assert got == [i.to_bytes(8, "little") for i in range(5)]


def _claim_consumer_then_die(ch: Channel) -> None:
    assert ch.try_recv() is None
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.timeout(30)
def test_try_send_reports_a_dead_consumer(channel: Callable[..., Channel]) -> None:
    ch = channel(256, "block")
    proc = FORK.Process(target=_claim_consumer_then_die, args=(ch,))
    proc.start()
    proc.join(10)
    deadline = time.monotonic() + 5
    with pytest.raises(shmring.PeerGone):
        while time.monotonic() < deadline:
            ch.try_send(b"x" * 24)
            time.sleep(0.001)
