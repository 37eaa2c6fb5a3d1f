"""A channel's bridge without a network: its control headers byte for byte,
the exporter's replay buffer and the importer's bookkeeping of its stream
(docs/BRIDGE.md, "Channels").  Between hosts: tests/bridge/."""

from __future__ import annotations

import pytest

from shmring.bridge.channel_wire import ACK_BROKEN, ENTRY_OVERHEAD, KIND_ACK, ChannelHeader, Receiver, ReplayBuffer, channel_keys
from shmring.bridge.wire import WireError


def test_the_headers_are_the_documented_24_bytes() -> None:
    raw = ChannelHeader(KIND_ACK, ACK_BROKEN, 0x0102030405060708, 0x11).pack()
    assert raw == b"SR" + bytes([1, 6]) + bytes([2, 0, 0, 0]) + bytes(range(8, 0, -1)) + bytes([0x11]) + bytes(7)
    assert ChannelHeader.unpack(raw) == ChannelHeader(KIND_ACK, ACK_BROKEN, 0x0102030405060708, 0x11)
    assert channel_keys("pipe") == ("shmring/channel/pipe/data", "shmring/channel/pipe/ack")


@pytest.mark.parametrize("raw", [None, b"SR" + bytes(21), b"XX" + bytes([1, 0]) + bytes(20),
                                 b"SR" + bytes([1, 1]) + bytes(20), b"SR" + bytes([1, 3]) + bytes(20)])
def test_a_header_that_is_not_a_channels_is_refused(raw: bytes | None) -> None:
    with pytest.raises(WireError):
        ChannelHeader.unpack(raw)


def test_the_replay_buffer_numbers_sends_and_forgets_what_is_acknowledged() -> None:
    buffer = ReplayBuffer(limit=1 << 20, base=100)
    buffer.extend([b"a", b"bb", b"ccc"])
    assert (buffer.base, buffer.end, len(buffer)) == (100, 103, 3)
    assert buffer.size == 6 + 3 * ENTRY_OVERHEAD
    assert buffer.unsent(2) == (100, [b"a", b"bb"])
    assert buffer.unsent(10) == (102, [b"ccc"])
    assert buffer.unsent(10) == (103, [])
    assert buffer.acknowledge(102) == 2
    assert (buffer.base, buffer.size, buffer.cursor) == (102, 3 + ENTRY_OVERHEAD, 103)
    assert buffer.acknowledge(101) == 0  # an old acknowledgement changes nothing
    assert buffer.rewind() == 1
    assert buffer.unsent(10) == (102, [b"ccc"])
    assert buffer.acknowledge(500) == 1 and len(buffer) == 0 and buffer.size == 0  # never past the end


def test_the_replay_buffer_is_full_at_its_limit_and_ends_with_a_numbered_end() -> None:
    buffer = ReplayBuffer(limit=2 * (10 + ENTRY_OVERHEAD), base=0)
    buffer.extend([bytes(10)])
    assert not buffer.full()
    buffer.extend([bytes(10)])
    assert buffer.full()
    assert buffer.close(0) == 2 and buffer.end == 3
    with pytest.raises(ValueError):
        buffer.extend([b"late"])
    assert buffer.unsent(5) == (0, [bytes(10), bytes(10), None])
    buffer.acknowledge(3)
    assert not buffer.full() and len(buffer) == 0


def test_the_replay_buffer_compacts_without_losing_its_numbers() -> None:
    buffer = ReplayBuffer(limit=1 << 30, base=0)
    for first in range(0, 20000, 100):
        buffer.extend([n.to_bytes(4, "little") for n in range(first, first + 100)])
        buffer.unsent(100)
        buffer.acknowledge(first + 50)
    buffer.rewind()
    first, rest = buffer.unsent(1 << 20)
    assert first == 19950 and [int.from_bytes(m or b"", "little") for m in rest] == list(range(19950, 20000))


def test_the_receiver_joins_at_the_start_takes_in_order_and_drops_duplicates() -> None:
    r = Receiver()
    assert r.message(7, 5) == "unknown"  # no start yet: a resend is asked
    assert r.start(7, 5) == "joined" and r.expected == 5
    assert r.message(7, 5) == "take"
    r.taken()
    assert r.message(7, 5) == "duplicate" and r.duplicates == 1
    assert r.message(7, 7) == "hole"  # 6 is missing: dropped, sent again later
    assert r.start(7, 3) == "ok"  # a replay from before what it has: fine
    assert r.message(8, 0) == "foreign" and r.foreign == 1
    assert r.message(7, 6) == "take"
    r.taken()
    r.ended()
    assert (r.state, r.expected) == ("ended", 8)
    assert r.message(7, 8) == "after"


def test_a_start_past_what_the_receiver_has_is_a_reported_loss() -> None:
    r = Receiver()
    r.start(7, 0)
    r.taken(1000)
    assert r.start(7, 1500) == "broken"
    assert (r.state, r.lost, r.lost_from) == ("broken", 500, 1000)
    assert r.message(7, 1500) == "after" and r.start(7, 1500) == "ignore"



def test_another_stream_while_one_is_open_breaks_it() -> None:
    r = Receiver()
    r.start(7, 0)
    r.taken(10)
    assert r.start(8, 0) == "replaced"
    assert (r.state, r.lost_from, r.replaced) == ("broken", 10, True)
    assert r.start(8, 0) == "ignore" and r.message(8, 0) == "foreign"
