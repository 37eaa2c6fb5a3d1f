"""The channel's record layout (docs/PROTOCOL.md): 8-byte record headers,
8-byte alignment, padding where a record would cross the end of the ring;
random interleavings against a model, property-based.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shmring

from conftest import record_size


def test_wrap_around_with_padding(ch: shmring.Channel) -> None:
    """Messages whose records do not fit before the end of the ring start
    again at offset 0 behind a padding record; every byte survives."""
    sent = 0
    for round_ in range(200):
        size = (round_ * 37) % (ch.max_message + 1)
        msg = bytes((round_ + i) % 251 for i in range(size))
        ch.send(msg)
        assert ch.recv() == msg
        sent += record_size(size)
    stats = ch.stats()
    assert stats["head"] == stats["tail"] >= sent  # padding records count too
    assert stats["sent_messages"] == stats["received_messages"] == 200


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    capacity_log=st.integers(6, 12),
    ops=st.lists(st.tuples(st.booleans(), st.integers(0, 4096)), min_size=1, max_size=120),
)
def test_records_against_a_model(new_name: Callable[[], str], capacity_log: int, ops: list[tuple[bool, int]]) -> None:
    """Random interleavings of sends and receives against a model of the
    ring's accounting (docs/PROTOCOL.md): 8-byte record headers, 8-byte
    alignment, padding where a record would cross the end.  A send must fit
    exactly when the model says so."""
    capacity = 1 << capacity_log
    with shmring.Channel.create(new_name(), capacity) as c:
        ring: deque[tuple[int, bytes | None]] = deque()  # (record bytes, message or None for padding)
        head = tail = 0
        for seq, (is_send, size) in enumerate(ops):
            if is_send:
                size %= c.max_message + 1
                msg = struct.pack("<I", seq)[: min(4, size)] + bytes([seq % 256]) * max(0, size - 4)
                need = record_size(size)
                contig = capacity - tail % capacity
                if need > contig and capacity - (tail - head) >= contig:
                    ring.append((contig, None))  # padding is written as soon as it fits
                    tail += contig
                fits = need <= capacity - tail % capacity and capacity - (tail - head) >= need
                assert c.try_send(msg) is fits
                if fits:
                    ring.append((need, msg))
                    tail += need
            else:
                got = c.try_recv()
                while ring and ring[0][1] is None:  # the reader steps over padding
                    head += ring.popleft()[0]
                if ring:
                    rec, msg = ring.popleft()
                    assert got == msg
                    head += rec
                else:
                    assert got is None
            s = c.stats()
            assert (s["tail"], s["head"]) == (tail, head)
        rest = [m for _, m in ring if m is not None]
        assert (c.recv_many(10_000) if rest else []) == rest
