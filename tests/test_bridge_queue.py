"""A queue bridged between hosts, without a network: the queue's wire
header and acknowledgement lists byte for byte, the exporter's leases (sent
again with the same id once expired, cancelled by a late acknowledgement)
and the importer's acknowledgements and duplicate window (docs/BRIDGE.md).
The bridge between hosts is tested in tests/bridge/test_queue_bridge.py."""

from __future__ import annotations

import uuid

import pytest

from shmring.bridge.queue_wire import (KIND_RECEIPT, KIND_TAKE, Acknowledgements, Leases, QueueHeader, pack_ids,
                                       queue_key, unpack_ids)
from shmring.bridge.wire import KIND_BYTES, WireError


def test_a_take_request_is_24_little_endian_bytes_and_a_list_of_ids() -> None:
    raw = QueueHeader(KIND_TAKE, 256, 0x0102030405060708, 2).pack()
    assert raw == b"SR" + bytes([1, 3]) + (256).to_bytes(4, "little") + bytes(range(8, 0, -1)) + (2).to_bytes(8, "little")
    assert QueueHeader.unpack(raw) == QueueHeader(KIND_TAKE, 256, 0x0102030405060708, 2)
    assert pack_ids([1, 2**64 - 1]) == (1).to_bytes(8, "little") + b"\xff" * 8
    assert unpack_ids(pack_ids([5, 6, 7]), 3) == [5, 6, 7]
    assert queue_key("jobs") == "shmring/queue/jobs"


@pytest.mark.parametrize("raw", [None, b"SR" + bytes(21), b"SR" + bytes([1, 9]) + bytes(20),
                                 b"SR" + bytes([2, 2]) + bytes(20)])
def test_a_queue_header_that_is_not_ours_is_refused(raw: bytes | None) -> None:
    with pytest.raises(WireError):
        QueueHeader.unpack(raw)


def test_an_acknowledgement_list_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(WireError, match="for 3 acknowledgements"):
        unpack_ids(pack_ids([1, 2]), 3)


def test_acknowledged_items_are_forgotten() -> None:
    leases = Leases(timeout=10)
    sent = [leases.lease(importer=1, kind=KIND_BYTES, payload=b"%d" % n, now=0) for n in range(3)]
    assert [s.item_id for s in sent] == [0, 1, 2] and all(s.attempt == 1 for s in sent)
    assert leases.acknowledge([0, 2]) == 2
    assert [s.item_id for s in leases.outstanding()] == [1] and len(leases) == 1
    assert leases.expire(now=9.9) == 0


def test_an_expired_item_goes_out_again_first_with_its_id() -> None:
    leases = Leases(timeout=10)
    for n in range(3):
        leases.lease(importer=1, kind=KIND_BYTES, payload=b"%d" % n, now=n)
    assert leases.expire(now=11) == 2  # items 0 and 1: their deadlines (10 and 11) passed
    again = leases.redeliveries(importer=2, limit=5, now=11)
    assert [(s.item_id, s.payload, s.attempt, s.importer) for s in again] == [(0, b"0", 2, 2), (1, b"1", 2, 2)]
    assert leases.lease(importer=2, kind=KIND_BYTES, payload=b"3", now=11).item_id == 3
    assert leases.counters.expired == 2 and leases.counters.redelivered == 2
    assert [s.item_id for s in leases.outstanding()] == [0, 1, 2, 3]


def test_a_late_acknowledgement_cancels_the_redelivery() -> None:
    leases = Leases(timeout=1)
    leases.lease(importer=1, kind=KIND_BYTES, payload=b"x", now=0)
    assert leases.expire(now=5) == 1
    assert leases.acknowledge([0]) == 1  # it came after the deadline, before the item went out again
    assert leases.redeliveries(importer=1, limit=10, now=5) == [] and len(leases) == 0
    assert leases.acknowledge([0]) == 0 and leases.counters.unknown_acks == 1  # sent again: harmless


def test_the_importer_acknowledges_until_a_receipt_and_drops_what_it_has_seen() -> None:
    acks = Acknowledgements(remember=3)
    assert acks.accept(exporter=7, item_id=0) and acks.accept(exporter=7, item_id=1)
    assert not acks.accept(exporter=7, item_id=0)  # a duplicate: dropped, acknowledged again
    assert acks.accept(exporter=8, item_id=0)  # another exporter's ids are its own
    assert acks.pending == [0, 1, 0, 0] and acks.duplicates == 1
    acks.confirmed(3)
    assert acks.pending == [0]
    for item_id in (2, 3, 4):
        assert acks.accept(exporter=7, item_id=item_id)
    assert acks.accept(exporter=7, item_id=1), "remembers the last 3 ids of each exporter only"
    assert KIND_RECEIPT == 2 and KIND_TAKE == 3


def test_a_stopping_exporter_puts_unacknowledged_items_back() -> None:
    pytest.importorskip("zenoh", reason="the zenoh extra (pip install shmring[zenoh]) is in the dev extra")
    import zenoh

    from shmring import Queue
    from shmring.bridge import zenoh_config
    from shmring.bridge.queue import QueueExporter
    from shmring.bridge.topic import ObjectSpec

    name = f"bq-{uuid.uuid4().hex[:12]}"
    queue: Queue[object] = Queue(name=name)
    queue.put_many([b"a", b"b", ("c", 3)])
    session = zenoh.open(zenoh_config([], []))
    exporter = QueueExporter(session, ObjectSpec("queue", name), lease_timeout=5)
    exporter.start()
    try:
        sent = exporter._items_for(importer=1, credit=3, now=0.0)
        first = sent[0].item_id  # a random start: see Leases
        assert [(lease.kind, lease.item_id - first) for lease in sent] == [(0, 0), (0, 1), (1, 2)]
        assert queue.empty() and len(exporter.journal) == 3
        assert exporter.acknowledge([first + 1]) == 1 and len(exporter.journal) == 2
    finally:
        exporter.close()
        session.close()
    assert queue.get_many(timeout=1) == [b"a", ("c", 3)]
    assert exporter.status()["returned"] == 2
    queue.close()
