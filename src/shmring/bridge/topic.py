"""A topic carried over Zenoh: the exporter reads a local topic with a
subscription of its own and puts every message on the network; the importer
takes samples from the network and publishes them into a local topic.

The sequence number on the wire is the topic's own message number, so that
every message lost anywhere between the two topics (the exporter lagging, a
sample dropped or never sent, a bridge that was not running) shows up at the
importer as a gap of exactly that many: docs/BRIDGE.md."""

from __future__ import annotations

import logging
import pickle
import struct
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._errors import Closed, Lagged, Timeout
from ..topic import Subscription, Topic
from .cursor import Cursor, topic_resume
from .wire import (BATCH_MAX_MESSAGES, HEADER, HEADER_AFTER_PREFIX, KIND_BATCH, KIND_BYTES, KIND_HIGH_WATER,
                   KIND_PICKLE, MAGIC, VERSION, Header, Streams, WireError, batch_groups, high_water_header,
                   incarnation_id, open_or_create, pack_batch, topic_key, unpack_batch)

if TYPE_CHECKING:
    import zenoh

__all__ = ["ObjectSpec", "TopicExporter", "TopicImporter", "open_topic"]

log = logging.getLogger("shmring.bridge")

# Samples a subscriber's handler holds for the importer's thread.
_HANDLER_DEPTH = 4096
# How many samples the importer takes from Zenoh at once.
_BATCH = 256
# How many messages the exporter takes from its subscription at once: what
# it finds there, never waiting for more, is what it groups into batches.
_EXPORT_TAKE = BATCH_MAX_MESSAGES
# How often a waiting exporter looks whether it was told to stop (seconds).
_POLL_S = 0.2
# How often a block exporter with no importer looks again (seconds).
_MATCH_POLL_S = 0.05
# Subscribing while publishers publish: tries at a subscription whose
# first message number is known (section 6.3: it is the topic's next_seq
# at the moment the slot is taken).
_SUBSCRIBE_TRIES = 100
# How often a matched exporter sends its high-water mark (seconds): the
# importer learns from it a loss at the end of a stream, which no later
# message would reveal.
_HIGH_WATER_S = 0.5
# The largest gap a local topic's marker can say (Publisher.send_gap takes
# a signed 64-bit count); a larger one (only a hostile sender's) is cut.
_MAX_MARKED_GAP = (1 << 63) - 1


@dataclass(frozen=True)
class ObjectSpec:
    """One object a bridge carries: ``kind:name``, and for one it creates,
    the topic's policy and capacity."""

    kind: str
    name: str
    policy: str = "block"
    capacity: int = 1 << 20


def open_topic(spec: ObjectSpec) -> Topic:
    """The local topic of ``spec``: opened, or created if there is none."""
    return open_or_create(lambda: Topic.open(spec.name),
                          lambda: Topic.create(spec.name, capacity=spec.capacity, policy=spec.policy))  # type: ignore[arg-type]


def producer_id(topic: Topic) -> int:
    """An id of this incarnation of the topic on this host: the same for
    every exporter of it, another one if the topic is made anew."""
    return incarnation_id(b"", topic.name, topic._segment._mapping.header())


def _subscribe_numbered(topic: Topic) -> tuple[Subscription[Any], int]:
    """A subscription and the number of the first message it will read: the
    topic's message count, read before and after subscribing, is the same
    (no publish came in between) or the subscription is taken again."""
    for _ in range(_SUBSCRIBE_TRIES):
        before = topic.stats()["published"]
        sub: Subscription[Any] = topic.subscribe()
        if topic.stats()["published"] == before:
            return sub, int(before)
        sub.close()
    sub = topic.subscribe()
    log.warning("topic %s: busy publishers; the first sequence number sent may be off by a few", topic.name)
    return sub, int(topic.stats()["published"])


@dataclass
class ExportCounters:
    sent: int = 0
    samples: int = 0
    lagged: int = 0
    marks: int = 0


class TopicExporter:
    """Local topic -> Zenoh.  ``block`` topics use Zenoh's blocking
    congestion control (a full network queue stops this thread, whose
    subscription then holds back the local publishers); ``overwrite`` ones
    drop, and the importer counts what was dropped.

    ``batch``: the messages found waiting together go out several to a
    sample (kind "batch", docs/BRIDGE.md); otherwise one sample each, for
    plain Zenoh subscribers that read one message per sample.

    ``spin_ns``: how long the exporter's reads poll the ring before they
    sleep (None: the topic's own setting)."""

    def __init__(self, session: zenoh.Session, spec: ObjectSpec, batch: bool = True,
                 spin_ns: int | None = None) -> None:
        import zenoh

        self.spec = spec
        self.batch = batch
        self.topic = open_topic(spec)
        self.producer = producer_id(self.topic)
        self.matched = False
        block = self.topic.policy == "block"
        self._publisher = session.declare_publisher(
            topic_key(spec.name),
            congestion_control=zenoh.CongestionControl.BLOCK if block else zenoh.CongestionControl.DROP,
            reliability=zenoh.Reliability.RELIABLE,
        )
        self._sub, self.next_seq = _subscribe_numbered(self.topic)
        if spin_ns is not None:
            self._sub.spin_ns = spin_ns
        # The first 16 bytes of a bytes message's header: the same for every one.
        self._bytes_prefix = HEADER.pack(MAGIC, VERSION, KIND_BYTES, 0, self.producer, 0)[:16]
        self.counters = ExportCounters()
        self._high_water_due = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"export topic:{spec.name}", daemon=True)
        log.info("topic %s: exporting as producer %016x from seq %d", spec.name, self.producer, self.next_seq)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        import zenoh

        try:
            self._carry()
        except zenoh.ZError:  # the session was closed: the bridge is closing
            return

    def _matched(self) -> bool:
        """Whether a subscriber on the network (an importer) matches, logged
        when it changes.  The exporter reads nothing while none does: the
        messages wait in the local ring ("block": its publishers wait for
        room; "overwrite": the oldest are overwritten, and the exporter's
        Lagged turns them into a gap that the importer reports)."""
        status: Any = self._publisher.matching_status
        matched = bool(getattr(status, "matching", status))
        if matched != self.matched:
            self.matched = matched
            log.info("topic %s: %s", self.spec.name, "importer matched" if matched else "no importer matches")
        return matched

    def _carry(self) -> None:
        while not self._stop.is_set():
            if not self._matched():
                self._stop.wait(_MATCH_POLL_S)
                continue
            if time.monotonic() >= self._high_water_due:
                self._send_high_water()
            try:
                batch = self._sub.recv_many(_EXPORT_TAKE, timeout=_POLL_S)
            except Timeout:
                continue
            except Lagged as e:  # overwritten before this exporter read them: the importer sees the gap
                self.next_seq += e.missed
                self.counters.lagged += e.missed
                log.warning("topic %s: exporter lagged, %d messages overwritten before they were sent",
                            self.spec.name, e.missed)
                continue
            except Closed:
                return
            self._send(batch)

    def _send_high_water(self) -> None:
        """Say, after every message put so far and on the same publisher,
        the number of the next one: an importer that did not get them all
        learns that the rest were lost, even if no message follows
        (docs/BRIDGE.md).  Sent every _HIGH_WATER_S while an importer
        matches, changed or not: a mark put into a dead session is lost
        too."""
        self._publisher.put(b"", attachment=high_water_header(self.producer, self.next_seq))
        self.counters.marks += 1
        self._high_water_due = time.monotonic() + _HIGH_WATER_S

    def _send(self, batch: list[Any]) -> None:
        """What one ``recv_many`` gave, at once: a lone message (nothing
        else was waiting) goes alone, so batching never adds latency."""
        if self.batch and len(batch) > 1:
            self._send_batched(batch)
        else:
            self._send_singly(batch)

    def _send_singly(self, batch: list[Any]) -> None:
        """One put per message, with as little Python around it as can be:
        without batching, this loop is the exporter's whole cost per message
        (docs/BENCHMARKS.md, the bridge)."""
        put = self._publisher.put
        pack_bytes_header = HEADER_AFTER_PREFIX.pack
        prefix = self._bytes_prefix
        seq = self.next_seq
        try:
            for message in batch:
                if type(message) is bytes:
                    put(message, attachment=pack_bytes_header(prefix, seq))
                else:
                    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
                    put(payload, attachment=HEADER.pack(MAGIC, VERSION, KIND_PICKLE, 0, self.producer, seq))
                seq += 1
        finally:  # the messages put before a failure count as sent
            self.counters.samples += seq - self.next_seq
            self.counters.sent += seq - self.next_seq
            self.next_seq = seq

    def _send_batched(self, batch: list[Any]) -> None:
        """The messages taken together, in order, a batch per sample within
        the caps (wire.batch_groups); a group of one (a message too large
        for a batch) goes as a single message."""
        payloads, kinds = _payloads_and_kinds(batch)
        put = self._publisher.put
        first = seq = self.next_seq
        samples = 0
        try:
            for start, end in batch_groups([len(p) for p in payloads]):
                if end - start == 1:
                    put(payloads[start], attachment=HEADER.pack(MAGIC, VERSION, kinds[start], 0, self.producer, seq))
                else:
                    put(pack_batch(payloads[start:end], kinds[start:end]),
                        attachment=HEADER.pack(MAGIC, VERSION, KIND_BATCH, end - start, self.producer, seq))
                samples += 1
                seq = first + end
        finally:  # the samples put before a failure count as sent
            self.counters.samples += samples
            self.counters.sent += seq - first
            self.next_seq = seq

    def status(self) -> dict[str, Any]:
        return {"direction": "export", "matched": self.matched, "producer": f"{self.producer:016x}", "next_seq": self.next_seq,
                "batch": self.batch, "sent": self.counters.sent, "samples": self.counters.samples,
                "lagged": self.counters.lagged, "marks": self.counters.marks}

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sub.close()
        self._publisher.undeclare()  # type: ignore[no-untyped-call]
        self.topic.close()


def _payloads_and_kinds(batch: list[Any]) -> tuple[list[bytes], bytes]:
    """The bytes on the wire of each message read (a bytes message as it
    is, any other object pickled) and their kinds, one byte each."""
    if all(type(message) is bytes for message in batch):
        return batch, bytes(len(batch))
    payloads: list[bytes] = []
    kinds = bytearray(len(batch))
    for i, message in enumerate(batch):
        if type(message) is bytes:
            payloads.append(message)
        else:
            payloads.append(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
            kinds[i] = KIND_PICKLE
    return payloads, bytes(kinds)


@dataclass
class ImportCounters:
    delivered: int = 0
    missed: int = 0
    gaps: int = 0
    duplicates: int = 0
    rejected: int = 0
    refused: int = 0


def _expected_header(prefix: bytes, seq: int) -> bytes | None:
    """The header of the bytes message numbered ``seq`` of the stream whose
    headers start with ``prefix``; None (which no attachment equals) when
    there is no stream yet or ``seq`` is past the last one."""
    if not prefix or seq >= 1 << 64:
        return None
    return HEADER_AFTER_PREFIX.pack(prefix, seq)


class TopicImporter:
    """Zenoh -> local topic.  Samples wait in a bounded FIFO (``block``:
    a full one holds back Zenoh, and so the exporter) or a bounded ring
    (``overwrite``: the oldest are dropped, and counted as a gap)."""

    def __init__(self, session: zenoh.Session, spec: ObjectSpec, trust_pickle: bool = False) -> None:
        import zenoh

        self.spec = spec
        self.trust_pickle = trust_pickle
        self.topic = open_topic(spec)
        self._publisher = self.topic.publisher()
        handler: Any = (zenoh.handlers.FifoChannel(_HANDLER_DEPTH) if self.topic.policy == "block"
                        else zenoh.handlers.RingChannel(_HANDLER_DEPTH))
        self._subscriber = session.declare_subscriber(topic_key(spec.name), handler)
        self._streams = Streams()
        self._last_seq: dict[int, int] = {}
        self.cursor = Cursor.attach("topic", spec.name, producer_id(self.topic))
        self._resume()
        # The stream that the next sample most likely continues: its
        # producer, the header prefix of its bytes messages and the next seq
        # (the fast way in _take_many); no producer yet: an empty prefix.
        self._in_order_producer = 0
        self._in_order_prefix = b""
        self._in_order_seq = 0
        self.counters = ImportCounters()
        self._thread = threading.Thread(target=self._run, name=f"import topic:{spec.name}", daemon=True)
        log.info("topic %s: importing (policy %s)", spec.name, self.topic.policy)

    def start(self) -> None:
        self._thread.start()

    def _resume(self) -> None:
        """Take up the streams where a killed predecessor left them (its
        cursor): what went by meanwhile is then a gap like any other."""
        resumed = topic_resume(self.cursor.streams(), self.cursor.intent(), int(self.topic.stats()["published"]))
        for producer, next_seq in resumed.items():
            self._streams.note(producer, next_seq - 1)
            self._last_seq[producer] = next_seq - 1
            self.cursor.done(producer, next_seq)
            log.info("topic %s: stream of producer %016x resumed at seq %d (the importer's cursor)", self.spec.name,
                     producer, next_seq)

    def _run(self) -> None:
        import zenoh

        recv, try_recv = self._subscriber.recv, self._subscriber.try_recv
        while True:
            try:
                batch = [recv()]
                while len(batch) < _BATCH and (more := try_recv()) is not None:
                    batch.append(more)
            except zenoh.ZError:  # the subscriber was undeclared: closing
                return
            try:
                self._take_many(batch)
            except (Closed, ValueError):  # the publisher was closed: closing
                return

    def _take_many(self, batch: list[zenoh.Sample]) -> None:
        """The samples that continue the current stream in order (their
        attachment is the very header expected next) go out in one
        ``send_many``; any other one (a gap, a new producer, a stale or
        malformed sample, a pickled object) takes the careful way."""
        run: list[bytes] = []
        pack_header = HEADER_AFTER_PREFIX.pack
        prefix, seq = self._in_order_prefix, self._in_order_seq
        expected = _expected_header(prefix, seq)
        for sample in batch:
            attachment = sample.attachment
            if attachment is not None and attachment.to_bytes() == expected:
                run.append(sample.payload.to_bytes())
                seq += 1
                try:
                    expected = pack_header(prefix, seq)
                except struct.error:  # seq 2**64: no next one in order
                    expected = None
                continue
            self._flush(run, seq)
            self._take(sample)
            prefix, seq = self._in_order_prefix, self._in_order_seq
            expected = _expected_header(prefix, seq)
        self._flush(run, seq)

    def _flush(self, run: list[bytes], next_seq: int) -> None:
        """Publish ``run``, the in-order messages of the current stream up
        to ``next_seq`` (excluded), and note them delivered."""
        if run:
            producer = self._in_order_producer
            self._send_many(producer, next_seq - len(run), run)
            self.counters.delivered += len(run)
            self._streams.note(producer, next_seq - 1)
            self._last_seq[producer] = next_seq - 1
            self._in_order_seq = next_seq
            run.clear()

    def _take(self, sample: zenoh.Sample) -> None:
        """One sample, a single message or a batch, checked whole before
        any of it is delivered: a malformed one is counted and logged."""
        attachment = sample.attachment
        try:
            header = Header.unpack(None if attachment is None else attachment.to_bytes())
            payload = sample.payload.to_bytes()
            if header.kind == KIND_HIGH_WATER:
                if payload:
                    raise WireError(f"a high-water mark with a payload of {len(payload)} bytes")
                self._take_high_water(header)
                return
            if header.kind == KIND_BATCH:
                messages, kinds = unpack_batch(payload, header.count)
            else:
                messages, kinds = [memoryview(payload)], bytes([header.kind])
        except WireError as e:
            self.counters.rejected += 1
            log.warning("topic %s: sample rejected: %s", self.spec.name, e)
            return
        verdict = self._streams.judge(header.producer, header.seq, len(messages))
        self.counters.duplicates += verdict.skipped
        if not verdict.deliver:
            return
        if verdict.new_stream:
            log.info("topic %s: stream of producer %016x joined at seq %d", self.spec.name, header.producer, header.seq)
        if verdict.missed:
            self._report_gap(header.producer, header.seq, verdict.missed, "")
        last = header.seq + len(messages) - 1
        self._last_seq[header.producer] = last
        self._in_order_producer, self._in_order_seq = header.producer, last + 1
        self._in_order_prefix = HEADER.pack(MAGIC, VERSION, KIND_BYTES, 0, header.producer, 0)[:16]
        skipped = verdict.skipped
        self._publish(header.producer, header.seq + skipped, messages[skipped:], kinds[skipped:])
        self.cursor.done(header.producer, last + 1)  # past the refused and rejected ones too

    def _take_high_water(self, header: Header) -> None:
        """The exporter's high-water mark: the messages of its stream below
        ``header.seq`` that have not come were lost (the mark follows them
        on the same publisher, so none is still on its way)."""
        missed = self._streams.high_water(header.producer, header.seq)
        if missed is None:
            log.info("topic %s: stream of producer %016x joined at seq %d (its high-water mark)", self.spec.name,
                     header.producer, header.seq)
            self.cursor.done(header.producer, header.seq)
            self._last_seq[header.producer] = header.seq - 1
            return
        if missed:
            self._report_gap(header.producer, header.seq, missed, ", at the end of its stream (its high-water mark)")
            # The status's position of the stream: every number below the mark accounted for.
            self._last_seq[header.producer] = header.seq - 1
            if header.producer == self._in_order_producer:
                self._in_order_seq = header.seq

    def _report_gap(self, producer: int, next_seq: int, missed: int, where: str) -> None:
        """``missed`` messages of ``producer`` before ``next_seq`` are lost:
        counted, logged, and marked in the local topic, whose subscribers
        then raise Lagged(missed) where the messages would have been."""
        self.counters.missed += missed
        self.counters.gaps += 1
        marked = min(missed, _MAX_MARKED_GAP)
        log.warning("topic %s: gap of %d messages from producer %016x (seq %d to %d)%s", self.spec.name, missed,
                    producer, next_seq - missed, next_seq - 1, where)
        # A marker takes its count of message numbers in the local topic:
        # the cursor's intent says so, so a kill right after it does not
        # report the gap twice.
        self.cursor.begin(producer, next_seq - missed, marked, int(self.topic.stats()["published"]))
        try:
            self._publisher.send_gap(marked)
        except ValueError as e:
            if self._publisher.closed:
                raise
            log.warning("topic %s: the gap is not marked in the local topic: %s", self.spec.name, e)
        self.cursor.done(producer, next_seq)

    def _send_many(self, producer: int, first: int, messages: list[Any]) -> None:
        """Publish ``messages`` (numbered from ``first`` in ``producer``'s
        stream) into the local topic, with the cursor's intent before and
        its record after."""
        self.cursor.begin(producer, first, len(messages), int(self.topic.stats()["published"]))
        self._publisher.send_many(messages)
        self.cursor.done(producer, first + len(messages))

    def _publish(self, producer: int, first: int, messages: list[memoryview], kinds: bytes) -> None:
        """Publish ``messages`` (numbered from ``first``) in order: the runs
        of bytes messages with a ``send_many`` each, a pickled one alone."""
        start = 0
        while start < len(messages):
            end = kinds.find(KIND_PICKLE, start)
            if end == -1:
                end = len(messages)
            if end > start:
                self._send_many(producer, first + start, messages[start:end])
                self.counters.delivered += end - start
                start = end
                continue
            self._publish_pickled(producer, first + start, messages[start])
            start += 1

    def _publish_pickled(self, producer: int, seq: int, payload: memoryview) -> None:
        if not self.trust_pickle:
            self.counters.refused += 1
            log.warning("topic %s: pickled message from producer %016x refused (see --trust-pickle)",
                        self.spec.name, producer)
            return
        try:
            obj = pickle.loads(payload)
        except Exception as e:  # whatever the bytes make unpickling raise
            self.counters.rejected += 1
            log.warning("topic %s: pickled message not unpickled: %s", self.spec.name, e)
            return
        self.cursor.begin(producer, seq, 1, int(self.topic.stats()["published"]))
        self._publisher.send_obj(obj)
        self.cursor.done(producer, seq + 1)
        self.counters.delivered += 1

    def status(self) -> dict[str, Any]:
        c = self.counters
        return {"direction": "import", "delivered": c.delivered, "missed": c.missed, "gaps": c.gaps,
                "duplicates": c.duplicates, "rejected": c.rejected, "refused": c.refused,
                "streams": {f"{p:016x}": seq for p, seq in self._last_seq.items()}}

    def close(self) -> None:
        self._subscriber.undeclare()  # type: ignore[no-untyped-call]
        self._publisher.close()  # wakes a send waiting for room
        self._thread.join()
        self.cursor.close()
        self.topic.close()
