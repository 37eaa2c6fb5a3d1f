"""The queue's ring (docs/PROTOCOL.md 5): its layout seen through the segment
(the offsets the tests use are the header's), bounded rings
(max_size_bytes) that hold producers back with Full, and an empty ring that
takes any record that fits the ring, wherever its tail is.
"""

from __future__ import annotations

import queue
import re
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import shmring

from _queue_helpers import (
    BYTES, CAPACITY, CHUNK_KEY, COUNT, DATA, DATA_OFFSET, FLAGS, HEAD, LOCK_OWNER, MAXSIZE, OP_TIMEOUT, OVF_HEAD, SMALL,
    TAG_BYTES, TAG_VALUE, TAIL, chunk_files, later, park_tail, ring_counters,
)
from conftest import record_size, u64


def test_layout_offsets_match_header() -> None:
    header = "".join(p.read_text() for p in sorted((Path(__file__).resolve().parent.parent / "include").rglob("*.h")))
    asserted = dict(re.findall(r"offsetof\(shmring_queue_ctrl, (\w+)\) == (\d+)", header))
    offsets = {k: int(v) for k, v in asserted.items()}
    assert {k: offsets[k] for k in ("maxsize", "flags", "chunk_key", "lock", "head", "count", "ovf_head")} == {
        "maxsize": MAXSIZE, "flags": FLAGS, "chunk_key": CHUNK_KEY, "lock": LOCK_OWNER, "head": HEAD, "count": COUNT,
        "ovf_head": OVF_HEAD,
    }
    assert re.search(r"#define SHMRING_QUEUE_CTRL_SIZE %du" % DATA, header)
    body = header[header.index("typedef struct shmring_queue_ctrl") :]
    body = body[: body.index("} shmring_queue_ctrl;")]
    ring_fields = re.findall(r"uint64_t (\w+);", body[body.index("shmring_mutex lock") :])
    assert ring_fields[:6] == ["head", "tail", "count", "bytes", "ovf_head", "ovf_tail"]
    assert shmring._core.QUEUE_CTRL_SIZE == DATA


def test_layout_seen_through_the_segment(new_name: Callable[[], str]) -> None:
    name = new_name()
    with shmring.Queue(max_size_bytes=256, name=name) as q:
        q.put_bytes(b"abc")
        q.put("o")
        seg = shmring.Segment.open(name)
        try:
            buf = seg.buf
            assert u64(buf, CAPACITY) == 256 and u64(buf, DATA_OFFSET) == DATA
            encoded = shmring._core.value_encode("o")  # a str: value-encoded, not pickled
            assert encoded is not None
            obj_len = len(encoded)
            assert (u64(buf, HEAD), u64(buf, TAIL)) == (0, 16 + record_size(obj_len))
            assert (u64(buf, COUNT), u64(buf, BYTES)) == (2, 3 + obj_len)
            assert struct.unpack_from("<II", buf, DATA) == (3, TAG_BYTES)
            assert bytes(buf[DATA + 8 : DATA + 11]) == b"abc"
            assert struct.unpack_from("<II", buf, DATA + 16) == (obj_len, TAG_VALUE)
            assert bytes(buf[DATA + 24 : DATA + 24 + obj_len]) == encoded
            q.get_many()
            assert u64(buf, HEAD) == u64(buf, TAIL) and u64(buf, COUNT) == 0
        finally:
            seg.close()


# -- bounded rings ----------------------------------------------------------------


def test_bounded_ring_blocks_producers_with_full(name: str) -> None:
    with shmring.Queue(max_size_bytes=256, name=name) as q:
        assert q.bounded and q.capacity == 256
        for i in range(4):
            q.put_bytes(bytes([i]) * 56)  # 4 records of 64 bytes fill 256
        assert q.stats()["used_bytes"] == 256 and q.full()  # no room for even a 1-byte item
        with pytest.raises(queue.Full):
            q.put_bytes(b"x", block=False)
        with pytest.raises(queue.Full):
            q.put_nowait(1)
        t0 = time.monotonic()
        with pytest.raises(queue.Full):
            q.put_bytes(b"x", timeout=0.2)
        assert 0.18 <= time.monotonic() - t0 < 1.5
        assert q.stats()["overflow_chunks"] == 0 and chunk_files(name) == []
        t = later(0.2, lambda: q.get_bytes(timeout=OP_TIMEOUT))
        t0 = time.monotonic()
        q.put_bytes(b"y" * 56, timeout=OP_TIMEOUT)
        assert time.monotonic() - t0 >= 0.15
        t.join(5)
        assert q.get_many() == [bytes([i]) * 56 for i in (1, 2, 3)] + [b"y" * 56]
        # wrap-around: records of different sizes around the ring
        for n in range(200):
            data = bytes([n]) * (n % 90)
            q.put_bytes(data, timeout=1)
            assert q.get_bytes(timeout=1) == data


def test_ring_exactly_full_then_drained(name: str) -> None:
    with shmring.Queue(max_size_bytes=64, name=name) as q:
        q.put_bytes(b"a" * 56)  # one record of exactly 64 bytes
        assert q.stats()["used_bytes"] == 64
        with pytest.raises(queue.Full):
            q.put_bytes(b"", block=False)
        assert q.get_bytes() == b"a" * 56
        q.put_bytes(b"")
        q.put_bytes(b"b" * 40)
        assert q.stats()["used_bytes"] == 8 + 48
        assert q.get_bytes() == b"" and q.get_bytes() == b"b" * 40


# -- an empty ring takes any record that fits the ring, wherever its tail is -------------


def test_bounded_queue_places_a_record_that_fits_an_empty_ring(name: str) -> None:
    """Regression (issue 9, item 4): after one 4072-byte item went through an
    8 KiB ring, a 4112-byte item fitted the ring but not after the padding in
    front of it, and put waited for room on an empty queue until Full."""
    with shmring.Queue(max_size_bytes=8192, name=name) as q:
        q.put_bytes(b"x" * 4072)
        assert q.get_bytes() == b"x" * 4072
        q.put_bytes(b"y" * 4112, timeout=2)
        assert q.stats()["used_bytes"] == record_size(4112)  # the padding was stepped over, not kept
        assert q.get_bytes(timeout=OP_TIMEOUT) == b"y" * 4112
        assert q.empty() and q.stats()["used_bytes"] == 0


@pytest.mark.parametrize("pos", range(0, SMALL, 8))
def test_empty_ring_takes_any_fitting_record_at_every_offset(pos: int, name: str) -> None:
    """Tail parked at every offset of an empty ring; records of every size
    that matters there: empty payload, one record position short of the end,
    an exact fit, one position past the end (the record wraps), and the whole
    ring.  Each is placed at once, whole, where the layout says, and comes
    back intact."""
    contig = SMALL - pos
    needs = sorted({n for n in (8, contig - 8, contig, contig + 8, SMALL) if 8 <= n <= SMALL})
    with shmring.Queue(max_size_bytes=SMALL, name=name) as q, shmring.Segment.open(name) as seg:
        for need in needs:
            park_tail(q, seg, pos)
            _, tail = ring_counters(seg)
            payload = bytes([need % 251]) * (need - 8 - (need > 8))  # odd lengths too: padded to 8
            assert record_size(len(payload)) == need
            q.put_bytes(payload, block=False)
            head2, tail2 = ring_counters(seg)
            assert tail2 - head2 == need, "the empty ring keeps no padding in front of the record"
            start = tail2 - need
            assert start % SMALL == (pos if need <= contig else 0), (pos, need)
            assert start == (tail if need <= contig else tail + contig)
            if need == SMALL:
                with pytest.raises(queue.Full):
                    q.put_bytes(b"", block=False)  # full: even an empty record waits
            assert q.get_bytes(block=False) == payload
            assert q.empty() and q.stats()["used_bytes"] == 0


@pytest.mark.parametrize("pos", range(16, SMALL - 8, 8))
def test_one_short_of_the_end_then_the_next_record_pads(pos: int, name: str) -> None:
    """A record that leaves exactly one 8-byte position before the end: the
    next one (the ring is not empty) goes to offset 0 behind an 8-byte
    padding record, and both come out in order."""
    contig = SMALL - pos
    with shmring.Queue(max_size_bytes=SMALL, name=name) as q, shmring.Segment.open(name) as seg:
        park_tail(q, seg, pos)
        first = b"a" * (contig - 16)  # a record of contig - 8 bytes
        q.put_bytes(first, block=False)
        q.put_bytes(b"b" * 8, block=False)
        head, tail = ring_counters(seg)
        assert tail - head == (contig - 8) + 8 + 16  # the padding stays until a get steps over it
        assert struct.unpack_from("<II", seg.buf, 384 + SMALL - 8) == (0, 0x50)
        assert tail % SMALL == 16
        assert q.get_many_nowait() == [first, b"b" * 8]
        assert q.stats()["used_bytes"] == 0


def test_ring_that_is_not_empty_still_waits_for_room(name: str) -> None:
    """Only an empty ring restarts at offset 0: a record behind another one
    waits for the room it needs after the padding, as before."""
    with shmring.Queue(max_size_bytes=SMALL, name=name) as q, shmring.Segment.open(name) as seg:
        park_tail(q, seg, 200)
        q.put_bytes(b"k" * 8, block=False)  # 16 bytes at 200: 40 left before the end
        with pytest.raises(queue.Full):
            q.put_bytes(b"w" * 200, block=False)  # 208 bytes: needs 40 + 208 > 240 free
        assert ring_counters(seg)[1] % SMALL == 216
        assert q.get_bytes(block=False) == b"k" * 8
        q.put_bytes(b"w" * 200, block=False)  # now empty: placed from offset 0
        assert q.get_bytes(block=False) == b"w" * 200


@pytest.mark.parametrize("pos", range(0, SMALL, 8))
def test_put_many_fits_an_empty_ring_at_every_offset(pos: int, name: str) -> None:
    """A batch that fits the ring (records of SMALL bytes in all) is placed on
    an empty ring wherever its tail is: one record before the end and the
    next one past it would need more than the ring with the padding between."""
    with shmring.Queue(max_size_bytes=SMALL, name=name, dumps=bytes, loads=bytes) as q, \
            shmring.Segment.open(name) as seg:
        park_tail(q, seg, pos)
        batch = [b"1" * (SMALL - 32 - 8), b"2" * (32 - 8)]  # records of SMALL - 32 and 32 bytes
        q.put_many_nowait(batch)
        head, tail = ring_counters(seg)
        assert tail - head == SMALL
        assert q.get_many_nowait() == batch
