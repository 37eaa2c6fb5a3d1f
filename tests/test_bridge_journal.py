"""The queue exporter's lease journal (docs/BRIDGE.md "Queues", PROTOCOL.md
section 9): what is out is in shared memory until acknowledged, and a later
exporter puts the items of a dead one back into the queue, at least once,
with no more duplicates than the dead one had leased and not had
acknowledged.  No network: the exporters run in a Zenoh session of their
own, and the tests call them the way a take request would."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from shmring import Queue, Segment, _core
from shmring.bridge.queue_journal import (DATA_OFFSET, DONE, ENTRY, OUT, LeaseJournal, _token, entry_size,
                                          journal_names, read_entries, recover)
from shmring.sync import AtomicInt64


@pytest.fixture
def queue() -> Iterator[Queue[object]]:
    q: Queue[object] = Queue(name=f"bj-{uuid.uuid4().hex[:12]}")
    yield q
    q.close()


def mine(queue: Queue[object]) -> list[str]:
    """The journals of ``queue`` (by their writer's queue name)."""
    found = []
    for name in journal_names():
        with open(f"/dev/shm/{name}", "rb") as f:
            if queue.name.encode() in f.read(_core.HEADER_SIZE + DATA_OFFSET):
                found.append(name)
    return found


def state(queue: Queue[object]) -> tuple[int, int, bool]:
    stats = queue.stats()
    return stats["queue_id"], stats["gets"], False


def put_back(queue: Queue[object]) -> Callable[[list[tuple[int, bytes]]], int]:
    def put(items: list[tuple[int, bytes]]) -> int:
        queue.put_many([payload for _, payload in items])
        return len(items)
    return put


def entries(journal: LeaseJournal) -> list[int]:
    file = journal.files[0]
    return [item_id for item_id, _, _ in read_entries(file.buf, file.head, file.tail)[0]]


def test_a_journal_holds_what_is_out_and_lets_go_of_what_is_acknowledged(queue: Queue[object]) -> None:
    journal = LeaseJournal(queue.name, exporter_id=2**64 - 1, queue_id=queue.stats()["queue_id"])
    try:
        journal.begin_take(5, gets=0)
        journal.record([(0, b"x" * n) for n in range(5)], first_id=100)  # one entry: a take
        journal.end_take()
        journal.record([(1, b"pickle")], first_id=105)
        file = journal.files[0]
        assert file.tail == entry_size(5, 10) + entry_size(1, 6) == 56 + 32 and file.taking.load() == 0
        # the first entry: count, its take's tag (gets 0), first id, a state byte per item, lengths, kinds, payloads
        first_entry = bytes(file.buf[DATA_OFFSET:DATA_OFFSET + 56])  # (no slice of the mapping kept by the assert)
        assert first_entry == (
            ENTRY.pack(5, 0x80000000, 100) + bytes([OUT] * 5) + struct.pack("=5I", 0, 1, 2, 3, 4) + bytes(5) + b"x" * 10)
        journal.release([101, 103, 999, 42])  # ids it does not hold are skipped
        assert entries(journal) == [100, 102, 104, 105] and file.head == 0, "head waits for the whole entry"
        assert file.buf[DATA_OFFSET + ENTRY.size + 1] == DONE and len(journal) == 4
        journal.release([100, 102, 104, 104])
        assert file.head == 56 and entries(journal) == [105] and len(journal) == 1
        journal.release([105])
        assert file.head == file.tail == 0 and len(journal) == 0, "an empty file starts again at 0"
        assert mine(queue) == [file.name]
    finally:
        journal.discard()
    assert mine(queue) == []


def test_a_full_file_goes_on_in_a_new_one_and_a_drained_older_one_goes(queue: Queue[object]) -> None:
    journal = LeaseJournal(queue.name, 1, queue.stats()["queue_id"], file_bytes=256)
    try:
        for first in range(0, 8, 2):
            journal.record([(0, bytes(40))] * 2, first_id=first)  # 112 bytes an entry: 2 per file
        journal.record([(1, bytes(1000))], first_id=8)  # larger than a file: a file of its own size
        assert [len(read_entries(f.buf, f.head, f.tail)[0]) for f in journal.files] == [4, 4, 1]
        assert journal.files[2].capacity == entry_size(1, 1000)
        assert len(mine(queue)) == 3
        journal.release(range(4))
        assert len(journal.files) == 2 and len(mine(queue)) == 2
        journal.release([0, 1])  # again, from a file that is gone: nothing happens
        assert len(journal) == 5
    finally:
        journal.discard()
    assert mine(queue) == []


CHILD = """
import sys, time
from shmring.bridge.queue_journal import LeaseJournal
journal = LeaseJournal(sys.argv[1], 7, int(sys.argv[2]))
journal.record([(0, b"item %d" % n) for n in range(int(sys.argv[3]))], first_id=0)
journal.begin_take(int(sys.argv[4]), int(sys.argv[5]))
print("ready", flush=True)
time.sleep(60)
"""


def dead_writer(queue: Queue[object], items: int, taking: int = 0, gets: int = 0) -> str:
    """A journal of ``items`` entries (b"item N") whose writer was SIGKILLed,
    while taking ``taking`` items with the queue's ``gets`` at ``gets``."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, queue.name, str(queue.stats()["queue_id"]), str(items),
                              str(taking), str(gets)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    child.stdout.close()
    [name] = mine(queue)
    return name


def test_a_dead_writers_items_go_back_once_and_its_journal_goes(queue: Queue[object]) -> None:
    dead_writer(queue, 3)
    found = recover(queue.name, put_back(queue), lambda: state(queue))
    assert (found.items, found.files, found.maybe_lost) == (3, 1, 0)
    assert queue.get_many_nowait(10) == [b"item 0", b"item 1", b"item 2"]
    assert mine(queue) == []
    assert recover(queue.name, put_back(queue), lambda: state(queue)).items == 0


def test_a_journal_claimed_by_a_live_process_is_left_to_it(queue: Queue[object]) -> None:
    name = dead_writer(queue, 2)
    segment = Segment.open(name)
    claim = AtomicInt64(segment, 32)
    try:
        claim.store(_token(1))  # init: alive, and not this process
        assert recover(queue.name, put_back(queue), lambda: state(queue)).items == 0 and queue.empty()
        claim.store(_token(os.getpid()) + (1 << 22))  # this pid with another start time: a dead claimer
        assert recover(queue.name, put_back(queue), lambda: state(queue)).items == 2
    finally:
        segment.close()
    assert queue.qsize() == 2 and mine(queue) == []


def test_a_writer_killed_while_taking_is_reported_with_what_the_queue_lost(queue: Queue[object]) -> None:
    dead_writer(queue, 0, taking=10, gets=queue.stats()["gets"])
    assert recover(queue.name, put_back(queue), lambda: state(queue)).maybe_lost == 0, "the queue lost nothing"
    queue.put_many([1, 2, 3])
    gets = queue.stats()["gets"]
    queue.get_many_nowait(3)  # as if the dead writer had taken them
    dead_writer(queue, 0, taking=10, gets=gets)
    assert recover(queue.name, put_back(queue), lambda: state(queue)).maybe_lost == 3
    assert mine(queue) == []


TAKE_INTO_A_NEW_FILE = """
import sys, time
from shmring import Queue
from shmring.bridge.queue_journal import LeaseJournal
queue = Queue.open(sys.argv[1])
journal = LeaseJournal(sys.argv[1], 7, queue.stats()["queue_id"], file_bytes=256)
journal.record([(0, bytes(40))] * 2, first_id=0)  # 112 bytes: the next take's 336 do not fit after it
journal.begin_take(3, queue.stats()["gets"])
taken = queue.get_many_nowait(3)
journal.record([(0, item) for item in taken], first_id=2)  # committed in a new file
print(len(journal.files), flush=True)  # killed before end_take
time.sleep(60)
"""


def test_a_writer_killed_after_committing_its_take_in_a_new_file_lost_nothing(queue: Queue[object]) -> None:
    """The take's mark is where its entry is committed: a writer killed
    between that commit and the mark's clearing reports no loss (its items
    are put back), whichever file the take went into."""
    queue.put_many([b"a" * 100, b"b" * 100, b"c" * 100])
    child = subprocess.Popen([sys.executable, "-c", TAKE_INTO_A_NEW_FILE, queue.name], stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "2"
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    child.stdout.close()
    assert queue.empty() and len(mine(queue)) == 2
    found = recover(queue.name, put_back(queue), lambda: state(queue))
    assert (found.items, found.files, found.maybe_lost) == (5, 2, 0)
    assert sorted(queue.get_many_nowait(10)) == sorted([b"a" * 100, b"b" * 100, b"c" * 100, bytes(40), bytes(40)])
    assert mine(queue) == []


EXPORTER = """
import sys, time, zenoh
from shmring.bridge import zenoh_config
from shmring.bridge.queue import QueueExporter
from shmring.bridge.topic import ObjectSpec
session = zenoh.open(zenoh_config([], []))
exporter = QueueExporter(session, ObjectSpec("queue", sys.argv[1]), lease_timeout=60)
for _ in range(3):
    sent = exporter._items_for(importer=1, credit=100, now=0.0)
    print(" ".join(lease.payload.decode() for lease in sent), flush=True)
    # the importer put the first 70 of each window into its queue; 30 of
    # them reached the exporter as acknowledgements before it was killed
    exporter.acknowledge([lease.item_id for lease in sent[:30]])
print("ready", flush=True)
time.sleep(60)
"""


def test_a_killed_exporters_leased_items_are_put_back_by_the_next_one(queue: Queue[object]) -> None:
    pytest.importorskip("zenoh", reason="the zenoh extra (pip install shmring[zenoh]) is in the dev extra")
    import zenoh

    from shmring.bridge import zenoh_config
    from shmring.bridge.queue import QueueExporter
    from shmring.bridge.topic import ObjectSpec

    queue.put_many([b"%d" % n for n in range(1000)])
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(EXPORTER), queue.name], stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout is not None
    windows = [child.stdout.readline().split() for _ in range(3)]
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    child.stdout.close()
    delivered = [int(n) for window in windows for n in window[:70]]
    assert queue.qsize() == 700 and len(mine(queue)) == 1
    session = zenoh.open(zenoh_config([], []))
    exporter = QueueExporter(session, ObjectSpec("queue", queue.name), lease_timeout=5)
    try:
        status = exporter.status()
        assert (status["recovered"], status["recovered_journals"], status["maybe_lost"]) == (210, 1, 0)
        assert len(mine(queue)) == 1, "the dead one's journal went; this exporter's is there"
    finally:
        exporter.close()
        session.close()
    counts = Counter(delivered + [int(n) for n in queue.get_many_nowait(2000)])
    assert set(counts) == set(range(1000)), "every item at least once"
    duplicates = sum(n - 1 for n in counts.values())
    assert duplicates == 3 * 40, "what was put into the importer's queue and not acknowledged comes twice"
    assert duplicates <= 3 * 100 and max(counts.values()) == 2
    assert mine(queue) == []


def test_adoption_into_a_full_queue_puts_back_what_fits_and_the_rest_later() -> None:
    """A's queue full, drained only by the exporter's own importers: the
    adoption of a dead exporter's journal must not wait for room (nothing
    would make it), but put back what fits, keep the rest in the journal for
    the next look, and put every item back exactly once in the end."""
    pytest.importorskip("zenoh", reason="the zenoh extra (pip install shmring[zenoh]) is in the dev extra")
    import threading

    import zenoh

    from shmring.bridge import zenoh_config
    from shmring.bridge.queue import QueueExporter
    from shmring.bridge.topic import ObjectSpec

    queue: Queue[object] = Queue(10, name=f"bj-{uuid.uuid4().hex[:12]}")
    session = zenoh.open(zenoh_config([], []))
    try:
        queue.put_many([b"old %d" % n for n in range(10)])  # full
        dead_writer(queue, 5)
        made: list[QueueExporter] = []
        starting = threading.Thread(target=lambda: made.append(QueueExporter(session, ObjectSpec("queue", queue.name))),
                                    daemon=True)
        starting.start()
        starting.join(20)
        assert made, "the exporter started with the queue full"
        exporter = made[0]
        try:
            assert exporter.status()["recovered"] == 0 and len(mine(queue)) == 2, "the journal is kept for later"
            served = [lease.payload for lease in exporter._items_for(importer=1, credit=3, now=0.0)]
            assert len(served) == 3, "it serves meanwhile"
            exporter._adopt()
            assert exporter.status()["recovered"] == 3 and len(mine(queue)) == 2, "what fits, the rest kept"
            drained = queue.get_many_nowait(20)
            exporter._adopt()
            assert exporter.status()["recovered"] == 5 and len(mine(queue)) == 1, "the rest, and the journal goes"
            drained += queue.get_many_nowait(20)
            exporter.acknowledge([lease.item_id for lease in exporter.leases.outstanding()])
        finally:
            exporter.close()
        counts = Counter(served + drained)
        assert counts == Counter([b"old %d" % n for n in range(10)] + [b"item %d" % n for n in range(5)])
        assert mine(queue) == []
    finally:
        session.close()
        queue.close()
