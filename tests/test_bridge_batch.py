"""A topic's batches on the wire, without a network: the framing byte for
byte and at every boundary of the caps, damaged framing refused whole, the
exporter's grouping (a lone message alone, a large one alone, pickled
objects inside a batch), and the importer's bookkeeping across batches
(docs/BRIDGE.md, "Batches").  Between hosts: tests/bridge/."""

from __future__ import annotations

import pickle
import struct
from typing import Any

import pytest

from shmring.bridge.topic import ObjectSpec, TopicExporter, TopicImporter
from shmring.bridge.wire import (BATCH_MAX_BYTES, BATCH_MAX_MESSAGES, KIND_BATCH, KIND_BYTES, KIND_PICKLE, Header,
                                 WireError, batch_groups, pack_batch, unpack_batch)

from _bridge_helpers import FakeSample, FakeSession, close_importer, drain


def test_a_batch_is_a_table_of_lengths_a_table_of_kinds_then_the_bytes() -> None:
    payload = pack_batch([b"ab", b"", b"xyz"], bytes([KIND_BYTES, KIND_BYTES, KIND_PICKLE]))
    assert payload == ((2).to_bytes(4, "little") + (0).to_bytes(4, "little") + (3).to_bytes(4, "little")
                       + bytes([0, 0, 1]) + b"abxyz")
    messages, kinds = unpack_batch(payload, 3)
    assert [bytes(m) for m in messages] == [b"ab", b"", b"xyz"] and kinds == bytes([0, 0, 1])


def test_a_batch_header_carries_its_count_in_the_reserved_word() -> None:
    raw = Header(KIND_BATCH, 0x0102030405060708, 1000, 3).pack()
    assert raw == b"SR" + bytes([1, 4]) + (3).to_bytes(4, "little") + bytes(range(8, 0, -1)) + (1000).to_bytes(8, "little")
    assert Header.unpack(raw) == Header(KIND_BATCH, 0x0102030405060708, 1000, 3)
    # A single message's reserved word is not read (what a foreign program puts there).
    single = b"SR" + bytes([1, 0]) + (9).to_bytes(4, "little") + bytes(16)
    assert Header.unpack(single) == Header(KIND_BYTES, 0, 0, 0)


@pytest.mark.parametrize(("count", "seq", "message"), [
    (0, 0, "a batch of no message"),
    (2, (1 << 64) - 1, "runs past the last seq"),
])
def test_a_batch_header_that_cannot_be_is_refused(count: int, seq: int, message: str) -> None:
    with pytest.raises(WireError, match=message):
        Header.unpack(Header(KIND_BATCH, 1, seq, count).pack())


def test_a_batch_ending_at_the_last_seq_is_accepted() -> None:
    last = (1 << 64) - 1
    assert Header.unpack(Header(KIND_BATCH, 1, last - 1, 2).pack()).count == 2


def _table(lengths: list[int], kinds: bytes | None = None) -> bytes:
    return struct.pack(f"<{len(lengths)}I", *lengths) + (bytes(len(lengths)) if kinds is None else kinds)


@pytest.mark.parametrize(("payload", "count", "message"), [
    (b"", 1, "shorter than its tables"),
    (_table([3])[:4], 1, "shorter than its tables"),
    (_table([3, 2]) + b"abcd", 2, "lengths add up to 5 bytes, the payload has 4"),
    (_table([3, 2]) + b"abcdef", 2, "lengths add up to 5 bytes, the payload has 6"),
    (_table([1 << 31, 1]) + b"ab", 2, "lengths add up to"),
    (_table([1, 1], bytes([0, 2])) + b"ab", 2, "a message kind other than 0 and 1"),
])
def test_damaged_framing_is_refused_whole(payload: bytes, count: int, message: str) -> None:
    with pytest.raises(WireError, match=message):
        unpack_batch(payload, count)


def test_messages_are_grouped_up_to_the_byte_cap_exactly() -> None:
    overhead = 5  # a u32 length and a u8 kind per message
    exactly = [100] * 9 + [BATCH_MAX_BYTES - 10 * overhead - 900]
    assert batch_groups(exactly) == [(0, 10)]
    one_more = exactly[:-1] + [exactly[-1] + 1]
    assert batch_groups(one_more) == [(0, 9), (9, 10)]
    assert batch_groups([]) == []
    assert batch_groups([0, 0, 0]) == [(0, 3)]  # empty messages are messages


def test_a_message_larger_than_the_cap_goes_alone() -> None:
    big = BATCH_MAX_BYTES
    assert batch_groups([10, 10, big, 10, big, big, 10]) == [(0, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 7)]
    assert batch_groups([big, 10, 10]) == [(0, 1), (1, 3)]


def test_messages_are_grouped_up_to_the_message_cap() -> None:
    assert batch_groups([0] * (BATCH_MAX_MESSAGES + 1)) == [(0, BATCH_MAX_MESSAGES),
                                                            (BATCH_MAX_MESSAGES, BATCH_MAX_MESSAGES + 1)]
    assert batch_groups([1] * 10, max_bytes=1000, max_messages=4) == [(0, 4), (4, 8), (8, 10)]


def _messages_put(puts: list[tuple[bytes, Header]]) -> list[tuple[int, Any]]:
    """(seq, message) of every message in the samples put, decoded as a
    plain Zenoh subscriber would."""
    out: list[tuple[int, Any]] = []
    for payload, header in puts:
        if header.kind == KIND_BATCH:
            messages, kinds = unpack_batch(payload, header.count)
        else:
            messages, kinds = [memoryview(payload)], bytes([header.kind])
        for i, (message, kind) in enumerate(zip(messages, kinds)):
            out.append((header.seq + i, bytes(message) if kind == KIND_BYTES else pickle.loads(message)))
    return out


@pytest.mark.parametrize("batch", [True, False])
def test_the_exporter_groups_what_it_read_together(name: str, batch: bool) -> None:
    session = FakeSession()
    exporter = TopicExporter(session, ObjectSpec("topic", name), batch=batch)  # type: ignore[arg-type]
    try:
        first = exporter.next_seq
        exporter._send([b"lone"])
        big = bytes(BATCH_MAX_BYTES)
        read = [b"a", b"", {"an": "object"}, b"b", big, b"c", b"d"]
        exporter._send(read)
        status = exporter.status()
    finally:
        exporter._sub.close()
        exporter.topic.close()
    puts = session.publisher.puts
    assert _messages_put(puts) == [(first + i, m) for i, m in enumerate([b"lone"] + read)]
    if batch:
        assert [(h.kind, h.count) for _, h in puts] == [(KIND_BYTES, 0), (KIND_BATCH, 4), (KIND_BYTES, 0),
                                                         (KIND_BATCH, 2)]
    else:
        assert len(puts) == 8
    assert (status["sent"], status["samples"], status["next_seq"]) == (8, len(puts), first + 8)


def _batch(producer: int, seq: int, messages: list[bytes]) -> FakeSample:
    return FakeSample(pack_batch(messages, bytes(len(messages))),
                   Header(KIND_BATCH, producer, seq, len(messages)).pack())


def _single(producer: int, seq: int, kind: int = KIND_BYTES, payload: bytes | None = None) -> FakeSample:
    return FakeSample(b"%d" % seq if payload is None else payload, Header(kind, producer, seq).pack())


def _numbers(first: int, end: int) -> list[bytes]:
    return [b"%d" % n for n in range(first, end)]


def _import(name: str, samples: list[FakeSample],
            trust_pickle: bool = False) -> tuple[list[Any], dict[str, Any], list[int]]:
    """What a local subscriber gets from the importer given ``samples``:
    the messages, the importer's status, and the ``missed`` of each
    Lagged the subscriber raised (a gap the importer marked)."""
    importer = TopicImporter(FakeSession(), ObjectSpec("topic", name), trust_pickle)  # type: ignore[arg-type]
    subscription = importer.topic.subscribe()
    try:
        importer._take_many(samples)  # type: ignore[arg-type]
        delivered, missed = drain(subscription)
        return delivered, importer.status(), missed
    finally:
        subscription.close()
        close_importer(importer)


def test_the_importer_counts_gaps_and_duplicates_across_batches_exactly(name: str) -> None:
    damaged = FakeSample(_table([5]) + b"abc", Header(KIND_BATCH, 7, 30, 1).pack())
    delivered, status, missed = _import(name, [
        _batch(7, 0, _numbers(0, 10)),
        _batch(7, 15, _numbers(15, 20)),   # a gap of 5 (10 to 14)
        _batch(7, 18, _numbers(18, 25)),   # 18 and 19 again: dropped, 20 to 24 delivered
        _batch(7, 5, _numbers(5, 12)),     # all delivered before: dropped
        _single(7, 25), _single(7, 26),    # singles continue the stream
        _batch(7, 27, _numbers(27, 30)),
        damaged,                           # refused whole, the stream unchanged
        _single(7, 30),
    ])
    assert delivered == _numbers(0, 10) + _numbers(15, 31)
    assert {k: status[k] for k in ("delivered", "missed", "gaps", "duplicates", "rejected")} == {
        "delivered": 26, "missed": 5, "gaps": 1, "duplicates": 9, "rejected": 1}
    assert status["streams"] == {f"{7:016x}": 30}
    assert missed == [5]  # the local subscriber was told, where the 5 would have been


def test_a_batch_ending_at_the_last_seq_is_delivered_and_not_again(name: str) -> None:
    last = (1 << 64) - 1
    delivered, status, _ = _import(name, [_batch(9, last - 2, [b"x", b"y", b"z"]), _batch(9, last - 1, [b"y", b"z"])])
    assert delivered == [b"x", b"y", b"z"]
    assert (status["duplicates"], status["streams"]) == (2, {f"{9:016x}": last})


@pytest.mark.parametrize("trust_pickle", [True, False])
def test_pickled_messages_in_a_batch_keep_their_place(name: str, trust_pickle: bool) -> None:
    pickled = pickle.dumps(("an", "object"))
    sample = FakeSample(pack_batch([b"a", pickled, b"b", b"c"], bytes([0, 1, 0, 0])),
                     Header(KIND_BATCH, 3, 0, 4).pack())
    delivered, status, _ = _import(name, [sample, _single(3, 4, KIND_PICKLE, pickled), _single(3, 5)], trust_pickle)
    if trust_pickle:
        assert delivered == [b"a", ("an", "object"), b"b", b"c", ("an", "object"), b"5"]
        assert (status["delivered"], status["refused"]) == (6, 0)
    else:
        assert delivered == [b"a", b"b", b"c", b"5"]
        assert (status["delivered"], status["refused"]) == (4, 2)
    assert status["streams"] == {f"{3:016x}": 5}
