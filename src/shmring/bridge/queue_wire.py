"""A queue carried over Zenoh, without Zenoh: the queue's 24-byte headers
(docs/PROTOCOL.md section 9, "Queues") and the bookkeeping of both ends, the
exporter's leases and the importer's acknowledgements.

The header has the topic's layout (wire.HEADER); the kinds and the meaning
of the 32-bit word at offset 4 and of the two 64-bit fields are the queue's:

- ``take`` (the query an importer sends): word = credit (items wanted),
  producer = the importer's id, seq = how many acknowledgements the
  payload carries (u64 item ids, little-endian);
- ``receipt`` (the exporter's first reply): word = 0, producer = the
  exporter's id, seq = how many of those acknowledgements it applied;
- an item (kind 0 bytes, 1 pickle): word = the attempt (1, then 2, 3... when
  redelivered), producer = the exporter's id, seq = the item's id."""

from __future__ import annotations

import struct
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .wire import HEADER, KIND_BYTES, KIND_PICKLE, WireError, WordHeader

__all__ = ["KIND_RECEIPT", "KIND_TAKE", "QueueHeader", "Lease", "Leases", "Acknowledgements", "pack_ids",
           "unpack_ids", "queue_key"]

KIND_RECEIPT = 2
KIND_TAKE = 3
_KINDS = (KIND_BYTES, KIND_PICKLE, KIND_RECEIPT, KIND_TAKE)
_ID = struct.Struct("<Q")


def queue_key(name: str) -> str:
    """The Zenoh key expression of queue ``name`` (the exporter's queryable)."""
    return f"shmring/queue/{name}"


class QueueHeader(WordHeader):
    """A queue's attachment (the module's docstring says what each field means per kind)."""

    KINDS = _KINDS
    WHAT = "queue message"


def pack_ids(ids: Sequence[int]) -> bytes:
    return struct.pack(f"<{len(ids)}Q", *ids)


def unpack_ids(raw: bytes, count: int) -> list[int]:
    if len(raw) != count * _ID.size:
        raise WireError(f"take request of {len(raw)} bytes for {count} acknowledgements")
    return list(struct.unpack(f"<{count}Q", raw))


@dataclass
class Lease:
    """One item handed to the network: whose it is and until when."""

    item_id: int
    kind: int
    payload: bytes
    importer: int = 0
    deadline: float = 0.0
    attempt: int = 0


@dataclass
class LeaseCounters:
    leased: int = 0  # items taken from the local queue and leased
    acked: int = 0
    expired: int = 0  # leases that ran out: their items are redelivered
    redelivered: int = 0  # items sent again (each one a possible duplicate)
    unknown_acks: int = 0  # acknowledgements of no lease held (already acknowledged, or the exporter restarted)


class Leases:
    """The exporter's items out on the network.  An item is leased to one
    importer until ``timeout`` seconds after it was sent; acknowledged, it is
    forgotten; expired, it waits (keeping its id) to be sent again before any
    new item, and an acknowledgement that comes late still cancels it."""

    def __init__(self, timeout: float, first_id: int = 0) -> None:
        self.timeout = timeout
        self._next_id = first_id
        self._out: dict[int, Lease] = {}  # id -> lease: out on the network
        self._again: OrderedDict[int, Lease] = OrderedDict()  # expired, to be sent again, oldest first
        self.counters = LeaseCounters()

    def acknowledge(self, ids: Iterable[int]) -> int:
        applied = 0
        for item_id in ids:
            if self._out.pop(item_id, None) is None and self._again.pop(item_id, None) is None:
                self.counters.unknown_acks += 1
                continue
            applied += 1
        self.counters.acked += applied
        return applied

    def expire(self, now: float) -> int:
        """Move the leases whose deadline passed to the redelivery list."""
        late = [lease for lease in self._out.values() if lease.deadline <= now]
        for lease in sorted(late, key=lambda lease: lease.item_id):
            del self._out[lease.item_id]
            self._again[lease.item_id] = lease
        self.counters.expired += len(late)
        return len(late)

    def redeliveries(self, importer: int, limit: int, now: float) -> list[Lease]:
        """Up to ``limit`` expired items, leased again to ``importer``."""
        again: list[Lease] = []
        while self._again and len(again) < limit:
            _, lease = self._again.popitem(last=False)
            again.append(self._lend(lease, importer, now))
        self.counters.redelivered += len(again)
        return again

    @property
    def next_id(self) -> int:
        """The id the next new item gets."""
        return self._next_id

    def lease(self, importer: int, kind: int, payload: bytes, now: float) -> Lease:
        """A new item from the local queue, with the next id."""
        lease = self._lend(Lease(self._next_id, kind, payload), importer, now)
        self._next_id += 1
        self.counters.leased += 1
        return lease

    def _lend(self, lease: Lease, importer: int, now: float) -> Lease:
        lease.importer, lease.deadline, lease.attempt = importer, now + self.timeout, lease.attempt + 1
        self._out[lease.item_id] = lease
        return lease

    def outstanding(self) -> list[Lease]:
        """Every item not acknowledged (out or waiting), by id: what goes back
        into the local queue when the exporter stops."""
        return sorted([*self._out.values(), *self._again.values()], key=lambda lease: lease.item_id)

    def clear(self) -> None:
        self._out.clear()
        self._again.clear()

    def __len__(self) -> int:
        return len(self._out) + len(self._again)


@dataclass
class Acknowledgements:
    """The importer's side: the ids it put into its local queue whose
    acknowledgement no receipt has confirmed yet (sent again with every take
    request until one does), and the ids it accepted last, per exporter, to
    drop an item that comes twice."""

    remember: int = 65536
    pending: list[int] = field(default_factory=list)
    _seen: dict[int, tuple[set[int], deque[int]]] = field(default_factory=dict)
    duplicates: int = 0

    def accept(self, exporter: int, item_id: int) -> bool:
        """Whether the item is new (to be put into the local queue).  Either
        way it is acknowledged: a duplicate's first copy may be the one
        whose acknowledgement was lost."""
        seen, order = self._seen.setdefault(exporter, (set(), deque()))
        self.pending.append(item_id)
        if item_id in seen:
            self.duplicates += 1
            return False
        seen.add(item_id)
        order.append(item_id)
        if len(order) > self.remember:
            seen.discard(order.popleft())
        return True

    def confirmed(self, count: int) -> None:
        """A receipt for the first ``count`` pending acknowledgements."""
        del self.pending[:count]
