"""A model of the topic's ring (records, padding, head and tail, one
subscriber), checked with hypothesis in one process against both policies;
and every payload size modulo 16 wrapping at every ring offset.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shmring
from shmring import Topic

from _topic_helpers import HDR, TAG_BYTES, TAG_PAD, header, rec_size


class RingModel:
    """What include/shmring.h says the ring holds: records {pos: (tag, len,
    seq, payload, size)}, tail, head (the reclaim point), one subscriber."""

    def __init__(self, capacity: int, policy: str) -> None:
        self.cap = capacity
        self.policy = policy
        self.tail = self.head = self.next_seq = 0
        self.last_pos: int | None = None
        self.records: dict[int, tuple[int, int, int, bytes | None, int]] = {}
        self.cursor = self.sub_seq = self.lagged = 0

    def make_room(self, need: int) -> bool:
        if self.cap - (self.tail - self.head) >= need:
            return True
        target = self.tail + need - self.cap
        if self.policy == "block":
            low = min(self.tail, self.cursor)
            if low < target:
                return False
            # All that the subscriber has read is freed at once, but the
            # newest record stays (latest() reads it).
            low &= ~15
            if self.last_pos is not None and target <= self.last_pos < low:
                low = self.last_pos & ~15
            self.head = max(target, low)
        else:
            h = self.head
            while h < target:
                h += self.records[h][4]
            self.head = h
        return True

    def reserve(self, n: int) -> int | None:
        """Where a record of ``n`` bytes goes, or None (no room); may publish a
        padding record first, as the C does."""
        need = rec_size(n)
        contig = self.cap - self.tail % self.cap
        if contig < need:
            if not self.make_room(contig):
                return None
            self.records[self.tail] = (TAG_PAD, contig - HDR, self.next_seq, None, contig)
            self.tail += contig
        if not self.make_room(need):
            return None
        return self.tail

    def commit(self, pos: int, payload: bytes) -> None:
        self.records[pos] = (TAG_BYTES, len(payload), self.next_seq, payload, rec_size(len(payload)))
        self.last_pos = pos
        self.tail = pos + rec_size(len(payload))
        self.next_seq += 1

    def recv(self) -> tuple[str, Any]:
        cur = self.cursor
        while True:
            if cur == self.tail:
                self.cursor = cur
                return "timeout", None
            if cur < self.head:
                if self.head >= self.tail:
                    pos, seq = self.tail, self.next_seq
                else:
                    pos, seq = self.head, self.records[self.head][2]
                missed = seq - self.sub_seq
                assert missed >= 0
                if missed == 0:
                    # head only passed padding: nothing was lost, so no
                    # Lagged (see test_overwrite_no_spurious_lagged_over_padding)
                    cur = pos
                    continue
                self.lagged += missed
                self.cursor, self.sub_seq = pos, seq
                return "lagged", missed
            tag, _, seq, payload, size = self.records[cur]
            if tag == TAG_PAD:
                cur += size
                continue
            self.cursor, self.sub_seq = cur + size, seq + 1
            return "msg", payload


def _payload(i: int, n: int) -> bytes:
    return bytes((i * 31 + j * 7) & 0xFF for j in range(n))


OPS = st.one_of(
    st.tuples(st.just("send"), st.integers(0, 1 << 16)),
    st.tuples(st.just("reserve"), st.integers(0, 1 << 16)),
    st.tuples(st.just("abort"), st.integers(0, 1 << 16)),
    st.tuples(st.just("recv"), st.just(0)),
    st.tuples(st.just("recv"), st.just(0)),
)


@pytest.mark.parametrize("policy", ["block", "overwrite"])
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    capacity=st.sampled_from([128, 144, 208, 256, 400, 1024]),
    ops=st.lists(OPS, min_size=1, max_size=60),
)
def test_ring_matches_model(policy: str, capacity: int, ops: list[tuple[str, int]]) -> None:
    """Random message sizes (every alignment, up to the whole ring), sends,
    reserves, aborted reserves and receives against the model: tail, head,
    message numbers, every record's header (padding included) and every
    message and Lagged.missed the subscriber gets."""
    model = RingModel(capacity, policy)
    with Topic.create(None, capacity, policy) as t:  # type: ignore[arg-type]
        sub = t.subscribe()
        pub = t.publisher()
        seg = shmring.Segment.open(t.name)
        try:
            buf = seg.buf
            for i, (op, raw_n) in enumerate(ops):
                n = raw_n % (capacity - HDR + 1)
                if op == "recv":
                    kind, value = model.recv()
                    if kind == "timeout":
                        with pytest.raises(shmring.Timeout):
                            sub.recv(timeout=0)
                    elif kind == "lagged":
                        with pytest.raises(shmring.Lagged) as info:
                            sub.recv(timeout=0)
                        assert info.value.missed == value
                    else:
                        assert sub.recv(timeout=0) == value
                    assert sub.lagged == model.lagged
                else:
                    data = _payload(i, n)
                    pos = model.reserve(n)
                    if pos is None:
                        with pytest.raises(shmring.Timeout):
                            if op == "send":
                                pub.send(data, timeout=0)
                            else:
                                with pub.reserve(n, timeout=0):
                                    pass
                    elif op == "abort":
                        with pytest.raises(ZeroDivisionError):
                            with pub.reserve(n, timeout=0) as mv:
                                mv[:] = data
                                1 / 0
                    else:
                        if op == "send":
                            pub.send(data, timeout=0)
                        else:
                            with pub.reserve(n, timeout=0) as mv:
                                mv[:] = data
                        model.commit(pos, data)
                        assert header(buf, pos, capacity) == (n, TAG_BYTES, model.next_seq - 1)
                stats = t.stats()
                assert (stats["tail"], stats["head"], stats["published"]) == (model.tail, model.head, model.next_seq)
                for pos, (tag, ln, seq, _, _) in model.records.items():
                    if pos >= model.head and tag == TAG_PAD:
                        assert header(buf, pos, capacity) == (ln, TAG_PAD, seq)
                if model.last_pos is not None and model.last_pos >= model.head:
                    # (when an aborted reserve reclaimed the newest record,
                    # see test_topic_latest_after_reclaiming_abort)
                    assert t.latest() == model.records[model.last_pos][3]
        finally:
            seg.close()
            sub.close()
            pub.close()


@pytest.mark.parametrize("policy", ["block", "overwrite"])
def test_every_alignment_wraps_with_padding(topic: Callable[..., Topic], policy: str) -> None:
    """For every payload size modulo 16 and every ring offset, messages wrap
    through a padding record and arrive intact."""
    t = topic(256, policy)
    sub = t.subscribe()
    pub = t.publisher()
    seg = shmring.Segment.open(t.name)
    try:
        pads = 0
        for i in range(400):
            n = (i * 37) % 120
            m = _payload(i, n)
            tail = t.stats()["tail"]
            pub.send(m, timeout=0)
            new_tail = t.stats()["tail"]
            if new_tail - tail != rec_size(n):
                pads += 1
                assert tail % 256 + rec_size(n) > 256  # padding only where it would not fit
                assert new_tail % 256 == rec_size(n) % 256
                assert header(seg.buf, tail, 256) == (256 - tail % 256 - HDR, TAG_PAD, i)
            assert sub.recv(timeout=0) == m
        assert pads > 20
    finally:
        seg.close()
