"""A channel carried over Zenoh: the exporter is the consumer of the local
channel on the producer's host, the importer the producer of a local
channel on the consumer's host.  Messages are numbered; the importer
acknowledges what it has written into its channel, and the exporter keeps
what is not acknowledged in a bounded replay buffer and sends it again
after a link failure, so that nothing is lost or duplicated while the
buffer holds the gap.  A gap that nobody can fill any more closes the
importer's channel (its reader drains, then gets Closed) and is logged and
counted: docs/BRIDGE.md, "Channels"."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING, Any

from .._errors import Closed, PeerGone, Timeout
from ..channel import Channel
from .cursor import Cursor, channel_resume, channel_write_end
from .channel_wire import (ACK_BROKEN, ACK_RESEND, END_CLOSED, END_PEER_GONE, KIND_ACK, KIND_END, KIND_START,
                           ChannelHeader, ReplayBuffer, Receiver, channel_keys)
from .topic import ObjectSpec
from .wire import (HEADER, HEADER_AFTER_PREFIX, KIND_BYTES, MAGIC, VERSION, WireError, incarnation_id,
                   open_or_create)

if TYPE_CHECKING:
    import zenoh

__all__ = ["ChannelExporter", "ChannelImporter", "open_channel", "DEFAULT_REPLAY_BYTES"]

log = logging.getLogger("shmring.bridge")

DEFAULT_REPLAY_BYTES = 16 << 20
"""Bytes of messages (plus 64 each) an exporter keeps until acknowledged."""
# Without any acknowledgement for this long, the exporter sends what it
# holds again (the importer drops what it has already written).
RETRANSMIT_S = 1.0
# The least time between two rewinds asked by the importer.
_RESEND_GAP_S = 0.2
_BATCH = 256
_POLL_S = 0.05
_MATCH_POLL_S = 0.05
_HANDLER_DEPTH = 4096
# The importer acknowledges at least every this many messages while busy
# (and whenever it has caught up with what arrived).
_ACK_EVERY = 1024
# The importer writes into a full local channel in slices of this long,
# acknowledging between them (the exporter then knows it is alive).
_WRITE_SLICE_S = 0.5
# A channel record's header, and the most a record adds to its message's
# bytes (the header and the padding to 8 bytes): PROTOCOL.md section 3.
_RECORD_HEADER = 8
_RECORD_MAX_OVERHEAD = 15


def open_channel(spec: ObjectSpec) -> Channel:
    """The local channel of ``spec``: opened, or created if there is none."""
    return open_or_create(lambda: Channel.open(spec.name), lambda: Channel.create(spec.name, capacity=spec.capacity))


def stream_id(channel: Channel) -> int:
    """The id of this incarnation of the channel on this host: the same
    for every exporter of it (a restarted one continues its numbers)."""
    return incarnation_id(b"channel/", channel.name, channel.segment._mapping.header())


@dataclass
class ExportCounters:
    sent: int = 0
    resent: int = 0
    rewinds: int = 0
    rejected: int = 0


class ChannelExporter:
    """Local channel (its consumer end) -> Zenoh, with a replay buffer."""

    def __init__(self, session: zenoh.Session, spec: ObjectSpec, replay_bytes: int = DEFAULT_REPLAY_BYTES) -> None:
        import zenoh

        self.spec = spec
        self.channel: Channel | None = open_channel(spec)
        self.stream = stream_id(self.channel)
        # Numbers go on from the messages the channel's consumers took before.
        self.buffer = ReplayBuffer(replay_bytes, int(self.channel.stats()["received_messages"]))
        data_key, ack_key = channel_keys(spec.name)
        self._publisher = session.declare_publisher(data_key, congestion_control=zenoh.CongestionControl.BLOCK,
                                                    reliability=zenoh.Reliability.RELIABLE)
        self._acks: SimpleQueue[bytes] = SimpleQueue()
        self._ack_subscriber = session.declare_subscriber(ack_key, self._on_ack)
        self._prefix = HEADER.pack(MAGIC, VERSION, KIND_BYTES, 0, self.stream, 0)[:16]
        self.state = "open"  # then "ended" (the importer wrote the end) or "broken"
        self.matched = False
        self.counters = ExportCounters()
        self._high = self.buffer.base  # numbers below it were sent once already
        self._start_due = True
        self._deadline = 0.0  # an acknowledgement is due by then, or everything held goes again
        self._last_rewind = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"export channel:{spec.name}", daemon=True)
        log.info("channel %s: exporting as stream %016x from seq %d", spec.name, self.stream, self.buffer.base)

    def start(self) -> None:
        self._thread.start()

    def _on_ack(self, sample: zenoh.Sample) -> None:
        attachment = sample.attachment
        self._acks.put(b"" if attachment is None else attachment.to_bytes())

    def _run(self) -> None:
        import zenoh

        try:
            while not self._stop.is_set() and self.state == "open":
                self._step()
        except zenoh.ZError:  # the session was closed: the bridge is closing
            return
        except Closed:  # our own handle closed under a call: closing
            return

    def _step(self) -> None:
        self._apply_acks()
        if self.state != "open":
            return
        if not self._matched():
            self._stop.wait(_MATCH_POLL_S)
            return
        buffer = self.buffer
        now = time.monotonic()
        if buffer.cursor > buffer.base and now > self._deadline:
            self._rewind(f"no acknowledgement for {RETRANSMIT_S:g} s")
        if buffer.cursor < buffer.end:
            self._send()
        elif buffer.end_word is not None or buffer.full():
            self._wait_for_ack()
        else:
            self._read()

    def _matched(self) -> bool:
        status: Any = self._publisher.matching_status
        matched = bool(getattr(status, "matching", status))
        if matched != self.matched:
            self.matched = matched
            log.info("channel %s: %s", self.spec.name, "importer matched" if matched else "no importer matches")
            if matched and len(self.buffer):
                self._rewind("an importer matched")
            self._start_due = True
        return matched

    def _read(self) -> None:
        assert self.channel is not None
        try:
            messages = self.channel.recv_many(_BATCH, timeout=_POLL_S)
        except Timeout:
            return
        except Closed:
            self._end(END_CLOSED, "the producer closed the channel")
            return
        except PeerGone:
            self._end(END_PEER_GONE, "the producer's process died")
            return
        self.buffer.extend(messages)

    def _end(self, word: int, why: str) -> None:
        seq = self.buffer.close(word)
        log.info("channel %s: %s; the end of the stream is seq %d", self.spec.name, why, seq)

    def _send(self) -> None:
        buffer = self.buffer
        if buffer.cursor == buffer.base:  # nothing out: the wait for an acknowledgement starts now
            self._deadline = time.monotonic() + RETRANSMIT_S
        put = self._publisher.put
        if self._start_due:
            put(b"", attachment=ChannelHeader(KIND_START, 0, self.stream, buffer.base).pack())
            self._start_due = False
        first, batch = buffer.unsent(_BATCH)
        pack = HEADER_AFTER_PREFIX.pack
        prefix = self._prefix
        seq = first
        for message in batch:
            if message is None:
                put(b"", attachment=ChannelHeader(KIND_END, buffer.end_word or 0, self.stream, seq).pack())
            else:
                put(message, attachment=pack(prefix, seq))
            seq += 1
        fresh = max(0, seq - max(first, self._high))
        self.counters.sent += fresh
        self.counters.resent += len(batch) - fresh
        self._high = max(self._high, seq)

    def _rewind(self, why: str) -> None:
        again = self.buffer.rewind()
        self._start_due = True
        self._last_rewind = time.monotonic()
        self._deadline = self._last_rewind + RETRANSMIT_S
        if again:
            self.counters.rewinds += 1
            log.info("channel %s: sending %d messages again from seq %d (%s)", self.spec.name, again,
                     self.buffer.base, why)

    def _wait_for_ack(self) -> None:
        try:
            self._apply(self._acks.get(timeout=_POLL_S))
        except Empty:
            return

    def _apply_acks(self) -> None:
        while self.state == "open":
            try:
                raw = self._acks.get_nowait()
            except Empty:
                return
            self._apply(raw)

    def _apply(self, raw: bytes) -> None:
        try:
            ack = ChannelHeader.unpack(raw)
            if ack.kind != KIND_ACK:
                raise WireError(f"an acknowledgement has kind {KIND_ACK}, not {ack.kind}")
        except WireError as e:
            self.counters.rejected += 1
            log.warning("channel %s: acknowledgement rejected: %s", self.spec.name, e)
            return
        if ack.producer == self.stream and self.state == "open":
            self._acknowledged(ack)

    def _acknowledged(self, ack: ChannelHeader) -> None:
        now = time.monotonic()
        self._deadline = now + RETRANSMIT_S
        self.buffer.acknowledge(ack.seq)
        if ack.word & ACK_BROKEN:
            self._broken(ack.seq)
        elif self.buffer.end_word is not None and len(self.buffer) == 0:
            self.state = "ended"
            log.info("channel %s: the importer wrote the end of the stream", self.spec.name)
        elif ack.word & ACK_RESEND and now - self._last_rewind > _RESEND_GAP_S:
            self._rewind("the importer asked")

    def _broken(self, seq: int) -> None:
        """The importer lost messages and closed its channel: this end's
        close makes the producer's next send raise Closed."""
        self.state = "broken"
        log.error("channel %s: the importer lost messages before seq %d and closed its channel; "
                  "closing this one (the producer's sends raise Closed)", self.spec.name, seq)
        if self.channel is not None:
            self.channel.close()

    def status(self) -> dict[str, Any]:
        c, b = self.counters, self.buffer
        return {"direction": "export", "stream": f"{self.stream:016x}", "state": self.state, "matched": self.matched,
                "next_seq": b.end, "acked_seq": b.base, "held": len(b), "held_bytes": b.size, "sent": c.sent,
                "resent": c.resent, "rewinds": c.rewinds, "rejected": c.rejected}

    def close(self) -> None:
        import zenoh

        self._stop.set()
        self._thread.join()
        for entity in (self._publisher, self._ack_subscriber):
            try:
                entity.undeclare()  # type: ignore[no-untyped-call]
            except zenoh.ZError:  # the session is closed already
                pass
        if len(self.buffer):
            log.warning("channel %s: stopping with %d messages not acknowledged (from seq %d): the importer "
                        "will report them lost", self.spec.name, len(self.buffer), self.buffer.base)
        channel, self.channel = self.channel, None
        if channel is not None and self.state == "ended":
            channel.close()
        # Otherwise the handle is dropped without close(): the end goes back
        # unclosed, for a bridge started later to take over.


@dataclass
class ImportCounters:
    delivered: int = 0
    resend_requests: int = 0
    rejected: int = 0
    acks: int = 0


class ChannelImporter:
    """Zenoh -> local channel (its producer end)."""

    def __init__(self, session: zenoh.Session, spec: ObjectSpec) -> None:
        import zenoh

        self.spec = spec
        self.channel: Channel | None = open_channel(spec)
        data_key, ack_key = channel_keys(spec.name)
        self._subscriber = session.declare_subscriber(data_key, zenoh.handlers.FifoChannel(_HANDLER_DEPTH))
        self._ack_publisher = session.declare_publisher(ack_key, congestion_control=zenoh.CongestionControl.DROP,
                                                        reliability=zenoh.Reliability.RELIABLE)
        self.receiver = Receiver()
        self.cursor = Cursor.attach("channel", spec.name, stream_id(self.channel))
        self._resume()
        self.counters = ImportCounters()
        self.end_reason = ""
        self._acked = -1  # the last number acknowledged
        self._duplicates_acked = 0  # duplicates are answered (the exporter may have missed an acknowledgement)
        self._want_resend = False
        self._last_resend = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"import channel:{spec.name}", daemon=True)
        log.info("channel %s: importing", spec.name)

    def start(self) -> None:
        if self.receiver.stream is not None:
            self._acknowledge(force=True)  # resumed: the exporter goes on after what is in the channel
        self._thread.start()

    def _resume(self) -> None:
        """Take the stream up where a killed predecessor left it: after the
        last message that is in the local channel, which its cursor's last
        intent and the channel's own counters tell exactly."""
        intent = self.cursor.intent()
        if intent is None or self.channel is None:
            return
        stats = self.channel.stats()
        resume = channel_resume(intent, int(stats["sent_messages"]), int(stats["tail"]))
        if resume is None:
            log.warning("channel %s: the cursor does not fit the channel's counters (another producer wrote?): "
                        "joining the stream afresh", self.spec.name)
            return
        r = self.receiver
        r.stream, r.expected, r.state = intent.producer, resume, "open"
        log.info("channel %s: stream %016x resumed at seq %d (the importer's cursor)", self.spec.name,
                 intent.producer, resume)

    def _run(self) -> None:
        import zenoh

        recv, try_recv = self._subscriber.recv, self._subscriber.try_recv
        while not self._stop.is_set():
            try:
                batch = [recv()]
                while len(batch) < _BATCH and (more := try_recv()) is not None:
                    batch.append(more)
                self._take_many(batch)
                if len(batch) < _BATCH or self.receiver.expected - self._acked >= _ACK_EVERY:
                    self._acknowledge()
            except (zenoh.ZError, Closed):  # the subscriber undeclared or the channel closed: closing
                return

    def _take_many(self, batch: list[zenoh.Sample]) -> None:
        """In-order messages of the stream (their attachment is the very
        header expected next) are written in runs; anything else goes one
        by one through the Receiver."""
        run: list[bytes] = []
        receiver = self.receiver
        prefix = HEADER.pack(MAGIC, VERSION, KIND_BYTES, 0, receiver.stream or 0, 0)[:16]
        pack = HEADER_AFTER_PREFIX.pack
        open_ = receiver.state == "open"
        seq = receiver.expected
        expected = pack(prefix, seq) if open_ and seq < 1 << 64 else None
        for sample in batch:
            attachment = sample.attachment
            if expected is not None and attachment is not None and attachment.to_bytes() == expected:
                run.append(sample.payload.to_bytes())
                seq += 1
                expected = pack(prefix, seq) if seq < 1 << 64 else None
                continue
            self._write(run)
            self._take(sample)
            prefix = HEADER.pack(MAGIC, VERSION, KIND_BYTES, 0, receiver.stream or 0, 0)[:16]
            seq = receiver.expected
            expected = pack(prefix, seq) if receiver.state == "open" and seq < 1 << 64 else None
        self._write(run)

    def _write(self, run: list[bytes]) -> None:
        """Write ``run`` (the next messages of the stream) into the local
        channel, acknowledging between slices while it is full."""
        while run and self.channel is not None:
            part = self._fitting(run)
            batch = run[:part] if part < len(run) else run
            stats = self.channel.stats()
            tail = int(stats["tail"])
            end = channel_write_end(tail, self.channel.capacity, [len(message) for message in batch])
            self.cursor.begin(self.receiver.stream or 0, self.receiver.expected, part, int(stats["sent_messages"]),
                              tail, end)
            try:
                sent = self.channel.send_many(batch, timeout=_WRITE_SLICE_S)
            except Timeout as e:
                sent = int(getattr(e, "sent", 0))
                self._acknowledge(force=True)
            except (Closed, PeerGone) as e:
                if self._stop.is_set():
                    raise Closed() from None
                self._reader_gone(run, e)
                return
            self.receiver.taken(sent)
            self.counters.delivered += sent
            del run[:sent]

    def _fitting(self, run: list[bytes]) -> int:
        """How many messages from the start of ``run`` to write at once: as
        many as fit in the ring together, so that the write is published
        whole or not at all (what the cursor's reckoning needs)."""
        assert self.channel is not None
        capacity = self.channel.capacity
        if sum(map(len, run)) + _RECORD_MAX_OVERHEAD * len(run) <= capacity:
            return len(run)
        size = 0
        for i, message in enumerate(run):
            size += _RECORD_HEADER + (len(message) + 7) // 8 * 8
            if size > capacity:
                return max(i, 1)
        return len(run)

    def _take(self, sample: zenoh.Sample) -> None:
        attachment = sample.attachment
        try:
            header = ChannelHeader.unpack(None if attachment is None else attachment.to_bytes())
            if header.kind == KIND_ACK:
                raise WireError("an acknowledgement on the data key")
        except WireError as e:
            self.counters.rejected += 1
            log.warning("channel %s: sample rejected: %s", self.spec.name, e)
            return
        if header.kind == KIND_START:
            self._start(header)
            return
        verdict = self.receiver.message(header.producer, header.seq)
        if verdict == "take":
            if header.kind == KIND_END:
                self._end(header)
            else:
                self._write([sample.payload.to_bytes()])
        elif verdict in ("hole", "unknown"):
            self._want_resend = True

    def _start(self, header: ChannelHeader) -> None:
        verdict = self.receiver.start(header.producer, header.seq)
        if verdict == "joined":
            log.info("channel %s: stream %016x joined at seq %d", self.spec.name, header.producer, header.seq)
        elif verdict == "broken":
            r = self.receiver
            self.end_reason = "lost"
            log.error("channel %s: %d messages lost (seq %d to %d: the exporter no longer holds them); closing "
                      "the local channel: its reader gets Closed after seq %d", self.spec.name, r.lost, r.lost_from,
                      header.seq - 1, (r.lost_from or 0) - 1)
            self._close_channel()
            self._acknowledge(force=True)
        elif verdict == "replaced":
            self.end_reason = "replaced"
            log.error("channel %s: stream %016x replaced by stream %016x (the channel was made anew on the "
                      "exporter's host): whatever the old one held from seq %d on is lost, uncounted; closing the "
                      "local channel", self.spec.name, self.receiver.stream or 0, header.producer, self.receiver.expected)
            self._close_channel()

    def _end(self, header: ChannelHeader) -> None:
        self.receiver.ended()
        self.end_reason = "producer died" if header.word == END_PEER_GONE else "closed"
        log.info("channel %s: end of the stream at seq %d (%s); closing the local channel", self.spec.name,
                 header.seq, "the producer's process died" if header.word == END_PEER_GONE else "the producer closed")
        self._close_channel()
        self._acknowledge(force=True)

    def _reader_gone(self, run: list[bytes], error: Exception) -> None:
        r = self.receiver
        r.lost, r.lost_from, r.state = len(run), r.expected, "broken"
        self.end_reason = "reader gone"
        log.error("channel %s: the local reader is gone (%s) from seq %d; telling the exporter", self.spec.name,
                  type(error).__name__, r.expected)
        run.clear()
        self._close_channel()
        self._acknowledge(force=True)

    def _close_channel(self) -> None:
        channel, self.channel = self.channel, None
        if channel is not None:
            channel.close()

    def _acknowledge(self, force: bool = False) -> None:
        r = self.receiver
        if r.stream is None:
            # Samples of a stream without its start: nothing to acknowledge
            # yet; the exporter sends its start again after RETRANSMIT_S.
            self._want_resend = False
            return
        word = ACK_BROKEN if r.state == "broken" else 0
        now = time.monotonic()
        if self._want_resend and r.state == "open" and now - self._last_resend > _RESEND_GAP_S:
            word |= ACK_RESEND
            self._last_resend = now
            self.counters.resend_requests += 1
        self._want_resend = False
        if not force and not word and r.expected == self._acked and r.duplicates == self._duplicates_acked:
            return
        self._duplicates_acked = r.duplicates
        self._ack_publisher.put(b"", attachment=ChannelHeader(KIND_ACK, word, r.stream, r.expected).pack())
        self._acked = r.expected
        self.counters.acks += 1

    def status(self) -> dict[str, Any]:
        r, c = self.receiver, self.counters
        return {"direction": "import", "stream": None if r.stream is None else f"{r.stream:016x}", "state": r.state,
                "next_seq": r.expected, "delivered": c.delivered, "duplicates": r.duplicates, "lost": r.lost,
                "lost_from": r.lost_from, "end": self.end_reason, "resend_requests": c.resend_requests,
                "foreign": r.foreign, "rejected": c.rejected}

    def close(self) -> None:
        import zenoh

        self._stop.set()
        try:
            self._acknowledge(force=True)  # what was written is not sent again to a successor
            self._subscriber.undeclare()  # type: ignore[no-untyped-call]
            self._ack_publisher.undeclare()  # type: ignore[no-untyped-call]
        except zenoh.ZError:  # the session is closed already
            pass
        channel, self.channel = self.channel, None
        self._thread.join(5)
        self.cursor.close()
        # The handle is dropped without close(): the end goes back unclosed
        # (a bridge started later takes it over; the reader keeps waiting).
        del channel
