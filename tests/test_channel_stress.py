"""Channel stress: thousands of messages through small rings, with real
processes (multiprocessing "fork" and "spawn"), every wait strategy, API
pair, capacity and size class; every message checked (tests/_channel_helpers.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from shmring import Channel

from _channel_helpers import (
    CAPACITIES, OP_TIMEOUT, STRATEGIES, _consumer, _producer, expect_end_of_stream, msg_count, recv_seq, size_mix,
    size_of,
)
from conftest import FORK, SPAWN, Kids

API_PAIRS = {
    "send-recv": ("send", "recv"),
    "send_many-recv_many": ("send_many", "recv_many"),
    "reserve-peek": ("reserve", "peek"),
    "send-recv_into": ("send", "recv_into"),
    "try_send-try_recv": ("try_send", "try_recv"),
}


def _run_stream(ch: Channel, kids: Kids, ctx: Any, target: Channel | str, wait: str | None, send_api: str,
                recv_api: str, sizes: Sequence[int]) -> None:
    """A child produces a whole stream; this process consumes and checks it."""
    capacity = ch.capacity
    n = msg_count(sizes, capacity, wait, ch.wait)
    p = kids.process(ctx, _producer, target, wait, send_api, 0, n, sizes)
    assert recv_seq(ch, recv_api, 0, n, sizes) == n
    expect_end_of_stream(ch)
    p.join(OP_TIMEOUT)
    assert p.exitcode == 0, f"producer exit code {p.exitcode}"
    stats = ch.stats()
    total = sum(size_of(s, sizes) for s in range(n))
    assert stats["sent_messages"] == stats["received_messages"] == n, stats
    assert stats["sent_bytes"] == stats["received_bytes"] == total, stats
    assert stats["head"] == stats["tail"], stats
    assert stats["tail"] >= 10 * capacity, f"the ring wrapped only {stats['tail'] / capacity:.1f} times"
    assert stats["writer_closed"] and not stats["reader_closed"]


@pytest.mark.timeout(40)
@pytest.mark.parametrize("pair", list(API_PAIRS))
@pytest.mark.parametrize("capacity", CAPACITIES)
@pytest.mark.parametrize("wait", STRATEGIES)
def test_stress_wraparound(wait: str, capacity: int, pair: str, channel: Callable[..., Channel], kids: Kids) -> None:
    """Thousands of messages of every size class through a small ring, each
    strategy, each API pair (fork child producer, this process consumer)."""
    send_api, recv_api = API_PAIRS[pair]
    ch = channel(capacity, wait)
    _run_stream(ch, kids, FORK, ch.name, wait, send_api, recv_api, size_mix("mixed", capacity))


MIXES = ("tiny", "aligned", "max", "padding")


@pytest.mark.timeout(40)
@pytest.mark.parametrize("mix", MIXES)
@pytest.mark.parametrize("capacity", CAPACITIES)
def test_stress_size_mix(capacity: int, mix: str, channel: Callable[..., Channel], kids: Kids) -> None:
    """One size class at a time (0-byte and 1-byte messages, exact multiples
    of 8, the largest message, sizes that force padding records), with the
    strategy and API pair rotating over the matrix."""
    i = CAPACITIES.index(capacity) + MIXES.index(mix)
    wait = STRATEGIES[i % len(STRATEGIES)]
    send_api, recv_api = list(API_PAIRS.values())[i % len(API_PAIRS)]
    ch = channel(capacity, wait)
    _run_stream(ch, kids, FORK, ch.name, wait, send_api, recv_api, size_mix(mix, capacity))


@pytest.mark.timeout(40)
@pytest.mark.parametrize("wait", STRATEGIES)
def test_stress_inherited_handle_fork(wait: str, channel: Callable[..., Channel], kids: Kids) -> None:
    """The producer uses the parent's own handle, inherited through fork
    (not re-opened): it must claim the producer end for itself."""
    ch = channel(256, wait)
    assert ch.try_recv() is None  # this process holds the consumer end before the fork
    _run_stream(ch, kids, FORK, ch, None, "send", "recv", size_mix("mixed", 256))


@pytest.mark.timeout(40)
@pytest.mark.parametrize("consumer_wait", STRATEGIES)
@pytest.mark.parametrize("producer_wait", STRATEGIES)
def test_stress_mixed_strategies(producer_wait: str, consumer_wait: str, channel: Callable[..., Channel],
                                 kids: Kids) -> None:
    """Each process picks its own strategy (Channel.open(name, wait)): every
    pairing must hand off without a lost wake-up.  Waiting on the semaphore
    needs a channel created with it (its producers post it)."""
    capacity = 256
    created = "semaphore" if "semaphore" in (producer_wait, consumer_wait) else "adaptive"
    ch = Channel.open(channel(capacity, created).name, consumer_wait)  # type: ignore[arg-type]
    try:
        assert ch.wait == consumer_wait
        _run_stream(ch, kids, FORK, ch.name, producer_wait, "send", "recv", size_mix("mixed", capacity))
    finally:
        ch.close()


@pytest.mark.timeout(40)
@pytest.mark.parametrize("spin_ns", [0, 1_000, 200_000])
def test_stress_adaptive_spin_windows(spin_ns: int, channel: Callable[..., Channel], kids: Kids) -> None:
    """Adaptive with no spin at all, a short one, and a long one."""
    ch = channel(256, "adaptive", spin_ns=spin_ns)
    assert ch.spin_ns == spin_ns
    _run_stream(ch, kids, FORK, ch.name, None, "send_many", "recv_many", size_mix("mixed", 256))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("wait", STRATEGIES)
def test_stress_spawn_both_ends_in_children(wait: str, channel: Callable[..., Channel], kids: Kids) -> None:
    """Producer and consumer both spawned, each getting the Channel object
    pickled by name; the creator only watches."""
    capacity = 4096
    ch = channel(capacity, wait)
    sizes = size_mix("mixed", capacity)
    n = msg_count(sizes, capacity, wait)
    results = SPAWN.Queue()
    consumer = kids.process(SPAWN, _consumer, ch, None, "recv_many", n, sizes, results)
    producer = kids.process(SPAWN, _producer, ch, None, "send_many", 0, n, sizes)
    got, end, stats = results.get(timeout=50)
    assert got == n and end == "closed"
    assert stats["sent_messages"] == stats["received_messages"] == n
    producer.join(OP_TIMEOUT)
    consumer.join(OP_TIMEOUT)
    assert producer.exitcode == 0 and consumer.exitcode == 0
    assert ch.stats()["producer_pid"] == 0  # the producer's close gave its end back
