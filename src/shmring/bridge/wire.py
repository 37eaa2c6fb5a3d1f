"""What a bridge puts on the wire: the 24-byte header carried as each Zenoh
sample's attachment (docs/PROTOCOL.md section 9), and the per-producer
bookkeeping that turns sequence numbers into gaps and duplicates.

Nothing here imports Zenoh: the framing is plain bytes."""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["HEADER", "KIND_BYTES", "KIND_PICKLE", "Header", "Streams", "topic_key", "WireError"]

MAGIC = b"SR"
VERSION = 1
KIND_BYTES = 0  # a bytes message (record tag 0x42)
KIND_PICKLE = 1  # a pickled object (record tag 0x4F, what send_obj writes)
# magic, version, kind, reserved, producer, seq; little-endian on every host.
HEADER = struct.Struct("<2sBBIQQ")
assert HEADER.size == 24


class WireError(ValueError):
    """An attachment that is not a shmring bridge header."""


@dataclass(frozen=True)
class Header:
    kind: int
    producer: int
    seq: int

    def pack(self) -> bytes:
        return HEADER.pack(MAGIC, VERSION, self.kind, 0, self.producer, self.seq)

    @classmethod
    def unpack(cls, raw: bytes | None) -> Header:
        if raw is None or len(raw) != HEADER.size:
            raise WireError(f"attachment of {0 if raw is None else len(raw)} bytes, not {HEADER.size}")
        magic, version, kind, _reserved, producer, seq = HEADER.unpack(raw)
        if magic != MAGIC or version != VERSION:
            raise WireError(f"not a shmring bridge header (magic {magic!r}, version {version})")
        if kind not in (KIND_BYTES, KIND_PICKLE):
            raise WireError(f"unknown message kind {kind}")
        return cls(kind, producer, seq)


def topic_key(name: str) -> str:
    """The Zenoh key expression of topic ``name``."""
    return f"shmring/topic/{name}"


@dataclass
class Verdict:
    """What to do with one message: deliver it or not, and how many
    messages of its stream went missing just before it."""

    deliver: bool
    missed: int
    new_stream: bool


class Streams:
    """The next sequence number expected from each producer.  A message
    above it follows a gap (reported, then delivered); one below it is a
    duplicate or stale (dropped, never delivered twice); the first message
    of an unknown producer starts its stream."""

    def __init__(self) -> None:
        self._expected: dict[int, int] = {}

    def judge(self, producer: int, seq: int) -> Verdict:
        expected = self._expected.get(producer)
        if expected is not None and seq < expected:
            return Verdict(False, 0, False)
        self._expected[producer] = seq + 1
        if expected is None:
            return Verdict(True, 0, True)
        return Verdict(True, seq - expected, False)

    def note(self, producer: int, seq: int) -> None:
        """``seq`` was the one expected from ``producer`` and is delivered."""
        self._expected[producer] = seq + 1

    def __len__(self) -> int:
        return len(self._expected)
