"""A channel carried over Zenoh, without Zenoh: the channel's control
headers (docs/PROTOCOL.md section 9, "Channels"), the exporter's replay
buffer and the importer's bookkeeping of its stream.

Every sample has the topic's 24-byte layout (wire.HEADER); the 32-bit word
at offset 4 and the kinds are the channel's:

- a message (kind 0, on ``.../data``): producer = the stream's id, seq = the
  message's number (the count of messages the exporter had taken from its
  local channel before it);
- ``start`` (kind 4, on ``.../data``): sent before every (re)transmission,
  seq = the oldest number the exporter still holds: an importer may expect
  every message from there on;
- ``end`` (kind 5, on ``.../data``): the end of the stream, numbered like a
  message (seq = the count of messages before it); word 0 the producer
  closed the channel, 1 the producer's process died;
- ``ack`` (kind 6, on ``.../ack``): producer = the stream's id, seq = the
  next number the importer wants (every one below it is in its local
  channel); word = flags: 1 resend (the importer saw a hole or a stream it
  has no start for), 2 broken (the importer lost messages that nobody holds
  any more and closed its local channel)."""

from __future__ import annotations

from dataclasses import dataclass

from .wire import HEADER, KIND_BYTES, WordHeader

__all__ = ["KIND_START", "KIND_END", "KIND_ACK", "ACK_RESEND", "ACK_BROKEN", "END_CLOSED", "END_PEER_GONE",
           "ChannelHeader", "ReplayBuffer", "Receiver", "channel_keys", "ENTRY_OVERHEAD"]

KIND_START = 4
KIND_END = 5
KIND_ACK = 6
_KINDS = (KIND_BYTES, KIND_START, KIND_END, KIND_ACK)
ACK_RESEND = 1
ACK_BROKEN = 2
END_CLOSED = 0
END_PEER_GONE = 1
# What one message costs the replay buffer beyond its bytes: so that a
# buffer of many tiny messages is bounded too.
ENTRY_OVERHEAD = 64


def channel_keys(name: str) -> tuple[str, str]:
    """The Zenoh key expressions of channel ``name``: data, acknowledgements."""
    return f"shmring/channel/{name}/data", f"shmring/channel/{name}/ack"


class ChannelHeader(WordHeader):
    """A channel's attachment (the module's docstring says what each field means per kind)."""

    KINDS = _KINDS
    WHAT = "channel message"


class ReplayBuffer:
    """The exporter's messages not yet acknowledged, numbered from ``base``
    (the oldest held) to ``end`` (the next number to give), and a cursor:
    the next one to send.  Bounded by ``limit`` bytes (each message's
    length plus ENTRY_OVERHEAD): the exporter takes nothing from its local
    channel while it is full.  The end of the stream takes a number too
    (its entry is None)."""

    def __init__(self, limit: int, base: int) -> None:
        self.limit = limit
        self.base = base
        self.cursor = base
        self.size = 0
        self.end_word: int | None = None  # set once the end of the stream is in
        self._items: list[bytes | None] = []
        self._head = 0  # index of the entry numbered base

    @property
    def end(self) -> int:
        return self.base + len(self._items) - self._head

    def full(self) -> bool:
        return self.size >= self.limit

    def __len__(self) -> int:
        return len(self._items) - self._head

    def extend(self, messages: list[bytes]) -> None:
        if self.end_word is not None:
            raise ValueError("the stream has ended")
        self._items.extend(messages)
        self.size += sum(map(len, messages)) + ENTRY_OVERHEAD * len(messages)

    def close(self, word: int) -> int:
        """Put the end of the stream in; returns its number."""
        if self.end_word is not None:
            raise ValueError("the stream has ended")
        self.end_word = word
        self._items.append(None)
        return self.end - 1

    def acknowledge(self, upto: int) -> int:
        """Forget every entry numbered below ``upto``; returns how many."""
        upto = min(upto, self.end)
        count = upto - self.base
        if count <= 0:
            return 0
        released = self._items[self._head:self._head + count]
        self.size -= sum(len(m) + ENTRY_OVERHEAD for m in released if m is not None)
        self._head += count
        self.base = upto
        self.cursor = max(self.cursor, upto)
        if self._head > 4096 and self._head * 2 > len(self._items):  # compact now and then
            del self._items[:self._head]
            self._head = 0
        return count

    def rewind(self) -> int:
        """Send everything held again, from the oldest; returns how many."""
        again = self.cursor - self.base
        self.cursor = self.base
        return again

    def unsent(self, most: int) -> tuple[int, list[bytes | None]]:
        """Up to ``most`` entries from the cursor (the cursor moves past
        them), and the number of the first."""
        first = self.cursor
        start = self._head + (first - self.base)
        batch = self._items[start:start + most]
        self.cursor = first + len(batch)
        return first, batch


@dataclass
class Receiver:
    """The importer's view of the stream it writes into its local channel:
    which stream (one per channel on the exporter's host), the next number
    it wants, and what it lost.  ``state``: waiting (no start seen yet),
    open, ended (the end of the stream was written), broken (a hole that no
    one can fill any more: the local channel was closed)."""

    stream: int | None = None
    expected: int = 0
    state: str = "waiting"
    lost: int = 0
    lost_from: int | None = None
    duplicates: int = 0
    foreign: int = 0  # samples of another stream than the one adopted
    replaced: bool = False  # a start of another stream came while this one was open

    def start(self, stream: int, seq: int) -> str:
        """A start: "joined" (the stream adopted at ``seq``), "ok", "broken"
        (the exporter no longer holds ``expected``), "replaced" (another
        stream while this one was open: broken, the loss uncounted), or
        "ignore"."""
        if self.state == "waiting":
            self.stream, self.expected, self.state = stream, seq, "open"
            return "joined"
        if stream != self.stream and self.state == "open":
            # the channel was made anew on the exporter's host: the old one
            # is gone with whatever it still held (how much, nobody knows)
            self.lost_from, self.state, self.replaced = self.expected, "broken", True
            return "replaced"
        if stream != self.stream:
            self.foreign += 1
            return "ignore"
        if self.state != "open":
            return "ignore"
        if seq > self.expected:
            self.lost, self.lost_from, self.state = seq - self.expected, self.expected, "broken"
            return "broken"
        return "ok"

    def message(self, stream: int, seq: int) -> str:
        """A message or an end numbered ``seq``: "take" (it is the one
        expected: the caller writes it, then calls ``taken``), "duplicate",
        "hole" (one before it is missing: dropped, a resend asked), "unknown"
        (no start seen: a resend asked), "foreign" or "after" (the stream
        ended or broke)."""
        if self.state == "waiting":
            return "unknown"
        if stream != self.stream:
            self.foreign += 1
            return "foreign"
        if self.state != "open":
            return "after"
        if seq < self.expected:
            self.duplicates += 1
            return "duplicate"
        return "take" if seq == self.expected else "hole"

    def taken(self, count: int = 1) -> None:
        self.expected += count

    def ended(self) -> None:
        self.expected += 1
        self.state = "ended"
