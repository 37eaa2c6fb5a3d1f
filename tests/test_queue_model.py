"""The bounded queue's ring, byte for byte, against a model of
include/shmring.h (records and padding, an empty ring restarted at offset 0,
batches, items larger than the ring in chunks of their own), property-based.
"""

from __future__ import annotations

import pickle
import queue
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shmring

from _queue_helpers import DATA, HEAD, TAG_BYTES, TAG_OBJECT, TAG_PAD, TAG_VALUE, TAIL, chunk_files
from conftest import record_size, u64


class RingModel:
    """The ring of a bounded queue, byte for byte, as include/shmring.h lays it out."""

    def __init__(self, cap: int, maxsize: int) -> None:
        self.cap, self.maxsize = cap, maxsize
        self.head = self.tail = 0
        self.main: deque[tuple[int, int, bytes, Any]] = deque()  # (pos, tag, payload, value); tag PAD for padding
        self.chain: deque[tuple[int, bytes, Any]] = deque()  # records larger than the ring, a chunk each

    @property
    def count(self) -> int:
        return sum(1 for r in self.main if r[1] != TAG_PAD) + len(self.chain)

    @property
    def data(self) -> int:
        return sum(len(r[2]) for r in self.main if r[1] != TAG_PAD) + sum(len(r[1]) for r in self.chain)

    def _restart(self, tail: int, head: int) -> tuple[int, int]:
        """An empty ring whose tail is not at offset 0 starts over at 0: a
        padding record to the end, and head and tail both past it."""
        if tail == head and tail % self.cap:
            tail += self.cap - tail % self.cap
            head = tail
        return tail, head

    def _reserve(self, tail: int, head: int, n: int) -> tuple[int, list[tuple[int, int, bytes, Any]]] | None:
        need, pos = record_size(n), tail % self.cap
        contig, room = self.cap - pos, self.cap - (tail - head)
        pads = []
        if contig < need:
            if room < contig + need:
                return None
            pads.append((tail, TAG_PAD, bytes(contig - 8), None))
            tail += contig
        elif room < need:
            return None
        return tail + need, pads + [(tail, -1, b"", None)]

    def put(self, recs: list[tuple[int, bytes, Any]]) -> str:
        n = len(recs)
        if n == 0:
            return "ok"
        if self.maxsize and n > self.maxsize:
            return "ValueError"
        if n > 1 and sum(record_size(len(p)) for _, p, _ in recs) > self.cap:
            return "ValueError"
        if self.maxsize and self.count + n > self.maxsize:
            return "Full"
        if n == 1 and record_size(len(recs[0][1])) > self.cap:
            self.chain.append(recs[0])
            return "ok"
        if self.chain:
            return "Full"  # FIFO: behind the chunk, which is full
        tail, head, added = self.tail, self.head, []
        if n > 1 and sum(record_size(len(p)) for _, p, _ in recs) > self.cap - tail % self.cap:
            tail, head = self._restart(tail, head)  # an empty ring takes the whole batch from offset 0
        for tag, payload, value in recs:
            if record_size(len(payload)) > self.cap - tail % self.cap:
                tail, head = self._restart(tail, head)  # any record that fits the ring fits it empty
            r = self._reserve(tail, head, len(payload))
            if r is None:
                return "Full"
            tail, placed = r
            added += placed[:-1] + [(placed[-1][0], tag, payload, value)]
        self.tail, self.head = tail, head
        self.main.extend(added)
        return "ok"

    def get(self, most: int) -> list[tuple[int, bytes, Any]]:
        out: list[tuple[int, bytes, Any]] = []
        while len(out) < most:
            while self.main and self.main[0][1] == TAG_PAD:
                pos, _, pad, _ = self.main.popleft()
                self.head += len(pad) + 8
            if self.main:
                pos, tag, payload, value = self.main.popleft()
                self.head += record_size(len(payload))
                out.append((tag, payload, value))
            elif self.chain:
                out.append(self.chain.popleft())
            else:
                break
        return out


sizes = st.one_of(st.integers(0, 64), st.integers(0, 560))

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put_bytes"), sizes),
        st.tuples(st.just("put"), sizes),
        st.tuples(st.just("put_many"), st.lists(st.integers(0, 120), max_size=4)),
        st.tuples(st.just("get"), st.just(1)),
        st.tuples(st.just("get_bytes"), st.just(1)),
        st.tuples(st.just("get_many"), st.integers(1, 5)),
    ),
    min_size=10,
    max_size=80,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cap=st.sampled_from([64, 128, 200, 256, 520]), maxsize=st.sampled_from([0, 0, 2, 5]), ops=OPS)
def test_record_layout_against_a_model(new_name: Callable[[], str], cap: int, maxsize: int, ops: list[Any]) -> None:
    name = new_name()
    model = RingModel(cap, maxsize)
    with shmring.Queue(maxsize, max_size_bytes=cap, name=name) as q:
        seg = shmring.Segment.open(name)
        try:
            for i, (op, arg) in enumerate(ops):
                if op in ("put_bytes", "put", "put_many"):
                    if op == "put_bytes":
                        payload = bytes([i % 256]) * arg
                        recs = [(TAG_BYTES, payload, payload)]
                        call: Callable[[], Any] = lambda: q.put_bytes(payload, block=False)  # noqa: E731
                    elif op == "put":
                        value = ("o", i, b"x" * arg)
                        recs = [(TAG_VALUE, shmring._core.value_encode(value), value)]
                        call = lambda: q.put(value, block=False)  # noqa: E731
                    else:
                        values = [("m", i, j, b"y" * n) for j, n in enumerate(arg)]
                        recs = [(TAG_VALUE, shmring._core.value_encode(v), v) for v in values]
                        call = lambda: q.put_many_nowait(values)  # noqa: E731
                    expected = model.put(recs)
                    try:
                        call()
                        outcome = "ok"
                    except queue.Full:
                        outcome = "Full"
                    except ValueError:
                        outcome = "ValueError"
                    assert outcome == expected, (i, op, arg)
                else:
                    want = model.get(arg)
                    try:
                        if op == "get":
                            got = [q.get(block=False)]
                        elif op == "get_bytes":
                            got = [q.get_bytes(block=False)]
                        else:
                            got = q.get_many_nowait(max_messages_to_get=arg)
                    except queue.Empty:
                        got = []
                    if op == "get_bytes":  # a value-encoded item's bytes are its pickle
                        assert got == [pickle.dumps(v, pickle.HIGHEST_PROTOCOL) if t == TAG_VALUE else p
                                       for t, p, v in want], (i, op)
                    else:
                        assert got == [v if t == TAG_VALUE else p for t, p, v in want], (i, op)
                # counters and the bytes of every record
                buf = seg.buf
                assert (u64(buf, HEAD), u64(buf, TAIL)) == (model.head, model.tail), (i, op)
                assert q.qsize() == model.count and q.data_size() == model.data
                st_ = q.stats()
                assert st_["used_bytes"] == model.tail - model.head
                assert st_["overflow_chunks"] == len(model.chain) == len(chunk_files(name))
                for pos, tag, payload, _ in model.main:
                    at = DATA + pos % cap
                    assert struct.unpack_from("<II", buf, at) == (len(payload), tag), (i, op, pos)
                    if tag != TAG_PAD:
                        assert bytes(buf[at + 8 : at + 8 + len(payload)]) == payload
        finally:
            seg.close()
