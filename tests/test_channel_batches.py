"""Channel.send_many / recv_many.

send_many is one publication (issue 9): the batch is checked whole before
anything is written; a batch that fits the ring goes in all or nothing, on a
timeout too; a batch larger than the ring goes in parts, each published
before the sender waits, and a Timeout says how many went out.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

import shmring
from shmring import Channel

from _channel_helpers import Agent, make_msg
from conftest import FORK, STEP, Kids


def test_send_many_recv_many(ch: shmring.Channel) -> None:
    msgs = [bytes([i]) * (i % 20) for i in range(40)]
    assert ch.send_many(msgs) == 40
    got = ch.recv_many(25)
    assert got == msgs[:25]
    assert ch.recv_many(100) == msgs[25:]
    assert ch.send_many(iter([b"a", bytearray(b"b")])) == 2  # any iterable of buffers
    assert ch.recv_many(max_messages=10, timeout=1) == [b"a", b"b"]
    assert ch.send_many([]) == 0
    with pytest.raises(shmring.Timeout):
        ch.recv_many(5, timeout=0)
    with pytest.raises(ValueError):
        ch.recv_many(0)


def test_send_many_stops_at_timeout_and_says_how_far(ch: shmring.Channel) -> None:
    with pytest.raises(shmring.Timeout) as info:
        ch.send_many([bytes(100)] * 20, timeout=0.05)
    sent = info.value.sent  # type: ignore[attr-defined]
    assert 0 < sent < 20
    assert len(ch.recv_many(100)) == sent


def test_send_many_bad_item_delivers_nothing(ch: shmring.Channel) -> None:
    """The batch is checked whole before anything is written (issue 9)."""
    with pytest.raises(TypeError):
        ch.send_many([b"one", b"two", "three", b"four"])  # type: ignore[list-item]
    assert ch.try_recv() is None
    with pytest.raises(ValueError, match="can never fit"):
        ch.send_many([b"one", bytes(ch.max_message + 1), b"three"])
    assert ch.try_recv() is None
    assert ch.send_many([b"one", b"two"]) == 2
    assert ch.recv_many(10) == [b"one", b"two"]


def test_iterator_closing_the_channel_mid_send_many(name: str) -> None:
    """send_many collects its batch before it enters the producer end, so an
    iterator may close the handle: the batch then sends nothing (issue 9:
    one publication, checked whole first)."""
    with shmring.Channel.create(name, 1024) as ch:
        reader = shmring.Channel.open(name)
        def items():
            yield b"a"
            ch.close()
            yield b"b"
        with pytest.raises(shmring.Closed, match="handle is closed"):
            ch.send_many(items())
        with pytest.raises(shmring.Timeout):
            reader.recv(timeout=0)  # nothing of the batch, and the stream was never started
        reader.close()


def test_send_many_timeout_of_a_batch_that_fits_delivers_nothing(name: str) -> None:
    with shmring.Channel.create(name, 1024) as ch:
        for i in range(12):
            ch.send(bytes([i]) * 56)  # 12 x 64 of the 1024 bytes
        batch = [b"x" * 56] * 5  # 320 bytes: fits the ring, not the 256 left
        with pytest.raises(shmring.Timeout) as info:
            ch.send_many(batch, timeout=0.05)
        assert info.value.sent == 0  # type: ignore[attr-defined]
        with pytest.raises(shmring.Timeout) as info:
            ch.send_many(batch, timeout=0)
        assert info.value.sent == 0  # type: ignore[attr-defined]
        assert ch.recv_many(100) == [bytes([i]) * 56 for i in range(12)]
        assert ch.send_many(batch, timeout=0) == 5  # now it fits whole
        assert ch.recv_many(100) == batch


def test_send_many_larger_than_the_ring_goes_in_parts_and_says_how_many(name: str) -> None:
    with shmring.Channel.create(name, 256) as ch:
        batch = [bytes([i]) * 56 for i in range(10)]  # 640 bytes of records in a 256-byte ring
        with pytest.raises(shmring.Timeout) as info:
            ch.send_many(batch, timeout=0.05)
        sent = info.value.sent  # type: ignore[attr-defined]
        assert sent == 4
        assert ch.recv_many(100) == batch[:sent]


def test_send_many_whole_batch_that_needs_the_ring_from_offset_zero(name: str) -> None:
    """A batch of exactly one ring's worth, with the tail mid-ring: it is
    placed behind a padding record (never waiting for room it cannot have)."""
    with shmring.Channel.create(name, 256) as ch:
        ch.send(b"")
        assert ch.recv() == b""  # the tail is at offset 8 now
        batch = [bytes([i]) * 56 for i in range(4)]  # 4 x 64 = 256 bytes
        assert ch.send_many(batch, timeout=STEP) == 4
        assert ch.recv_many(10) == batch


def _slow_drain(name: str, n: int) -> list[bytes]:
    ch = shmring.Channel.open(name)
    out = []
    for _ in range(n):
        out.append(ch.recv(timeout=STEP))
        time.sleep(0.001)
    ch.close()
    return out


@pytest.mark.parametrize("capacity", [256, 4096])
def test_send_many_batches_arrive_whole_and_in_order(capacity: int, name: str, kids: Kids) -> None:
    sizes = [0, 1, 7, 8, 9, 23, 56, 100, capacity // 2 - 8]
    msgs = [bytes([i % 251]) * sizes[i % len(sizes)] for i in range(300)]
    with shmring.Channel.create(name, capacity) as ch:
        reader = kids.start(FORK, _slow_drain, name, len(msgs))
        i = 0
        while i < len(msgs):
            k = 1 + i % 9
            assert ch.send_many(msgs[i : i + k], timeout=STEP) == len(msgs[i : i + k])
            i += k
        assert reader.result() == msgs


@pytest.mark.timeout(30)
def test_send_many_timeout_reports_partial_batch(channel: Callable[..., Channel], kids: Kids) -> None:
    """A batch larger than the room left: Timeout says how many went out,
    and exactly those arrive (published before the error)."""
    ch = channel(256, "block")
    producer = Agent(kids, FORK, ch.name)
    assert ch.try_recv() is None
    batch = [make_msg(i, 56) for i in range(10)]  # 64-byte records: 4 fit
    outcome, err, elapsed = producer("timed", "send_many", batch, timeout=0.1)
    assert outcome == "raised" and isinstance(err, shmring.Timeout), err
    assert getattr(err, "sent", None) == 4
    for i in range(4):
        assert ch.recv(timeout=5) == batch[i]
    assert ch.try_recv() is None
