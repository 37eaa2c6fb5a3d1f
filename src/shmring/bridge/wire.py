"""What a bridge puts on the wire: the 24-byte header carried as each Zenoh
sample's attachment (docs/PROTOCOL.md section 9), the framing of a batch
(several consecutive messages of one stream in one sample), and the
per-producer bookkeeping that turns sequence numbers into gaps and
duplicates.

Nothing here imports Zenoh: the framing is plain bytes."""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

__all__ = ["BATCH_MAX_BYTES", "BATCH_MAX_MESSAGES", "HEADER", "KIND_BATCH", "KIND_BYTES", "KIND_HIGH_WATER",
           "KIND_PICKLE", "Header",
           "Streams", "WordHeader", "batch_groups", "high_water_header", "pack_batch", "topic_key", "unpack_batch", "WireError", "read_header"]

MAGIC = b"SR"
VERSION = 1
KIND_BYTES = 0  # a bytes message (record tag 0x42)
KIND_PICKLE = 1  # a pickled object (record tag 0x4F, what send_obj writes)
# Kinds 2 and 3 are a queue's (queue_wire.py).
KIND_BATCH = 4  # several consecutive messages of one stream; the reserved word is their count
# The sender's high-water mark: every message of the stream below seq was
# sent (or counted lost at the sender); no payload.  Kind 5 is a channel's
# "end" on its own key expression, never on a topic's.
KIND_HIGH_WATER = 5
_TOPIC_KINDS = (KIND_BYTES, KIND_PICKLE, KIND_BATCH, KIND_HIGH_WATER)
# A batch's payload at most (its tables included): under Zenoh's default
# batch size of 64 KiB, so that a sample is not fragmented on the way.
BATCH_MAX_BYTES = 60 * 1024
# Messages in a batch at most: the exporter's recv_many gives no more.
BATCH_MAX_MESSAGES = 1024
_LENGTH = struct.Struct("<I")
# What each message adds to a batch's payload besides its bytes: its length
# (u32) and its kind (u8) in the tables.
BATCH_OVERHEAD = _LENGTH.size + 1
# magic, version, kind, reserved, producer, seq; little-endian on every host.
HEADER = struct.Struct("<2sBBIQQ")
assert HEADER.size == 24
W = TypeVar("W", bound="WordHeader")


class WireError(ValueError):
    """An attachment that is not a shmring bridge header."""


def read_header(raw: bytes | None, kinds: tuple[int, ...], what: str) -> tuple[int, int, int, int]:
    """(kind, word, producer, seq) of an attachment, checked: 24 bytes,
    shmring's magic and version, a kind among ``kinds`` (``what`` names
    them in the error)."""
    if raw is None or len(raw) != HEADER.size:
        raise WireError(f"attachment of {0 if raw is None else len(raw)} bytes, not {HEADER.size}")
    magic, version, kind, word, producer, seq = HEADER.unpack(raw)
    if magic != MAGIC or version != VERSION:
        raise WireError(f"not a shmring bridge header (magic {magic!r}, version {version})")
    if kind not in kinds:
        raise WireError(f"unknown {what} kind {kind}")
    return kind, word, producer, seq


@dataclass(frozen=True)
class WordHeader:
    """A queue's or a channel's attachment: its kind, the 32-bit word at
    offset 4 (what it means is the kind's), the producer and seq fields.
    A subclass names its kinds (``KINDS``) and what they are (``WHAT``)."""

    kind: int
    word: int
    producer: int
    seq: int
    KINDS: ClassVar[tuple[int, ...]] = ()
    WHAT: ClassVar[str] = "message"

    def pack(self) -> bytes:
        return HEADER.pack(MAGIC, VERSION, self.kind, self.word, self.producer, self.seq)

    @classmethod
    def unpack(cls: type[W], raw: bytes | None) -> W:
        return cls(*read_header(raw, cls.KINDS, cls.WHAT))


@dataclass(frozen=True)
class Header:
    """A topic sample's attachment; ``count`` is the number of messages of
    a batch (the word at offset 4), 0 for a single message and a high-water
    mark (whose ``seq`` is the number of the next message to be sent)."""

    kind: int
    producer: int
    seq: int
    count: int = 0

    def pack(self) -> bytes:
        return HEADER.pack(MAGIC, VERSION, self.kind, self.count, self.producer, self.seq)

    @classmethod
    def unpack(cls, raw: bytes | None) -> Header:
        kind, count, producer, seq = read_header(raw, _TOPIC_KINDS, "message")
        if kind == KIND_BATCH:
            if count == 0:
                raise WireError("a batch of no message")
            if seq + count > 1 << 64:
                raise WireError(f"a batch of {count} messages from seq {seq} runs past the last seq (2**64 - 1)")
        else:
            count = 0  # reserved in a single message and a high-water mark: not read
        return cls(kind, producer, seq, count)


def high_water_header(producer: int, next_seq: int) -> bytes:
    """The attachment of a high-water mark: every message of ``producer``
    numbered below ``next_seq`` was sent; the payload is empty."""
    return HEADER.pack(MAGIC, VERSION, KIND_HIGH_WATER, 0, producer, next_seq)


def pack_batch(payloads: list[bytes], kinds: bytes) -> bytes:
    """The payload of a batch sample: the messages' lengths (u32 each),
    their kinds (u8 each), then their bytes back to back."""
    n = len(payloads)
    parts = [struct.pack(f"<{n}I", *map(len, payloads)), kinds]
    parts += payloads
    return b"".join(parts)


def unpack_batch(payload: bytes, count: int) -> tuple[list[memoryview], bytes]:
    """The ``count`` messages of a batch's payload (views into it) and their
    kinds; WireError if the framing does not add up, before anything is
    taken from it (a damaged batch delivers nothing)."""
    tables = count * BATCH_OVERHEAD
    if len(payload) < tables:
        raise WireError(f"batch of {count} messages in {len(payload)} bytes: shorter than its tables")
    lengths = struct.unpack_from(f"<{count}I", payload, 0)
    if tables + sum(lengths) != len(payload):
        raise WireError(f"batch of {count} messages: lengths add up to {sum(lengths)} bytes, "
                        f"the payload has {len(payload) - tables} after its tables")
    kinds = payload[count * _LENGTH.size:tables]
    if kinds.translate(None, b"\x00\x01"):  # a byte other than KIND_BYTES and KIND_PICKLE
        raise WireError(f"batch of {count} messages: a message kind other than 0 and 1")
    view = memoryview(payload)
    messages = []
    start = tables
    for length in lengths:
        end = start + length
        messages.append(view[start:end])
        start = end
    return messages, kinds


def batch_groups(lengths: list[int], max_bytes: int = BATCH_MAX_BYTES,
                 max_messages: int = BATCH_MAX_MESSAGES) -> list[tuple[int, int]]:
    """Consecutive messages of ``lengths`` grouped in order, each group
    ``(start, end)`` one sample: a batch's payload (with its tables) within
    ``max_bytes`` and ``max_messages``; a message too large for any batch
    is a group of its own (sent as a single message)."""
    n = len(lengths)
    if n <= max_messages and sum(lengths) + n * BATCH_OVERHEAD <= max_bytes:
        return [(0, n)] if n else []
    groups = []
    start, size = 0, 0
    for i, length in enumerate(lengths):
        grown = size + length + BATCH_OVERHEAD
        if i > start and (grown > max_bytes or i - start == max_messages):
            groups.append((start, i))
            start, grown = i, length + BATCH_OVERHEAD
        size = grown
    groups.append((start, n))
    return groups


def topic_key(name: str) -> str:
    """The Zenoh key expression of topic ``name``."""
    return f"shmring/topic/{name}"


@dataclass
class Verdict:
    """What to do with a run of consecutive messages of one stream (one
    message, or a batch): how many at its start were delivered before
    (``skipped``: duplicates or stale, dropped), how many messages of its
    stream went missing just before it, and whether it starts the stream.
    ``deliver``: whether any of it is to be delivered."""

    deliver: bool
    missed: int
    new_stream: bool
    skipped: int = 0


class Streams:
    """The next sequence number expected from each producer.  A message
    above it follows a gap (reported, then delivered); one below it is a
    duplicate or stale (dropped, never delivered twice); the first message
    of an unknown producer starts its stream."""

    def __init__(self) -> None:
        self._expected: dict[int, int] = {}

    def judge(self, producer: int, seq: int, count: int = 1) -> Verdict:
        """The verdict on messages ``seq`` to ``seq + count - 1`` of ``producer``."""
        expected = self._expected.get(producer)
        end = seq + count
        if expected is not None and end <= expected:
            return Verdict(False, 0, False, count)
        self._expected[producer] = end
        if expected is None:
            return Verdict(True, 0, True)
        if seq < expected:
            return Verdict(True, 0, False, expected - seq)
        return Verdict(True, seq - expected, False)

    def high_water(self, producer: int, next_seq: int) -> int | None:
        """The sender says every message of ``producer`` below ``next_seq``
        was sent, and it says so after them in the same stream: those not
        delivered yet will never come.  How many (0: none, or a stale
        mark); None for a producer not seen before, whose stream is now
        joined at ``next_seq`` (what went before is not counted)."""
        expected = self._expected.get(producer)
        if expected is None:
            self._expected[producer] = next_seq
            return None
        if next_seq <= expected:
            return 0
        self._expected[producer] = next_seq
        return next_seq - expected

    def note(self, producer: int, seq: int) -> None:
        """``seq`` was the one expected from ``producer`` and is delivered."""
        self._expected[producer] = seq + 1

    def __len__(self) -> int:
        return len(self._expected)


# A header as its first 16 bytes (magic, version, kind, reserved, producer:
# fixed for a stream) and its seq: one pack per message.
HEADER_AFTER_PREFIX = struct.Struct("<16sQ")
assert HEADER_AFTER_PREFIX.size == HEADER.size


def incarnation_id(prefix: bytes, name: str, header: dict[str, Any]) -> int:
    """An id of this incarnation of a local object on this host (machine,
    name, the segment header's creator and creation time; ``prefix`` tells
    kinds apart): the same for every bridge of it, another one if the
    object is made anew."""
    try:
        with open("/etc/machine-id", "rb") as f:
            machine = f.read().strip()
    except OSError:
        machine = os.uname().nodename.encode()
    text = b"%s%s/%s/%d/%d/%d" % (prefix, machine, name.encode(), header["creator_pid"], header["creator_start"],
                                  header["created_ns"])
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


_Local = TypeVar("_Local")


def open_or_create(open_: Callable[[], _Local], create: Callable[[], _Local]) -> _Local:
    """The local object a bridge carries: opened, or created if there is
    none (opened after all if a program made it meanwhile)."""
    try:
        return open_()
    except FileNotFoundError:
        pass
    try:
        return create()
    except FileExistsError:
        return open_()
