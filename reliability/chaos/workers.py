"""What each participant of a kill storm does, in the process forked for it.

One producer loop and one consumer loop serve every kind; what differs per
kind is how a batch is put (:data:`PUTS`) and how items are taken
(:data:`TAKES`).  The logging around each call is what the checker reads
(see :mod:`.logformat`): ``B`` lines before a put, ``R`` once it returned
(or ``X`` when it put nothing), ``W`` before a get and ``G`` lines as soon
as it returned.
"""

from __future__ import annotations

import mmap
import queue
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import shmring

from .items import HEADER, make_item, parse_item
from .logformat import LogFile, line

PUT_TIMEOUT = 1.0  # seconds: a put that waits longer logs X and goes on
GET_TIMEOUT = 0.1  # a get that finds nothing for that long logs N and looks at the stop flag

# The stop flag (byte 0 of a shared anonymous mapping): the supervisor sets
# it to STOP_PRODUCERS when the storm is over, then to STOP_CONSUMERS once
# every producer has left; a consumer leaves at its first empty get after that.
STOP_PRODUCERS = 1
STOP_CONSUMERS = 2

BATCH_OPS = frozenset({"put_many", "get_many", "send_many", "recv_many"})


@dataclass
class Worker:
    """One incarnation of a participant, in its own process."""

    slot: str
    index: int  # the producer's index in the scenario (items carry it); 0 for the others
    incarnation: int
    handle: Any  # the object of its group (inherited from the supervisor)
    ops: dict[str, float]
    sizes: tuple[tuple[float, int, int], ...]  # (weight, smallest, largest) payload lengths
    batch: int
    huge: int  # a payload length larger than the ring, for some single puts; 0 for none
    producer_slots: list[str]
    log: LogFile
    stop: mmap.mmap
    rng: random.Random
    drain: bool = False  # the supervisor's final consumer: never waits, leaves when empty
    scratch: bytearray = field(default_factory=bytearray)

    def now(self) -> int:
        return time.monotonic_ns()

    def choose(self) -> tuple[str, int]:
        names = list(self.ops)
        op = self.rng.choices(names, [self.ops[n] for n in names])[0]
        return op, (self.rng.randint(2, self.batch) if op in BATCH_OPS else 1)

    def length(self, op: str) -> int:
        if self.huge and op in ("put", "put_bytes", "send") and self.rng.random() < 0.01:
            return self.huge
        weights = [w for w, _, _ in self.sizes]
        _, low, high = self.rng.choices(self.sizes, weights)[0]
        return self.rng.randint(low, high)


def produce(w: Worker, put: Callable[[Worker, str, list[bytes]], int]) -> None:
    """Put items until the stop flag is set; ``put`` returns how many of the
    batch were committed (the rest put nothing)."""
    n = 0
    while w.stop[0] < STOP_PRODUCERS:
        op, count = w.choose()
        items, lines = [], []
        for i in range(count):
            data, crc = make_item(w.index, w.incarnation, n + i, w.length(op))
            items.append(data)
            lines.append(line("B", w.incarnation, n + i, len(data) - HEADER.size, crc, w.now()))
        w.log.write("".join(lines))
        done = put(w, op, items)
        t = w.now()
        w.log.write((line("R", w.incarnation, n, done, t) if done else "")
                    + (line("X", w.incarnation, n + done, count - done, t) if done < count else ""))
        n += count


def consume(w: Worker, take: Callable[[Worker, str, int], "list[Any] | str"]) -> None:
    """Take items until the stop flag says the producers are gone and a get
    found nothing; ``take`` returns the items, or why it got none."""
    while True:
        op, k = w.choose()
        w.log.write(line("W", w.incarnation, k, w.now()))
        got = take(w, op, k)
        t = w.now()
        if isinstance(got, str) or not got:
            w.log.write(line("N", w.incarnation, t, got or "empty"))
            if w.drain or w.stop[0] >= STOP_CONSUMERS:
                return
            continue
        lines = []
        for obj in got:
            item = parse_item(obj)
            if item is None:
                raw = obj if isinstance(obj, bytes) else repr(obj).encode()
                lines.append(line("C", w.incarnation, t, raw[:32].hex() or "-"))
            else:
                producer = w.producer_slots[item.producer] if item.producer < len(w.producer_slots) else "?"
                lines.append(line("G", w.incarnation, producer, item.incarnation, item.number, item.length,
                                  item.crc, len(got), t))
        w.log.write("".join(lines))


def put_in_place(end: Any, item: bytes, spare: int) -> None:
    """Write ``item`` with ``reserve()`` (a channel's or a publisher's): with
    ``spare`` bytes more than it needs, then ``commit()`` of its length."""
    size = len(item)
    with end.reserve(size + spare, timeout=PUT_TIMEOUT) as buf:
        buf[:size] = item
        if spare:
            buf.commit(size)


# -- Queue --------------------------------------------------------------------------


def queue_put(w: Worker, op: str, items: list[bytes]) -> int:
    q = w.handle
    try:
        if op == "put":
            q.put(items[0], timeout=PUT_TIMEOUT)
        elif op == "put_bytes":
            q.put_bytes(items[0], timeout=PUT_TIMEOUT)
        else:
            q.put_many(items, timeout=PUT_TIMEOUT)
    except queue.Full:
        return 0
    return len(items)


def queue_take(w: Worker, op: str, k: int) -> list[Any] | str:
    q, block = w.handle, not w.drain
    try:
        if op == "get":
            return [q.get(block, GET_TIMEOUT)]
        if op == "get_bytes":
            return [q.get_bytes(block, GET_TIMEOUT)]
        return list(q.get_many(block, GET_TIMEOUT, max_messages_to_get=k))
    except queue.Empty:
        return "empty"


# -- Channel ------------------------------------------------------------------------


def channel_put(w: Worker, op: str, items: list[bytes]) -> int:
    ch = w.handle
    try:
        if op == "send":
            ch.send(items[0], timeout=PUT_TIMEOUT)
        elif op == "try_send":
            return 1 if ch.try_send(items[0]) else 0
        elif op == "send_many":
            return int(ch.send_many(items, timeout=PUT_TIMEOUT))
        else:
            put_in_place(ch, items[0], w.rng.choice((0, 0, 64)) if len(items[0]) + 64 <= ch.max_message else 0)
    except (shmring.Timeout, shmring.PeerGone) as exc:
        if isinstance(exc, shmring.PeerGone):
            time.sleep(0.001)  # the consumer's replacement is on its way
        return int(getattr(exc, "sent", 0) or 0)
    return len(items)


def channel_take(w: Worker, op: str, k: int) -> list[Any] | str:
    ch = w.handle
    timeout = 0 if w.drain else GET_TIMEOUT
    try:
        if op == "recv":
            return [ch.recv(timeout=timeout)]
        if op == "recv_many":
            return list(ch.recv_many(k, timeout=timeout))
        if op == "recv_into":
            if len(w.scratch) < ch.max_message:
                w.scratch = bytearray(ch.max_message)
            n = ch.recv_into(w.scratch, timeout=timeout)
            return [bytes(w.scratch[:n])]
        with ch.peek(timeout=timeout) as buf:  # peek: copied out, released, then logged
            data = bytes(buf)
        return [data]
    except shmring.Timeout:
        return "timeout"
    except shmring.PeerGone:
        if not w.drain:
            time.sleep(0.001)  # the producer's replacement is on its way
        return "peer-gone"


# -- Topic ----------------------------------------------------------------------------


def topic_put(w: Worker, op: str, items: list[bytes]) -> int:
    pub = w.handle
    try:
        if op == "send":
            pub.send(items[0], timeout=PUT_TIMEOUT)
        elif op == "send_obj":
            pub.send_obj(items[0], timeout=PUT_TIMEOUT)
        else:
            put_in_place(pub, items[0], w.rng.choice((0, 0, 32)))
    except shmring.Timeout:
        return 0
    return 1


def topic_take(w: Worker, op: str, k: int) -> list[Any] | str:
    sub = w.handle
    try:
        if op == "recv":
            return [sub.recv(timeout=GET_TIMEOUT)]
        if op == "recv_bytes":
            return [sub.recv_bytes(timeout=GET_TIMEOUT)]
        with sub.peek(timeout=GET_TIMEOUT) as buf:
            data = bytes(buf)
        return [data]
    except shmring.Timeout:
        return "timeout"


PUTS: dict[str, Callable[[Worker, str, list[bytes]], int]] = {
    "queue": queue_put, "channel": channel_put, "topic": topic_put,
}
TAKES: dict[str, Callable[[Worker, str, int], "list[Any] | str"]] = {
    "queue": queue_take, "channel": channel_take, "topic": topic_take,
}


def run_producer(kind: str, w: Worker) -> None:
    if kind == "topic":
        w.handle = w.handle.publisher()
    produce(w, PUTS[kind])


def run_consumer(kind: str, w: Worker) -> None:
    if kind == "topic":
        t0 = w.now()
        w.handle = w.handle.subscribe()
        w.log.write(line("U", w.incarnation, t0, w.now()))
    consume(w, TAKES[kind])
