"""Channel boundaries: empty and full rings, a ring filled exactly (every
fill pattern, every capacity) and drained, the largest message (which needs
the whole ring), and messages that can never fit (refused at once, never a
wait).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest

import shmring
from shmring import Channel

from _channel_helpers import CAPACITIES, REC, STRATEGIES, Agent, expect_end_of_stream, make_msg
from conftest import FORK, Kids

# Around the size from which messages into a ring of 16 MiB or more are
# copied with streaming stores (include/shmring/copy.h), odd lengths included.
LARGE_SIZES = [(256 << 10) - 1, 256 << 10, (256 << 10) + 13, (1 << 20) + 5, 3 << 20]
LARGE_COUNT = 40  # about 2.5 laps of a 16 MiB ring: records at many offsets, wrap-around included


def large_msg(seq: int) -> bytes:
    size = LARGE_SIZES[seq % len(LARGE_SIZES)]
    return seq.to_bytes(8, "little") + random.Random(seq).randbytes(size - 8)


def _send_large(name: str, api: str) -> int:
    with Channel.open(name) as ch:
        for seq in range(0, LARGE_COUNT, 2):
            pair = [large_msg(seq), large_msg(seq + 1)]
            if api == "send_many":
                assert ch.send_many(pair, timeout=20) == 2
                continue
            for m in pair:
                if api == "send":
                    ch.send(m, timeout=20)
                else:
                    deadline = time.monotonic() + 20
                    while not ch.try_send(m):
                        assert time.monotonic() < deadline, "try_send found no room for 20 s"
                        time.sleep(0.0005)
    return LARGE_COUNT


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


@pytest.mark.timeout(60)
@pytest.mark.parametrize("api", ["send", "try_send", "send_many"])
def test_large_messages_into_a_large_ring_arrive_intact(api: str, channel: Callable[..., Channel], kids: Kids) -> None:
    """Messages of 256 KiB and more into a ring of 16 MiB are copied with
    streaming stores, fenced before the record is published: every byte of
    each must be there when the reader in another process gets it."""
    ch = channel(16 << 20, "adaptive")
    sender = kids.start(FORK, _send_large, ch.name, api)
    for seq in range(LARGE_COUNT):
        got = ch.recv(timeout=20)
        want = large_msg(seq)
        assert len(got) == len(want), f"message {seq}: {len(got)} bytes, expected {len(want)}"
        assert got == want, f"message {seq} ({len(want)} bytes) differs from what was sent"
    assert sender.result() == LARGE_COUNT
