"""The importer's cursor (shmring.bridge.cursor): what a killed importer
leaves for its successor, read back whole whatever the moment of the kill,
and the reckoning of the last write against the local object's counters."""

from __future__ import annotations

import multiprocessing
import os
import signal
import uuid

import pytest

import shmring
from _cli_helpers import cli
from shmring.bridge.cursor import (PREFIX, SIZE, SLOTS, Cursor, Intent, channel_resume, channel_write_end,
                                   cursor_name, topic_resume)
from shmring.sync import AtomicInt64

BIG = (1 << 64) - 5  # a producer id past 2**63: stored as a signed word, read back as it was


def unique(prefix: str = "cur") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_the_name_comes_from_the_object_and_a_long_one_is_hashed() -> None:
    assert cursor_name("topic", "prices") == f"{PREFIX}topic-prices"
    long = cursor_name("channel", "x" * 250)
    assert long.startswith(f"{PREFIX}channel-") and len(long) <= 254
    assert long == cursor_name("channel", "x" * 250) != cursor_name("channel", "y" * 250)


def test_a_new_cursor_is_empty_and_records_intents_and_streams() -> None:
    cursor = Cursor.attach("topic", unique(), 42)
    try:
        assert cursor.intent() is None and cursor.streams() == {}
        cursor.begin(BIG, 10, 5, 100)
        assert cursor.intent() == Intent(BIG, 10, 5, 100, 0)
        assert cursor.streams() == {BIG: 10}, "a producer gets its slot at its first intent"
        cursor.done(BIG, 15)
        cursor.begin(7, 0, 3, 105)
        cursor.done(7, 3)
        assert cursor.streams() == {BIG: 15, 7: 3} and cursor.intent() == Intent(7, 0, 3, 105, 0)
    finally:
        cursor.close()


def _write_then_die(name: str, kill_in_begin: bool) -> None:
    """A child importer: two writes' bookkeeping, then killed, at the end or
    half-way through the third intent (its words stored, not its gen)."""
    cursor = Cursor.attach("topic", name, 42)
    cursor.begin(9, 0, 4, 0)
    cursor.done(9, 4)
    cursor.begin(9, 4, 6, 4)
    cursor.done(9, 10)
    if kill_in_begin:
        gen = AtomicInt64(cursor.segment, 24).load()  # the intent slots are at 64 and 128: PROTOCOL.md 9
        slot = 64 + 64 * ((gen + 1) % 2)
        for field, value in enumerate((9, 10, 99, 10, 0)):
            AtomicInt64(cursor.segment, slot + 8 * field).store(value)
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
@pytest.mark.parametrize("kill_in_begin", [False, True])
def test_a_killed_importer_leaves_its_cursor_whole_for_its_successor(start_method: str, kill_in_begin: bool) -> None:
    name = unique()
    child = multiprocessing.get_context(start_method).Process(target=_write_then_die, args=(name, kill_in_begin))
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    assert os.path.exists(f"/dev/shm/{cursor_name('topic', name)}"), "a killed importer's cursor stays"
    cursor = Cursor.attach("topic", name, 42)
    try:
        assert cursor.streams() == {9: 10}
        assert cursor.intent() == Intent(9, 4, 6, 4), "an intent half written is not taken: the last whole one is"
    finally:
        cursor.close()
    assert not os.path.exists(f"/dev/shm/{cursor_name('topic', name)}"), "closed by its last user: removed"


def test_a_cursor_of_another_incarnation_or_kind_is_started_anew() -> None:
    name = unique()
    first = Cursor.attach("topic", name, 1)
    try:
        first.begin(3, 0, 1, 0)
        first.done(3, 1)
        second = Cursor.attach("topic", name, 2)  # the local topic was made anew
        try:
            assert second.intent() is None and second.streams() == {}
        finally:
            second.close()
    finally:
        first.close()


def test_a_damaged_cursor_segment_is_started_anew() -> None:
    name = unique()
    segment = shmring.Segment.create(cursor_name("topic", name), SIZE)
    try:
        segment.buf[0:SIZE] = b"\xff" * SIZE
        cursor = Cursor.attach("topic", name, 5)
        try:
            assert cursor.intent() is None and cursor.streams() == {}
        finally:
            cursor.close()
    finally:
        segment.close()


def _hostile_words(segment: shmring.Segment, offset: int, value: int) -> None:
    AtomicInt64(segment, offset).store(value)


@pytest.mark.parametrize("offset,value", [(32, 1000), (32, -1), (40, 7), (24, -5)],
                         ids=["used-past-slots", "used-negative", "slots-changed", "gen-negative"])
def test_a_cursor_with_counts_out_of_range_is_started_anew(offset: int, value: int) -> None:
    """Shared memory is untrusted: a cursor whose magic, layout and object
    are right but whose counts are not is made anew, not read past its end."""
    name = unique()
    cursor = Cursor.attach("topic", name, 5)
    try:
        cursor.begin(3, 0, 1, 0)
        cursor.done(3, 1)
        _hostile_words(cursor.segment, offset, value)
        again = Cursor.attach("topic", name, 5)
        try:
            assert again.intent() is None and again.streams() == {}
            again.begin(4, 0, 2, 0)
            assert again.streams() == {4: 0}
        finally:
            again.close()
    finally:
        cursor.close()
    assert not os.path.exists(f"/dev/shm/{cursor_name('topic', name)}")


def test_a_segment_too_small_or_not_ours_at_the_cursor_name_is_replaced() -> None:
    small, foreign, taken = unique(), unique(), unique()
    shmring.Segment.create(cursor_name("topic", small), 64, persistent=True).close()  # left, too small
    with open(f"/dev/shm/{cursor_name('channel', foreign)}", "wb") as f:
        f.write(b"not a segment of ours" * 100)
    channel = shmring.Channel.create(cursor_name("channel", taken), capacity=4096)  # another kind of object
    try:
        for kind, name in (("topic", small), ("channel", foreign), ("channel", taken)):
            cursor = Cursor.attach(kind, name, 9)
            try:
                assert cursor.segment.kind == "segment" and cursor.segment.size >= SIZE
                assert cursor.intent() is None and cursor.streams() == {}
                cursor.begin(1, 0, 1, 0)
                assert cursor.intent() == Intent(1, 0, 1, 0)
            finally:
                cursor.close()
            assert not os.path.exists(f"/dev/shm/{cursor_name(kind, name)}")
    finally:
        channel.close()


def test_a_killed_importers_cursor_is_kept_by_gc() -> None:
    """A killed importer's cursor is used by no live process: persistent,
    `shmring gc` keeps it for the successor (which reports the loss)."""
    name = unique()
    child = multiprocessing.get_context("spawn").Process(target=_write_then_die, args=(name, False))
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    seg_name = cursor_name("topic", name)
    result = cli("gc", "--dry-run")  # what gc would remove (a real run would also take other tests' leftovers)
    assert result.returncode == 0, result.stderr
    assert seg_name not in result.stdout
    cursor = Cursor.attach("topic", name, 42)
    try:
        assert cursor.segment.persistent and cursor.streams() == {9: 10}
    finally:
        cursor.close()
    assert not os.path.exists(f"/dev/shm/{seg_name}"), "a clean close removes it"


def test_more_producers_than_slots_are_not_remembered_and_nothing_breaks() -> None:
    cursor = Cursor.attach("topic", unique(), 1)
    try:
        for producer in range(SLOTS + 3):
            cursor.begin(producer, 0, 1, producer)
            cursor.done(producer, 1)
        assert len(cursor.streams()) == SLOTS
    finally:
        cursor.close()


def test_topic_resume_applies_the_last_write_as_far_as_it_went_in() -> None:
    streams = {1: 50, 2: 10}
    assert topic_resume(streams, None, 0) == streams
    done = Intent(1, 40, 10, 1000)
    assert topic_resume(streams, done, 1010) == streams, "write and record both done"
    pending = Intent(2, 10, 8, 1000)
    assert topic_resume(streams, pending, 1000) == {1: 50, 2: 10}, "killed before anything went in"
    assert topic_resume(streams, pending, 1003) == {1: 50, 2: 13}, "killed part-way: three went in"
    assert topic_resume(streams, pending, 1008) == {1: 50, 2: 18}, "killed between the write and its record"
    assert topic_resume({}, Intent(3, 7, 2, 0), 2) == {3: 9}, "a new stream's first write"
    assert topic_resume(streams, pending, 5000)[2] == 18, "never past the write"


def test_channel_resume_in_every_window_of_a_write() -> None:
    intent = Intent(5, 100, 4, 1000, tail=8192, end=8320)
    assert channel_resume(intent, 1000, 8192) == 100, "killed before the write"
    assert channel_resume(intent, 1000, 8256) == 100, "a timed-out write published only padding"
    assert channel_resume(intent, 1004, 8192) == 100, "killed between the count's store and the tail's"
    assert channel_resume(intent, 1004, 8320) == 104, "written, the record not made"
    assert channel_resume(intent, 1002, 8320) is None, "counters no write of this importer explains"


def test_channel_resume_does_not_take_a_padding_record_for_the_write() -> None:
    """The write padded to the end of the ring and published that padding
    while it waited for room; then killed between the count's store and the
    tail's: the tail moved, but only by the padding, and nothing went in."""
    intent = Intent(5, 100, 4, 1000, tail=8192 + 4000, end=2 * 8192 + 4 * 112)
    assert channel_resume(intent, 1004, 2 * 8192) == 100, "count stored, tail moved only by the padding"
    assert channel_resume(intent, 1004, intent.end) == 104
    legacy = Intent(5, 100, 4, 1000, tail=8192)  # a cursor without the end: the tail moved at all
    assert channel_resume(legacy, 1004, 8320) == 104 and channel_resume(legacy, 1004, 8192) == 100


def test_channel_write_end_places_records_as_the_channel_does() -> None:
    """The end predicted before each send_many is the tail the channel has
    after it: records placed in line, one behind a padding record at the
    wrap, and a batch that only fits from offset 0 behind a padding record."""
    channel = shmring.Channel.create(unique("curch"), capacity=4096)
    try:
        for batch in ([100] * 3, [100] * 28, [100] * 5, [40, 3000], [100] * 36, [1, 2, 3], [4088]):
            tail = channel.stats()["tail"]
            end = channel_write_end(tail, 4096, batch)
            assert channel.send_many([b"m" * n for n in batch]) == len(batch)
            assert channel.stats()["tail"] == end, (tail, batch)
            assert len(channel.recv_many(len(batch))) == len(batch)
    finally:
        channel.close()


def test_a_channel_write_moves_the_counters_the_cursor_reads_all_or_nothing() -> None:
    """What channel_resume relies on: a send_many that fits in the ring is
    published whole, or (timed out) not at all."""
    channel = shmring.Channel.create(unique("curch"), capacity=4096)
    try:
        before = channel.stats()
        intent = Intent(1, 0, 3, before["sent_messages"], before["tail"])
        assert channel.send_many([b"a" * 100] * 3) == 3
        after = channel.stats()
        assert channel_resume(intent, after["sent_messages"], after["tail"]) == 3
        intent = Intent(1, 3, 34, after["sent_messages"], after["tail"])
        with pytest.raises(shmring.Timeout):
            channel.send_many([b"b" * 100] * 34, timeout=0.05)  # 34 records of 112 bytes: fit the ring, not the room left
        late = channel.stats()
        assert channel_resume(intent, late["sent_messages"], late["tail"]) == 3
    finally:
        channel.close()


def test_a_topic_counts_a_gap_marker_as_its_message_numbers() -> None:
    """What topic_resume relies on for a marker: published moves by its count."""
    topic = shmring.Topic.create(unique("curtp"), capacity=1 << 16)
    try:
        publisher = topic.publisher()
        publisher.send_many([b"x", b"y"])
        before = topic.stats()["published"]
        publisher.send_gap(1234)
        assert topic.stats()["published"] == before + 1234
        publisher.close()
    finally:
        topic.close()
