"""What a topic's importer does with a loss, without a network: the
exporter's high-water mark (kind 5) byte for byte and in the bookkeeping,
a loss at the very end of a stream reported when the mark comes, and every
gap marked in the local topic, where subscribers raise Lagged with the
count at the place of the lost messages (docs/BRIDGE.md).  Between hosts:
tests/bridge/test_faults_bridge.py."""

from __future__ import annotations

from typing import Any

import pytest

import shmring
from shmring.bridge.topic import ObjectSpec, TopicExporter, TopicImporter
from shmring.bridge.wire import KIND_BYTES, KIND_HIGH_WATER, Header, Streams, high_water_header

from _bridge_helpers import FakeSample, FakeSession, close_importer

pytest.importorskip("zenoh", reason="the importer's handler comes from the zenoh extra")


def test_a_high_water_mark_is_a_header_of_kind_5_with_the_next_seq() -> None:
    raw = high_water_header(0x0102030405060708, 42)
    assert raw == b"SR" + bytes([1, 5]) + bytes(4) + bytes(range(8, 0, -1)) + (42).to_bytes(8, "little")
    assert Header.unpack(raw) == Header(KIND_HIGH_WATER, 0x0102030405060708, 42)


def test_streams_count_what_a_high_water_mark_says_never_came() -> None:
    streams = Streams()
    assert streams.high_water(7, 10) is None  # an unknown stream: joined there, nothing counted
    assert streams.judge(7, 10).missed == 0
    assert streams.high_water(7, 11) == 0  # all delivered
    assert streams.high_water(7, 15) == 4  # 11 to 14 never came
    assert streams.high_water(7, 12) == 0  # stale: nothing counted twice
    assert streams.judge(7, 15).missed == 0  # the stream goes on from the mark
    assert streams.judge(7, 14).deliver is False


def test_the_exporter_marks_its_high_water_after_what_it_sent(name: str) -> None:
    session = FakeSession()
    exporter = TopicExporter(session, ObjectSpec("topic", name))  # type: ignore[arg-type]
    try:
        first = exporter.next_seq
        exporter._send([b"a", b"b", b"c"])
        exporter._send_high_water()
        status = exporter.status()
    finally:
        exporter._sub.close()
        exporter.topic.close()
    payload, mark = session.publisher.puts[-1]
    assert (payload, mark) == (b"", Header(KIND_HIGH_WATER, exporter.producer, first + 3))
    assert status["marks"] == 1


def test_a_matched_exporter_marks_its_high_water_again_when_nothing_changes(name: str) -> None:
    """The mark of an idle stream is sent again (one put into a dead
    session is lost): two of them with nothing published in between."""
    session = FakeSession()
    exporter = TopicExporter(session, ObjectSpec("topic", name))  # type: ignore[arg-type]
    exporter.start()
    try:
        assert session.publisher.put_twice.wait(20)
    finally:
        exporter.close()
    marks = [h for _, h in session.publisher.puts]
    assert len(marks) >= 2 and all(h == Header(KIND_HIGH_WATER, exporter.producer, exporter.next_seq) for h in marks)


def _single(producer: int, seq: int) -> FakeSample:
    return FakeSample(b"%d" % seq, Header(KIND_BYTES, producer, seq).pack())


def _mark(producer: int, next_seq: int, payload: bytes = b"") -> FakeSample:
    return FakeSample(payload, high_water_header(producer, next_seq))


def _read_all(subscription: Any) -> list[Any]:
    """What a local subscriber reads, one call at a time: messages, and
    ("lagged", missed) where it raised Lagged."""
    out: list[Any] = []
    while True:
        try:
            out.append(subscription.recv(timeout=0))
        except shmring.Lagged as e:
            assert e.upstream
            out.append(("lagged", e.missed))
        except shmring.Timeout:
            return out


@pytest.mark.parametrize("policy", ["block", "overwrite"])
def test_a_loss_at_the_end_of_a_stream_is_reported_when_the_mark_comes(name: str, policy: str) -> None:
    importer = TopicImporter(FakeSession(), ObjectSpec("topic", name, policy=policy))  # type: ignore[arg-type]
    subscription = importer.topic.subscribe()
    try:
        importer._take_many([_single(7, 0), _single(7, 1), _mark(7, 2), _single(7, 2), _single(7, 3), _single(7, 6),
                             _mark(7, 10)])  # type: ignore[list-item]
        importer._take_many([_mark(7, 10), _mark(7, 4)])  # type: ignore[list-item]  # again, then stale
        read = _read_all(subscription)
        status = importer.status()
        published = importer.topic.stats()["published"]
    finally:
        subscription.close()
        close_importer(importer)
    assert read == [b"0", b"1", b"2", b"3", ("lagged", 2), b"6", ("lagged", 3)]
    assert {k: status[k] for k in ("delivered", "missed", "gaps")} == {"delivered": 5, "missed": 5, "gaps": 2}
    assert status["streams"] == {f"{7:016x}": 9}, "the stream's position: up to the mark, its gap included"
    assert published == 10  # the local topic's numbers follow the stream's, lost ones included


def test_a_mark_joins_a_new_stream_and_a_mark_with_a_payload_is_refused(name: str) -> None:
    importer = TopicImporter(FakeSession(), ObjectSpec("topic", name))  # type: ignore[arg-type]
    subscription = importer.topic.subscribe()
    try:
        importer._take_many([_mark(9, 100), _single(9, 100), _mark(9, 105, b"x"), _single(9, 101)])  # type: ignore[list-item]
        read = _read_all(subscription)
        status = importer.status()
    finally:
        subscription.close()
        close_importer(importer)
    assert read == [b"100", b"101"]
    assert (status["missed"], status["gaps"], status["rejected"]) == (0, 0, 1)
    assert status["streams"] == {f"{9:016x}": 101}

