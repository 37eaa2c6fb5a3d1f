"""Channel boundaries: empty and full rings, a ring filled exactly (every
fill pattern, every capacity) and drained, the largest message (which needs
the whole ring), and messages that can never fit (refused at once, never a
wait).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

import shmring
from shmring import Channel

from _channel_helpers import CAPACITIES, REC, STRATEGIES, Agent, expect_end_of_stream, make_msg
from conftest import FORK, Kids


def test_too_big_fails_at_once(ch: shmring.Channel) -> None:
    assert ch.max_message == 1024 - REC
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="can never fit"):
        ch.send(bytes(ch.max_message + 1))
    with pytest.raises(ValueError, match="can never fit"):
        ch.try_send(bytes(2000))
    with pytest.raises(ValueError, match="can never fit"):
        ch.reserve(ch.max_message + 1)
    assert time.monotonic() - t0 < 1
    ch.send(bytes(ch.max_message))  # the largest does fit, in an empty ring
    assert ch.recv() == bytes(ch.max_message)


def test_full_and_empty(ch: shmring.Channel) -> None:
    assert ch.try_recv() is None
    with pytest.raises(shmring.Timeout):
        ch.recv(timeout=0)
    n = 0
    while ch.try_send(bytes([n]) * 56):  # 64-byte records: 16 fill 1024 exactly
        n += 1
    assert n == 16
    assert ch.stats()["fill_bytes"] == 1024
    t0 = time.monotonic()
    with pytest.raises(shmring.Timeout) as info:
        ch.send(b"more", timeout=0.1)
    assert 0.09 <= time.monotonic() - t0 < 2
    assert isinstance(info.value, TimeoutError)
    for i in range(n):
        assert ch.recv() == bytes([i]) * 56
    assert ch.try_recv() is None


def fill_patterns(c: int) -> dict[str, tuple[int, list[int]]]:
    """(bytes of ring to consume first, message lengths that then fill the
    ring exactly)."""
    return {
        "one-largest": (0, [c - 8]),
        "halves": (0, [c // 2 - 8] * 2),
        "quarters-unaligned": (0, [c // 4 - 15] * 4),  # lengths not multiples of 8
        "zero-length": (0, [0] * (c // 8)),  # c/8 empty messages: 8-byte records
        "after-wrap": (3 * c // 8, [5 * c // 8 - 8, 3 * c // 8 - 8]),
        "with-padding": (6 * c // 8, [c // 2 - 8, c // 4 - 8]),  # pad c/4 + c/2 + c/4
    }


@pytest.mark.timeout(30)
@pytest.mark.parametrize("pattern", list(fill_patterns(64)))
@pytest.mark.parametrize("capacity", CAPACITIES)
def test_fill_exactly_then_drain(capacity: int, pattern: str, channel: Callable[..., Channel], kids: Kids) -> None:
    ch = channel(capacity, "adaptive")
    pre, lengths = fill_patterns(capacity)[pattern]
    producer = Agent(kids, FORK, ch.name)
    assert ch.try_recv() is None  # empty: None (and this process is the consumer)
    if pre:
        producer("send", b"p" * (pre - 8), timeout=5)
        assert ch.recv(timeout=5) == b"p" * (pre - 8)
        assert ch.try_recv() is None  # hands the bytes back at once
    msgs = [make_msg(i, n) for i, n in enumerate(lengths)]
    # Each send must go through without waiting: the ring has exactly room.
    assert producer("send_list", msgs, 2.0) == len(msgs)
    stats = ch.stats()
    assert stats["tail"] - stats["head"] == capacity and stats["fill_bytes"] == capacity, stats
    # Full: nothing more fits, not even an empty message.
    assert producer("try_send", b"") is False
    outcome, err, elapsed = producer("timed", "send", b"", timeout=0.05)
    assert outcome == "raised" and isinstance(err, shmring.Timeout) and isinstance(err, TimeoutError), err
    assert elapsed < 1.0
    # Too big never blocks, even on a full ring.
    for label, exc, text, took in producer("too_big", capacity):
        assert exc == "ValueError", f"{label}: {exc} {text}"
        assert took < 0.5, f"{label} took {took:.3f} s"
    # Drain: everything, in order, then empty.
    for i, m in enumerate(msgs):
        assert ch.recv(timeout=5) == m, f"message {i} of the fill"
    assert ch.try_recv() is None
    stats = ch.stats()
    assert stats["head"] == stats["tail"] == pre + capacity
    # Room again.
    assert producer("try_send", b"") is True
    assert ch.recv(timeout=5) == b""
    assert producer.stop() == 0  # its close ends the stream
    expect_end_of_stream(ch)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("capacity", [64, 4096])
def test_largest_message_after_wrap_waits_for_padding(capacity: int, channel: Callable[..., Channel],
                                                       kids: Kids) -> None:
    """At a non-zero position the largest message needs a padding record to
    the end of the ring AND the whole ring: the sender must wait until the
    consumer has skipped the padding, and then go through."""
    ch = channel(capacity, "block")
    producer = Agent(kids, FORK, ch.name)
    producer("send", b"q" * (capacity // 2 - 8), timeout=5)
    assert ch.recv(timeout=5) == b"q" * (capacity // 2 - 8)
    assert ch.try_recv() is None
    big = make_msg(7, capacity - 8)
    assert producer("try_send", big) is False  # writes (and publishes) the padding only
    producer.start("send", big, timeout=5)
    assert ch.recv(timeout=5) == big
    assert producer.reply() is None
    assert ch.try_recv() is None


@pytest.mark.timeout(30)
@pytest.mark.parametrize("state", ["empty", "full"])
@pytest.mark.parametrize("wait", STRATEGIES)
def test_too_big_raises_at_once(wait: str, state: str, channel: Callable[..., Channel], kids: Kids) -> None:
    """capacity - 7 bytes can never fit: ValueError at once, without a
    timeout, whatever the ring holds (the agent would hang otherwise)."""
    capacity = 64
    ch = channel(capacity, wait)
    producer = Agent(kids, FORK, ch.name, wait)
    assert ch.try_recv() is None
    if state == "full":
        assert producer("fill", 0) == capacity // 8
    for label, exc, text, took in producer("too_big", capacity):
        assert exc == "ValueError", f"{label}: {exc} {text}"
        assert "never fit" in text, text
        assert took < 0.5, f"{label} took {took:.3f} s"
    assert producer("try_send", b"\x00" * 0) is (state == "empty")
