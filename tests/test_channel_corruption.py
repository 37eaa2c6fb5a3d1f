"""Garbage written into a channel's shared memory by a hostile peer: every
read and write in the victim raises CorruptedError (a ValueError) at once,
never a crash, a hang or a message of garbage; impossible configurations are
refused at open, and the configuration is read once.  The offsets used here
are the header's (test_layout_offsets_match_header), and records forged by
hand at them are read like the producer's own.
"""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shmring
from shmring import Channel

from _channel_helpers import CTRL, DATA, REC_DATA, REC_PAD, Agent, Hostile, make_msg, size_mix
from conftest import FORK, Kids, record_size


def test_layout_offsets_match_header() -> None:
    text = "".join(p.read_text() for p in sorted(Path(shmring.get_include()).rglob("*.h")))  # shmring.h and shmring/*.h
    asserted = {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"offsetof\(shmring_channel_ctrl,\s*(\w+)\)\s*==\s*(\d+)", text)
    }
    for field, off in CTRL.items():
        assert asserted.get(field) == off, f"{field}: header says {asserted.get(field)}, tests use {off}"
    ctrl_size = re.search(r"#define SHMRING_CHANNEL_CTRL_SIZE (\d+)u", text)
    assert ctrl_size is not None and int(ctrl_size.group(1)) == DATA
    assert re.search(r"#define SHMRING_REC_DATA 0x52u", text)
    assert re.search(r"#define SHMRING_REC_PAD 0x50u", text)
    assert "sizeof(shmring_record) == 8" in text


# -- the reader's side -------------------------------------------------------


def _corrupt_tail_far_ahead(ch: Channel, h: Hostile) -> None:
    h.tail = h.head + 2 * h.capacity


def _corrupt_tail_behind_head(ch: Channel, h: Hostile) -> None:
    h.tail = h.head - 8


def _corrupt_tail_misaligned(ch: Channel, h: Hostile) -> None:
    h.tail = h.head + 12


def _corrupt_tail_off_by_3(ch: Channel, h: Hostile) -> None:
    h.tail = h.head + 3


def _corrupt_len_larger_than_ring(ch: Channel, h: Hostile) -> None:
    ch.send(b"victim record")
    length, tag = h.record(h.head)
    assert (length, tag) == (13, REC_DATA)
    h.put_record(h.head, 4 * h.capacity, REC_DATA)


def _corrupt_len_max_u32(ch: Channel, h: Hostile) -> None:
    ch.send(b"victim record")
    h.put_record(h.head, 0xFFFFFFFF, REC_DATA)


def _corrupt_len_beyond_tail(ch: Channel, h: Hostile) -> None:
    ch.send(b"victim record")  # 24-byte record; the ring has room for more
    h.put_record(h.head, 100, REC_DATA)


def _corrupt_unknown_tag(ch: Channel, h: Hostile) -> None:
    ch.send(b"victim record")
    h.put_record(h.head, 13, 0x41)


def _corrupt_zero_tag(ch: Channel, h: Hostile) -> None:
    ch.send(b"victim record")
    h.put_record(h.head, 13, 0)


def _corrupt_pad_wrong_len(ch: Channel, h: Hostile) -> None:
    room = h.capacity - h.head % h.capacity
    h.put_record(h.head, 8, REC_PAD)  # should be room - 8
    h.tail = h.head + room


def _corrupt_pad_too_long(ch: Channel, h: Hostile) -> None:
    room = h.capacity - h.head % h.capacity
    h.put_record(h.head, room, REC_PAD)  # 8 bytes past the end of the ring
    h.tail = h.head + room


def _corrupt_pad_beyond_tail(ch: Channel, h: Hostile) -> None:
    room = h.capacity - h.head % h.capacity
    h.put_record(h.head, room - 8, REC_PAD)  # right length, but not all published
    h.tail = h.head + 24


READER_CORRUPTIONS: dict[str, Callable[[Channel, Hostile], None]] = {
    "tail-far-beyond-head+capacity": _corrupt_tail_far_ahead,
    "tail-behind-head": _corrupt_tail_behind_head,
    "tail-misaligned": _corrupt_tail_misaligned,
    "tail-off-by-3": _corrupt_tail_off_by_3,
    "record-len-larger-than-ring": _corrupt_len_larger_than_ring,
    "record-len-0xffffffff": _corrupt_len_max_u32,
    "record-len-beyond-tail": _corrupt_len_beyond_tail,
    "unknown-tag": _corrupt_unknown_tag,
    "zero-tag": _corrupt_zero_tag,
    "padding-wrong-len": _corrupt_pad_wrong_len,
    "padding-past-ring-end": _corrupt_pad_too_long,
    "padding-beyond-tail": _corrupt_pad_beyond_tail,
}


def _assert_corrupted(call: Callable[[], Any], name: str) -> None:
    with pytest.raises(shmring.CorruptedError, match="corrupted ring") as ei:
        call()
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, shmring.Error)
    assert name in str(ei.value)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", list(READER_CORRUPTIONS))
def test_corrupted_ring_reader(case: str, channel: Callable[..., Channel], kids: Kids,
                               raw: Callable[[str], Hostile]) -> None:
    """Garbage in the counters or record headers: every read in the victim
    process raises CorruptedError (a ValueError) and the process survives."""
    ch = channel(256, "block")
    victim = Agent(kids, FORK, ch.name, "block")
    ch.send(b"warm-up")
    assert victim("recv", timeout=5) == b"warm-up"
    assert victim("try_recv") is None  # head published: head == tail
    h = raw(ch.name)
    assert h.head == h.tail == record_size(7)
    READER_CORRUPTIONS[case](ch, h)
    t0 = time.monotonic()
    _assert_corrupted(lambda: victim("recv", timeout=1.0), ch.name)
    assert time.monotonic() - t0 < 1.0, "corruption must be reported at once, not after the timeout"
    _assert_corrupted(lambda: victim("recv"), ch.name)  # no timeout: must not block
    _assert_corrupted(lambda: victim("try_recv"), ch.name)
    _assert_corrupted(lambda: victim("recv_many", 10, timeout=1.0), ch.name)
    _assert_corrupted(lambda: victim("peek", timeout=1.0), ch.name)
    _assert_corrupted(lambda: victim("recv_into", bytearray(256), timeout=1.0), ch.name)
    assert isinstance(victim("stats"), dict)
    assert victim.stop() == 0, "the victim did not exit cleanly"


# -- the writer's side -------------------------------------------------------


def _corrupt_head_ahead_of_tail(h: Hostile) -> None:
    h.head = h.tail + 8


def _corrupt_head_misaligned(h: Hostile) -> None:
    h.head = h.tail - h.capacity + 4


def _corrupt_head_far_behind(h: Hostile) -> None:
    h.head = h.tail - 2 * h.capacity


WRITER_CORRUPTIONS: dict[str, Callable[[Hostile], None]] = {
    "head-ahead-of-tail": _corrupt_head_ahead_of_tail,
    "head-misaligned": _corrupt_head_misaligned,
    "head-far-behind": _corrupt_head_far_behind,
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", list(WRITER_CORRUPTIONS))
def test_corrupted_ring_writer(case: str, channel: Callable[..., Channel], kids: Kids,
                               raw: Callable[[str], Hostile]) -> None:
    """A garbage head seen by a producer waiting for room: CorruptedError."""
    ch = channel(256, "block")
    victim = Agent(kids, FORK, ch.name, "block")
    assert ch.try_recv() is None  # this process is the consumer
    assert victim("fill", 8) == 256 // 16
    h = raw(ch.name)
    assert h.tail - h.head == 256
    WRITER_CORRUPTIONS[case](h)
    _assert_corrupted(lambda: victim("send", b"y", timeout=1.0), ch.name)
    _assert_corrupted(lambda: victim("send", b"y"), ch.name)
    _assert_corrupted(lambda: victim("try_send", b"y"), ch.name)
    _assert_corrupted(lambda: victim("send_many", [b"y"], timeout=1.0), ch.name)
    assert victim.stop() == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("role", ["consumer", "producer"])
def test_corrupted_counters_refused_at_claim(role: str, channel: Callable[..., Channel], kids: Kids,
                                             raw: Callable[[str], Hostile]) -> None:
    """Impossible counters when an end is claimed: CorruptedError, and the
    failed claim is given back (once repaired, the same process can claim)."""
    ch = channel(256, "block")
    victim = Agent(kids, FORK, ch.name, "block")
    h = raw(ch.name)
    if role == "consumer":
        h.tail = 4
        _assert_corrupted(lambda: victim("recv", timeout=0.1), ch.name)
        assert ch.stats()["consumer_pid"] == 0
        h.tail = 0
        with pytest.raises(shmring.Timeout):
            victim("recv", timeout=0.1)
        ch.send(b"repaired")
        assert victim("recv", timeout=5) == b"repaired"
    else:
        h.head = 12
        _assert_corrupted(lambda: victim("send", b"x", timeout=0.1), ch.name)
        assert ch.stats()["producer_pid"] == 0
        h.head = 0
        victim("send", b"repaired", timeout=1)
        assert ch.recv(timeout=5) == b"repaired"
    assert victim.stop() == 0


def test_hostile_semaphore_count_cannot_hang_a_timed_recv(name: str) -> None:
    with shmring.Channel.create(name, 1024, "semaphore") as ch:
        with shmring.Segment.open(name) as raw:
            # data_sem.count of the control block (docs/PROTOCOL.md 3.1)
            raw.buf[392:396] = struct.pack("<I", 0x80000000)
        t0 = time.monotonic()
        with pytest.raises(shmring.Timeout):
            ch.recv(timeout=0.2)
        assert time.monotonic() - t0 < 2


# -- the configuration --------------------------------------------------------

CONFIG_GARBAGE = [
    ("capacity", 0),
    ("capacity", 1),
    ("capacity", 63),
    ("capacity", 100),
    ("capacity", 255),
    ("capacity", 512),  # a power of two larger than the segment holds
    ("capacity", 1 << 33),
    ("capacity", (1 << 64) - 1),
    ("data_offset", 0),
    ("data_offset", 8),
    ("data_offset", 648),
    ("data_offset", 1 << 63),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("field", "value"), CONFIG_GARBAGE)
def test_open_refuses_garbage_config(field: str, value: int, channel: Callable[..., Channel], kids: Kids,
                                     raw: Callable[[str], Hostile]) -> None:
    ch = channel(256, "block")
    h = raw(ch.name)
    h.put_u64(CTRL[field], value)
    victim = Agent(kids, FORK, None)
    with pytest.raises(shmring.CorruptedError) as ei:
        victim("open", ch.name)
    assert isinstance(ei.value, ValueError)
    assert victim.stop() == 0


@pytest.mark.timeout(30)
def test_config_is_read_once(channel: Callable[..., Channel], kids: Kids, raw: Callable[[str], Hostile]) -> None:
    """After attaching, garbage written into the configuration changes
    nothing (each side keeps its own checked copy); garbage in the default
    strategy or spin window is replaced by sane values at open."""
    ch = channel(256, "block")
    victim = Agent(kids, FORK, ch.name)
    producer = Agent(kids, FORK, ch.name)
    producer("send", b"one", timeout=5)
    assert victim("recv", timeout=5) == b"one"
    h = raw(ch.name)
    h.put_u64(CTRL["capacity"], 3)
    h.put_u64(CTRL["data_offset"], 1 << 40)
    with pytest.raises(shmring.CorruptedError):
        Channel.open(ch.name)  # a new opener is refused...
    sizes = size_mix("mixed", 256)
    producer.start("send_seq", "send", 0, 2000, sizes)
    assert victim("recv_seq", "recv", 0, 2000, sizes) == 2000  # ...but those attached carry on
    assert producer.reply() == 2000
    assert victim.stop() == 0
    # Garbage strategy / spin window: opened with the defaults instead.
    other = channel(256, "spin")
    h2 = raw(other.name)
    h2.put_u32(CTRL["wait"], 99)
    h2.put_u32(CTRL["spin_ns"], 0xFFFFFFFF)
    probe = Agent(kids, FORK, None)
    probe("open", other.name)
    assert probe("timed", "recv", timeout=0.05)[0] == "raised"
    assert probe.stop() == 0
    reopened = Channel.open(other.name)
    try:
        assert reopened.wait == "adaptive"
        assert reopened.spin_ns == shmring._core.CHANNEL_DEFAULT_SPIN_NS
    finally:
        reopened.close()


@pytest.mark.timeout(30)
def test_forged_valid_records_are_accepted(channel: Callable[..., Channel], kids: Kids,
                                           raw: Callable[[str], Hostile]) -> None:
    """Positive control for the offsets above: records forged by hand at the
    documented offsets (a message, a padding record to the end of the ring,
    a message at offset 0) are read like the producer's own."""
    capacity = 256
    ch = channel(capacity, "block")
    h = raw(ch.name)
    h.put_record(0, 5, REC_DATA, b"hello")
    h.tail = 16
    victim = Agent(kids, FORK, ch.name)
    assert victim("recv", timeout=5) == b"hello"
    assert victim("try_recv") is None
    assert h.head == 16
    h.put_record(16, capacity - 16 - 8, REC_PAD)
    h.put_record(capacity, 5, REC_DATA, b"world")
    h.tail = capacity + 16  # the ring is exactly full: 240 bytes of padding + 16
    assert victim("recv", timeout=5) == b"world"
    assert victim("try_recv") is None
    assert h.head == capacity + 16
    assert victim.stop() == 0


# -- fuzz ---------------------------------------------------------------------

FUZZ_CAPACITY = 256

_fuzz_write = st.one_of(
    st.tuples(st.just("data"), st.integers(0, FUZZ_CAPACITY - 1), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("ctrl"), st.integers(0, DATA - 1), st.binary(min_size=1, max_size=8)),
    st.tuples(
        st.sampled_from(["tail", "head"]),
        st.one_of(st.integers(-3 * FUZZ_CAPACITY, 3 * FUZZ_CAPACITY), st.integers(0, (1 << 64) - 1)),
        st.booleans(),  # relative to the current value, or absolute
    ),
    st.tuples(
        st.just("record"),
        st.integers(0, FUZZ_CAPACITY // 8 - 1),
        st.one_of(st.integers(0, 2 * FUZZ_CAPACITY), st.integers(0, (1 << 32) - 1)),
        st.sampled_from([REC_DATA, REC_PAD, 0, 0x41, 0xFFFFFFFF]),
    ),
)


_fuzz_action = st.one_of(
    st.sampled_from([("try_recv", None), ("recv", None), ("peek", None), ("recv_into", None), ("stats", None)]),
    st.tuples(st.just("recv_many"), st.integers(1, 40)),
    st.tuples(st.sampled_from(["try_send", "send"]), st.binary(max_size=56)),
)


@pytest.mark.timeout(120)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.integers(0, 56), max_size=12),
    writes=st.lists(_fuzz_write, min_size=1, max_size=8),
    reopen_stream=st.booleans(),
    actions=st.lists(_fuzz_action, min_size=1, max_size=25),
)
def test_fuzz_garbage_never_crashes(sizes: list[int], writes: list[Any], reopen_stream: bool,
                                    actions: list[tuple[str, Any]], new_name: Callable[[], str],
                                    kids: Kids) -> None:
    """Random bytes at random offsets of the ring and control block, random
    counters and record headers; then reads and writes in a victim process:
    each returns or raises a shmring.Error, and the victim never dies.  One
    long-lived victim process runs every example (a new one after a crash)."""
    victim = next((a for a in reversed(kids.items) if isinstance(a, Agent) and a.proc.is_alive()), None)
    if victim is None:
        victim = Agent(kids, FORK, None)
    name = new_name()
    ch = Channel.create(name, FUZZ_CAPACITY, "block")
    h = None
    try:
        for i, n in enumerate(sizes):
            if not ch.try_send(make_msg(i, n)):
                break
        h = Hostile(name)  # attached first: the channel outlives its creator's close
        ch.close()  # gives the producer end back (and ends the stream...)
        if reopen_stream:
            h.put_u32(CTRL["writer_closed"], 0)  # ...unless the fuzz reopens it
        for w in writes:
            if w[0] == "data":
                _, off, data = w
                h.write(DATA + off, data[: FUZZ_CAPACITY - off])
            elif w[0] == "ctrl":
                _, off, data = w
                h.write(off, data[: DATA - off])
            elif w[0] in ("tail", "head"):
                field, value, relative = w
                h.put_u64(CTRL[field], (h.u64(CTRL[field]) + value) if relative else value)
            else:
                _, slot, length, tag = w
                h.put_record(slot * 8, length, tag)
        results = victim("fuzz", name, actions, _timeout=30)
        bad = [r for r in results if r[1].startswith("BAD")]
        assert not bad, bad
    finally:
        if h is not None:
            h.close()
        ch.close()  # the last handle out removes it
