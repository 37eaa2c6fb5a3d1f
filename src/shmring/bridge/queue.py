"""A queue carried over Zenoh, pulled: the importer asks the exporter for as
many items as its local queue has room for in its window (a Zenoh query,
carrying the acknowledgements of the items it put into that queue since);
the exporter takes that many from its local queue, leases them, and replies
with them.  An item whose lease runs out unacknowledged is sent again, so an
item handed to the network is delivered at least once; every leased item is
also copied into a lease journal in shared memory (queue_journal.py) before
it is sent, so that a later exporter puts the items of a killed one back
into the queue: docs/BRIDGE.md."""

from __future__ import annotations

import logging
import os
import pickle
import threading
import time
from dataclasses import dataclass
from queue import Empty, Full, SimpleQueue
from typing import TYPE_CHECKING, Any

from .._errors import QueueClosed
from ..queue import Queue
from .queue_journal import LeaseJournal, Recovered, recover
from .queue_wire import (KIND_RECEIPT, KIND_TAKE, Acknowledgements, Lease, Leases, QueueHeader, pack_ids, queue_key,
                         unpack_ids)
from .topic import ObjectSpec
from .wire import KIND_BYTES, KIND_PICKLE, WireError

if TYPE_CHECKING:
    import zenoh

__all__ = ["QueueExporter", "QueueImporter", "open_queue", "DEFAULT_WINDOW", "DEFAULT_LEASE_S"]

log = logging.getLogger("shmring.bridge")

DEFAULT_WINDOW = 256
"""Items an importer keeps in its local queue (and so at most out on lease to it)."""
DEFAULT_LEASE_S = 10.0
"""Seconds an item stays leased to an importer before it is sent again."""
# How long the exporter waits for an item when an importer asks and the
# local queue is empty (a long poll: the importer asks again at once).
_LONG_POLL_S = 0.1
# How long an importer waits for the replies to one request.
_TAKE_TIMEOUT_S = 5.0
# An importer whose request found no exporter (or whose local queue is full)
# looks again after this long.
_RETRY_S = 0.1
_FULL_POLL_S = 0.002
# How often the exporter's thread looks whether it was told to stop.
_STOP_POLL_S = 0.2
# How often a running exporter looks for journals of dead exporters of its
# queue (another bridge on this host that was killed).
_ADOPT_EVERY_S = 5.0
# How long a put back into a full local queue waits: at adoption (the serving
# thread's time) and at a stop (then the journal stays for a successor).
_PUT_BACK_WAIT_S = 0.1
_CLOSE_PUT_BACK_WAIT_S = 5.0


def open_queue(name: str, dumps: Any = None) -> Queue[Any]:
    """The local queue ``name``: opened, or created (unbounded) if there is none."""
    try:
        return Queue.open(name, dumps=dumps)
    except FileNotFoundError:
        pass
    try:
        made: Queue[Any] = Queue(name=name)
    except FileExistsError:  # made by a program meanwhile
        return Queue.open(name, dumps=dumps)
    if dumps is None:
        return made
    handle: Queue[Any] = Queue.open(name, dumps=dumps)
    made.close()
    return handle


def _random_id() -> int:
    return int.from_bytes(os.urandom(8), "little")


class QueueExporter:
    """Local queue -> Zenoh, on request: a queryable on ``shmring/queue/NAME``
    served by one thread.  Items are taken from the local queue only for an
    importer that asked, as many as it asked for."""

    def __init__(self, session: zenoh.Session, spec: ObjectSpec, lease_timeout: float = DEFAULT_LEASE_S) -> None:
        import zenoh

        self.spec = spec
        self.queue = open_queue(spec.name)
        self.exporter_id = _random_id()
        # Ids start at a random number, so that an importer's acknowledgements
        # meant for an earlier exporter (or another one of the queue) do not
        # match this one's items.
        self.leases = Leases(lease_timeout, first_id=_random_id() >> 2)
        self.importers: set[int] = set()
        self.rejected = 0
        self.returned = 0
        self.recovered = Recovered()
        self._adopt()
        self.journal = LeaseJournal(spec.name, self.exporter_id, self.queue.stats()["queue_id"])
        self._adopted_at = time.monotonic()
        # Queries wait here for this end's thread, which looks at _stop
        # between them (closing never undeclares under a waiting recv).
        self._queries: SimpleQueue[zenoh.Query] = SimpleQueue()
        self._stop = threading.Event()
        try:
            self._queryable = session.declare_queryable(queue_key(spec.name), self._queries.put)
        except BaseException:
            self.journal.discard()  # nothing journaled yet
            raise
        self._thread = threading.Thread(target=self._run, name=f"export queue:{spec.name}", daemon=True)
        log.info("queue %s: exporting as %016x (lease %g s, journal %s)", spec.name, self.exporter_id, lease_timeout,
                 self.journal.files[0].name)

    def start(self) -> None:
        self._thread.start()

    def _adopt(self) -> None:
        """Put back into the local queue the items in the journals of dead
        exporters of this queue."""
        try:
            found = recover(self.spec.name, self._put_back, self._queue_state)
        except Exception as e:  # QueueClosed at a stop, a system error: the journals stay for the next look
            log.warning("queue %s: dead exporters' journals not put back: %s", self.spec.name, e)
            return
        self.recovered.items += found.items
        self.recovered.files += found.files
        self.recovered.maybe_lost += found.maybe_lost
        self.recovered.damaged += found.damaged
        self.recovered.left = found.left  # as of this look

    def _put_back(self, items: list[tuple[int, bytes]], wait: float = _PUT_BACK_WAIT_S) -> int:
        """Put ``items`` back into the local queue, in order, as many as fit
        within ``wait`` seconds; how many.  Never longer: when the local
        queue is full and only remote importers drain it, this very thread
        must go on serving them."""
        objects = [payload if kind == KIND_BYTES else pickle.loads(payload) for kind, payload in items]
        try:
            self.queue.put_many(objects, timeout=wait)  # all or nothing
            return len(objects)
        except Full:
            pass
        for put, obj in enumerate(objects):  # what fits now, one by one
            try:
                self.queue.put_nowait(obj)
            except Full:
                return put
        return len(objects)

    def _queue_state(self) -> tuple[int, int, bool]:
        stats = self.queue.stats()
        return stats["queue_id"], stats["gets"], bool(stats["holder"]) and not stats["holder_alive"]

    def _run(self) -> None:
        import zenoh

        while not self._stop.is_set():
            if time.monotonic() - self._adopted_at > _ADOPT_EVERY_S:
                self._adopted_at = time.monotonic()
                self._adopt()
            try:
                query = self._queries.get(timeout=_STOP_POLL_S)
            except Empty:
                continue
            try:
                self._serve(query)
            except zenoh.ZError:  # the session closed under a reply
                return
            except QueueClosed:
                return
            finally:
                query.drop()  # type: ignore[no-untyped-call]

    def _serve(self, query: zenoh.Query) -> None:
        attachment = query.attachment
        try:
            take = QueueHeader.unpack(None if attachment is None else attachment.to_bytes())
            if take.kind != KIND_TAKE:
                raise WireError(f"a take request has kind {KIND_TAKE}, not {take.kind}")
            acks = unpack_ids(b"" if query.payload is None else query.payload.to_bytes(), take.seq)
        except WireError as e:
            self.rejected += 1
            log.warning("queue %s: request rejected: %s", self.spec.name, e)
            return
        if take.producer not in self.importers:
            self.importers.add(take.producer)
            log.info("queue %s: importer %016x asks", self.spec.name, take.producer)
        applied = self.acknowledge(acks)
        key = queue_key(self.spec.name)
        # The receipt goes first: an importer that sees any item of this
        # reply has seen its acknowledgements applied.
        query.reply(key, b"", attachment=QueueHeader(KIND_RECEIPT, applied, self.exporter_id, len(acks)).pack())
        now = time.monotonic()
        expired = self.leases.expire(now)
        if expired:
            log.warning("queue %s: %d leases expired unacknowledged; their items go out again", self.spec.name, expired)
        for lease in self._items_for(take.producer, take.word, now):
            query.reply(key, lease.payload,
                        attachment=QueueHeader(lease.kind, lease.attempt, self.exporter_id, lease.item_id).pack())

    def acknowledge(self, item_ids: list[int]) -> int:
        """Apply acknowledgements: the leases and their journal entries go."""
        applied = self.leases.acknowledge(item_ids)
        self.journal.release(item_ids)
        return applied

    def _items_for(self, importer: int, credit: int, now: float) -> list[Lease]:
        """Expired items first, then new ones from the local queue (waiting
        a little for one if it is empty)."""
        items = self.leases.redeliveries(importer, credit, now)
        want = credit - len(items)
        if want <= 0:
            return items
        # From the take to the journal's commit (end_take) the items are in
        # this process only: kept short (no lease is made in it), and a death
        # in it is what begin_take lets the next exporter detect and count.
        self.journal.begin_take(want, self.queue.stats()["gets"])
        try:
            got = (self.queue.get_many_nowait(want) if items
                   else self.queue.get_many(timeout=_LONG_POLL_S, max_messages_to_get=want))
        except Empty:
            self.journal.end_take()
            return items
        taken = [(KIND_BYTES, item) if type(item) is bytes
                 else (KIND_PICKLE, pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)) for item in got]
        self.journal.record(taken, first_id=self.leases.next_id)
        self.journal.end_take()
        return items + [self.leases.lease(importer, kind, payload, now) for kind, payload in taken]

    def status(self) -> dict[str, Any]:
        c = self.leases.counters
        return {"direction": "export", "exporter": f"{self.exporter_id:016x}", "importers": len(self.importers),
                "leased": c.leased, "acked": c.acked, "out": len(self.leases), "expired": c.expired,
                "redelivered": c.redelivered, "unknown_acks": c.unknown_acks, "rejected": self.rejected,
                "returned": self.returned, "journaled": len(self.journal), "journal_files": len(self.journal.files),
                "recovered": self.recovered.items, "recovered_journals": self.recovered.files,
                "maybe_lost": self.recovered.maybe_lost}

    def close(self) -> None:
        """Stop serving, and put every unacknowledged item back into the
        local queue (after the items there: their order is not kept)."""
        import zenoh

        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join()
        try:
            self._queryable.undeclare()  # type: ignore[no-untyped-call]
        except zenoh.ZError:  # the session is closed already: nothing left to undeclare
            pass
        while not self._queries.empty():
            self._queries.get().drop()  # type: ignore[no-untyped-call]
        back = self.leases.outstanding()
        self.leases.clear()
        put = self._put_back([(lease.kind, lease.payload) for lease in back], _CLOSE_PUT_BACK_WAIT_S) if back else 0
        self.returned += put
        if put:
            log.warning("queue %s: %d unacknowledged items put back into the local queue", self.spec.name, put)
        # Only once they are back in the queue (killed before this, the next
        # exporter puts them back again: duplicates, not losses).
        if put == len(back):
            self.journal.discard()
        else:
            self.journal.release(lease.item_id for lease in back[:put])
            self.journal.leave()
            log.warning("queue %s: the local queue is full: %d unacknowledged items left in the lease journal; the "
                        "next exporter of the queue puts them back once this process has ended", self.spec.name,
                        len(back) - put)
        self.queue.close()


@dataclass
class ImportCounters:
    received: int = 0
    delivered: int = 0
    refused: int = 0
    rejected: int = 0
    requests: int = 0
    failed_requests: int = 0
    redeliveries: int = 0


class QueueImporter:
    """Zenoh -> local queue: keeps the local queue topped up to ``window``
    items by asking the exporter for the difference, and acknowledges each
    item once it is in the local queue."""

    def __init__(self, session: zenoh.Session, spec: ObjectSpec, window: int = DEFAULT_WINDOW,
                 trust_pickle: bool = False) -> None:
        self.spec = spec
        self.window = window
        self.trust_pickle = trust_pickle
        self.queue = open_queue(spec.name)
        # Pickles go in as they came, to be unpickled by the consumer's get().
        self._pickles = open_queue(spec.name, dumps=bytes)
        self.importer_id = _random_id()
        self.acks = Acknowledgements()
        self.counters = ImportCounters()
        self.exporters: set[int] = set()
        self.connected = False
        self._session = session
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"import queue:{spec.name}", daemon=True)
        log.info("queue %s: importing as %016x (window %d)", spec.name, self.importer_id, window)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        import zenoh

        while not self._stop.is_set():
            try:
                credit = max(0, self.window - self.queue.qsize())
                if credit == 0 and not self.acks.pending:
                    self._stop.wait(_FULL_POLL_S)
                    continue
                if not self._request(credit):
                    self._stop.wait(_RETRY_S)
            except (zenoh.ZError, QueueClosed):  # closing
                return

    def _request(self, credit: int) -> bool:
        """One take request; whether a receipt came back."""
        import zenoh

        acks = list(self.acks.pending)
        self.counters.requests += 1
        replies = self._session.get(
            queue_key(self.spec.name), payload=pack_ids(acks), consolidation=zenoh.ConsolidationMode.NONE,
            attachment=QueueHeader(KIND_TAKE, credit, self.importer_id, len(acks)).pack(), timeout=_TAKE_TIMEOUT_S)
        receipt, failure = False, ""
        run: list[bytes] = []
        for reply in replies:
            sample = reply.ok
            if sample is None:  # the request timed out (the items in it, if any, go out again later)
                failure = reply.err.payload.to_string() if reply.err is not None else "no reply"
                continue
            try:
                header = QueueHeader.unpack(None if sample.attachment is None else sample.attachment.to_bytes())
            except WireError as e:
                self.counters.rejected += 1
                log.warning("queue %s: reply rejected: %s", self.spec.name, e)
                continue
            if header.kind == KIND_RECEIPT:
                receipt = receipt or header.seq == len(acks)
                if receipt:
                    self.acks.confirmed(len(acks))
                self._met(header.producer)
            elif header.kind in (KIND_BYTES, KIND_PICKLE) and receipt:
                self._take(header, sample.payload.to_bytes(), run)
            else:  # an item without the receipt before it: left to its lease (it goes out again)
                self.counters.rejected += 1
        self._flush(run)
        if failure or not receipt:
            self.counters.failed_requests += 1
        self._linked(receipt and not failure, failure or "no exporter answers")
        return receipt

    def _take(self, header: QueueHeader, payload: bytes, run: list[bytes]) -> None:
        self.counters.received += 1
        if header.word > 1:
            self.counters.redeliveries += 1
        if header.kind == KIND_PICKLE and not self.trust_pickle:
            # acknowledged all the same: sending it again would not change the answer
            self.acks.pending.append(header.seq)
            self.counters.refused += 1
            log.warning("queue %s: pickled item refused (see --trust-pickle)", self.spec.name)
            return
        if not self.acks.accept(header.producer, header.seq):
            return
        if header.kind == KIND_BYTES:
            run.append(payload)
            return
        self._flush(run)
        self._pickles.put(payload)
        self.counters.delivered += 1

    def _flush(self, run: list[bytes]) -> None:
        # Acknowledgements leave with the next request, after this put.
        if run:
            self.queue.put_many(run)
            self.counters.delivered += len(run)
            run.clear()

    def _met(self, exporter: int) -> None:
        if exporter not in self.exporters:
            self.exporters.add(exporter)
            log.info("queue %s: served by exporter %016x", self.spec.name, exporter)

    def _linked(self, answered: bool, why: str) -> None:
        if answered != self.connected:
            self.connected = answered
            log.info("queue %s: %s", self.spec.name, "exporter answers" if answered else f"request failed: {why}")

    def status(self) -> dict[str, Any]:
        c = self.counters
        return {"direction": "import", "importer": f"{self.importer_id:016x}", "connected": self.connected,
                "received": c.received, "delivered": c.delivered, "duplicates": self.acks.duplicates,
                "redeliveries": c.redeliveries, "refused": c.refused, "rejected": c.rejected,
                "unconfirmed_acks": len(self.acks.pending), "requests": c.requests, "failed_requests": c.failed_requests,
                "exporters": sorted(f"{e:016x}" for e in self.exporters)}

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._pickles.close()
        self.queue.close()
