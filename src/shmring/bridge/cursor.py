"""An importer's cursor: what it has delivered into its local object, kept
in a small shared-memory segment of its own on its host, so that an
importer restarted after a kill knows where its predecessor stopped
(docs/BRIDGE.md "Importer restarts", docs/PROTOCOL.md section 9 "Cursor
segment").

The importer writes, before each write into its local object, an *intent*:
which stream, the number of the first message, how many, and the local
object's own message count just before (for a channel also its tail just
before and the tail the whole write will leave).  A
topic importer also stores, after the write, the next number per producer.
A restarted importer compares the intent with the local object's counters
as they are now and knows exactly how much of that last write went in
(``topic_resume``, ``channel_resume``): the window between a write and its
bookkeeping neither loses nor duplicates anything.

Every field is one aligned 8-byte word, stored whole (a kill leaves the old
or the new value, never a mix); an intent is four words, written into the
slot not in use and then made current by one store of ``gen`` (two slots:
a kill in the middle of writing one leaves the previous intent whole).
Only the importer writes, and only it reads, when it starts.  Nothing here
needs Zenoh."""

from __future__ import annotations

import hashlib
import logging
import struct
from dataclasses import dataclass

from .. import _core
from .._errors import ForeignOwnerError, SegmentError, SegmentNotReadyError
from ..segment import Segment, validate_name
from ..sync import AtomicInt64

__all__ = ["PREFIX", "Cursor", "Intent", "channel_resume", "channel_write_end", "cursor_name", "topic_resume"]

log = logging.getLogger("shmring.bridge")

PREFIX = "shmring-cursor-"
MAGIC = int.from_bytes(b"SRCURSOR", "little")
LAYOUT = 1
KINDS = {"topic": 1, "channel": 2}
# Payload layout, little-endian, every field 8-byte aligned:
#   0 magic (u64, "SRCURSOR", stored last), 8 layout (u32), 12 kind (u32),
#  16 object (u64: the local object's incarnation), 24 gen (u64: intents
#  written; the current one is in slot gen % 2), 32 used (u64: producer
#  slots in use), 40 slots (u64: how many there are), 48..63 reserved;
#  64 and 128: the two intent slots (producer, first, count, before, tail,
#  end, then 16 bytes reserved); 192: the producer slots, (producer, next) each.
_FIXED = struct.Struct("<8xIIQ")
_OBJECT_OFFSET = 16
_GEN_OFFSET = 24
_USED_OFFSET = 32
_SLOTS_OFFSET = 40
_INTENT_OFFSET = 64
_INTENT_SIZE = 64
_INTENT_WORDS = 6
_RECORD_HEADER = 8  # a channel record's header (include/shmring/record.h)
_TABLE_OFFSET = 192
_SLOT_SIZE = 16
SLOTS = 64
SIZE = _TABLE_OFFSET + SLOTS * _SLOT_SIZE
_NOT_READY_WAIT_S = 1.0  # how long a cursor segment still being made is waited for


def cursor_name(kind: str, name: str) -> str:
    """The cursor segment of the importer of ``kind:name`` (one function for
    the derived name): the name as it is, or a hash of it when the result
    would be too long for a segment name."""
    full = f"{PREFIX}{kind}-{name}"
    if len(full) <= 254:
        return validate_name(full)
    digest = hashlib.blake2b(name.encode(), digest_size=16).hexdigest()
    return validate_name(f"{PREFIX}{kind}-{digest}")


def _signed(value: int) -> int:
    """A u64 as the signed word an AtomicInt64 stores."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _unsigned(value: int) -> int:
    return value & ((1 << 64) - 1)


@dataclass(frozen=True)
class Intent:
    """A write into the local object about to be made: ``count`` messages
    of stream ``producer`` numbered from ``first``; ``before`` is the local
    object's message count just before it (a topic's ``published``, a
    channel's ``sent_messages``), ``tail`` a channel's tail (bytes) and
    ``end`` the tail the whole write leaves (``channel_write_end``; 0 when
    not known: a topic's, or a cursor written before it was recorded)."""

    producer: int
    first: int
    count: int
    before: int
    tail: int = 0
    end: int = 0


def channel_write_end(tail: int, capacity: int, lengths: list[int]) -> int:
    """The tail a channel's ``send_many`` of messages of ``lengths`` bytes
    (whose records fit in the ring together) leaves when it starts at
    ``tail``: the records placed the way the channel places them (one that
    would cross the end of the ring goes behind a padding record, at offset
    0), and the whole batch behind a padding record when it only fits from
    offset 0 (``shmring_channel_place`` and ``channel_write_batch``)."""
    mask = capacity - 1

    def place_all(start: int) -> int:
        pos = start
        for length in lengths:
            need = _RECORD_HEADER + (length + 7) // 8 * 8
            contig = capacity - (pos & mask)
            pos = (pos + contig if need > contig else pos) + need
        return pos

    end = place_all(tail)
    if end - tail > capacity and tail & mask:
        end = place_all(tail + capacity - (tail & mask))
    return end


def topic_resume(streams: dict[int, int], intent: Intent | None, published_now: int) -> dict[int, int]:
    """The next number per producer that a restarted topic importer expects:
    the recorded ones, with the last write's outcome applied.  The write
    put ``published_now - intent.before`` messages (or message numbers, for
    a gap marker) into the topic, 0 to ``count``: only the importer publishes
    there (docs/BRIDGE.md says what another publisher would do)."""
    resumed = dict(streams)
    if intent is None:
        return resumed
    end = intent.first + intent.count
    if resumed.get(intent.producer, -1) >= end:
        return resumed  # the write and its bookkeeping both done
    went_in = min(max(published_now - intent.before, 0), intent.count)
    resumed[intent.producer] = intent.first + went_in
    return resumed


def channel_resume(intent: Intent, sent_now: int, tail_now: int) -> int | None:
    """The next number a restarted channel importer wants: every message
    below it is in its local channel, none from it on.  A write (one
    ``send_many`` whose records fit in the ring) is published whole or not
    at all; its count is stored before its tail, so a kill between the two
    leaves the count moved and the tail not at the write's end (nothing went
    in).  The tail alone may have moved before that, by a padding record the
    write published while it waited for room: only the tail at ``end`` says
    the records are in.  None when the counters fit no outcome (another
    producer wrote: no cursor)."""
    if sent_now == intent.before:
        return intent.first
    if sent_now == intent.before + intent.count:
        if intent.end:
            went_in = tail_now == intent.end
        else:  # a cursor without the end (an older importer's): the tail moved at all
            went_in = tail_now != intent.tail
        return intent.first + intent.count if went_in else intent.first
    return None


class Cursor:
    """The importer's side of its cursor segment: attach (make, or take over
    a killed predecessor's), then ``begin`` before each write and ``done``
    after it (a topic's)."""

    def __init__(self, segment: Segment) -> None:
        self.segment = segment
        self._gen = AtomicInt64(segment, _GEN_OFFSET)
        self._used = AtomicInt64(segment, _USED_OFFSET)
        self._count = self._gen.load("relaxed")
        intent = [AtomicInt64(segment, _INTENT_OFFSET + i * _INTENT_SIZE + 8 * f)
                  for i in range(2) for f in range(_INTENT_WORDS)]
        self._intents = (intent[:_INTENT_WORDS], intent[_INTENT_WORDS:])
        self._producers = [AtomicInt64(segment, _TABLE_OFFSET + i * _SLOT_SIZE) for i in range(SLOTS)]
        self._next = [AtomicInt64(segment, _TABLE_OFFSET + i * _SLOT_SIZE + 8) for i in range(SLOTS)]
        self._slot_of: dict[int, int] = {}
        self._full_logged = False
        # acquire [CU2]: pairs with _add's release of used: the slots counted are whole.
        # Bounded: shared memory is untrusted (_usable checked it; clamped all the same).
        for i in range(max(0, min(self._used.load("acquire"), SLOTS))):
            self._slot_of[_unsigned(self._producers[i].load("relaxed"))] = i

    @classmethod
    def attach(cls, kind: str, name: str, local_object: int) -> Cursor:
        """The cursor of the importer of ``kind:name`` whose local object's
        incarnation is ``local_object``: a predecessor's if one was left
        (killed) for that same object, else a new one."""
        segment = _open_or_make(cursor_name(kind, name))
        # Persistent: a killed importer's cursor is a segment no live process
        # uses, which `shmring gc` would otherwise remove (and the loss its
        # successor must report with it); close() clears it.
        segment.persistent = True
        if not _usable(segment, kind, local_object):
            _initialise(segment, kind, local_object)
        return cls(segment)

    @property
    def name(self) -> str:
        return self.segment.name

    def streams(self) -> dict[int, int]:
        """The next number recorded per producer (a topic's)."""
        return {producer: _unsigned(self._next[slot].load("relaxed")) for producer, slot in self._slot_of.items()}

    def intent(self) -> Intent | None:
        """The last intent written whole; None before any."""
        # acquire [CU1]: pairs with begin's release of gen: the slot's words are whole.
        gen = self._gen.load("acquire")
        if gen == 0:
            return None
        words = [_unsigned(w.load("relaxed")) for w in self._intents[gen % 2]]
        return Intent(*words)

    def begin(self, producer: int, first: int, count: int, before: int, tail: int = 0, end: int = 0) -> None:
        """Say what the next write into the local object will be."""
        words = self._intents[(self._count + 1) % 2]
        # relaxed: the slot not current; made current by the gen store below.
        words[0].store(_signed(producer), "relaxed")
        words[1].store(_signed(first), "relaxed")
        words[2].store(count, "relaxed")
        words[3].store(_signed(before), "relaxed")
        words[4].store(_signed(tail), "relaxed")
        words[5].store(_signed(end), "relaxed")
        self._count += 1
        # release [CU1]: the slot's words are stored before it becomes current.
        self._gen.store(self._count, "release")
        if producer not in self._slot_of:
            self._add(producer, first)

    def done(self, producer: int, next_seq: int) -> None:
        """Every message of ``producer`` below ``next_seq`` is delivered (or
        counted in a gap that is marked in the local topic)."""
        slot = self._slot_of.get(producer)
        if slot is None:
            slot = self._add(producer, next_seq)
            if slot is None:
                return
        # relaxed: a single word, read only by a later importer (the writer dead).
        self._next[slot].store(_signed(next_seq), "relaxed")

    def _add(self, producer: int, next_seq: int) -> int | None:
        used = len(self._slot_of)
        if used >= SLOTS:
            if not self._full_logged:
                self._full_logged = True
                log.warning("cursor %s: more than %d producers; the others are not remembered across a restart",
                            self.name, SLOTS)
            return None
        self._producers[used].store(_signed(producer), "relaxed")
        self._next[used].store(_signed(next_seq), "relaxed")
        # release [CU2]: the slot's two words are stored before it is counted in use.
        self._used.store(used + 1, "release")
        self._slot_of[producer] = used
        return used

    def close(self) -> None:
        """Detach and remove the segment (once the last attachment leaves): a
        bridge stopped cleanly leaves no cursor; a killed one leaves it,
        persistent, for its successor."""
        if not self.segment.closed:
            self.segment.persistent = False
        self.segment.close()


def _open_or_make(seg_name: str) -> Segment:
    """The cursor segment of that name: the one there, or a new one.  One
    that cannot be used as a segment of ours (still being made after a
    while, damaged, of another kind or version, too small for a cursor) is
    removed and made anew: what it says is lost, and logged."""
    try:
        segment = Segment.open(seg_name)
    except FileNotFoundError:
        return _make(seg_name)
    except SegmentNotReadyError:  # being made: by a predecessor killed then, or by a process still at it
        try:
            segment = Segment.open(seg_name, timeout=_NOT_READY_WAIT_S)
        except FileNotFoundError:
            return _make(seg_name)
        except (SegmentError, ValueError) as e:
            return _remake(seg_name, e)
    except ForeignOwnerError:
        raise
    except (SegmentError, ValueError) as e:
        return _remake(seg_name, e)
    if segment.size < SIZE or segment.kind != "segment":
        why = f"a {segment.kind} of {segment.size} bytes, not a raw segment of {SIZE}"
        segment.close()
        return _remake(seg_name, why)
    return segment


def _make(seg_name: str) -> Segment:
    try:
        return Segment.create(seg_name, SIZE, persistent=True)
    except FileExistsError:  # made meanwhile: take it
        return Segment.open(seg_name, timeout=_NOT_READY_WAIT_S)


def _remake(seg_name: str, why: object) -> Segment:
    log.warning("cursor %s: unusable (%s): removed and started anew (what it recorded is lost)", seg_name, why)
    try:
        _core.unlink(seg_name)
    except FileNotFoundError:
        pass
    return _make(seg_name)


def _usable(segment: Segment, kind: str, local_object: int) -> bool:
    """Whether ``segment`` is a cursor of this layout, kind and local object,
    with counts in range (shared memory is untrusted: anything else, and the
    cursor is started anew)."""
    if segment.size < SIZE:
        return False
    buf = segment.buf
    if AtomicInt64(segment, 0).load("acquire") != MAGIC:  # [CU0]: pairs with _initialise's release
        return False
    layout, found_kind, found_object = _FIXED.unpack_from(buf, 0)
    if layout != LAYOUT or found_kind != KINDS[kind]:
        return False
    used = AtomicInt64(segment, _USED_OFFSET).load("relaxed")
    slots = AtomicInt64(segment, _SLOTS_OFFSET).load("relaxed")
    gen = AtomicInt64(segment, _GEN_OFFSET).load("relaxed")
    if slots != SLOTS or not 0 <= used <= SLOTS or gen < 0:
        log.warning("cursor %s: damaged (used %d, slots %d, gen %d): starting a new one", segment.name, used, slots,
                    gen)
        return False
    if found_object != local_object:
        log.info("cursor %s: left for another incarnation of the local object (%016x, not %016x): starting a new one",
                 segment.name, found_object, local_object)
        return False
    return True


def _initialise(segment: Segment, kind: str, local_object: int) -> None:
    """Make ``segment`` an empty cursor; its magic is stored last."""
    buf = segment.buf
    AtomicInt64(segment, 0).store(0, "relaxed")
    buf[8:SIZE] = bytes(SIZE - 8)
    _FIXED.pack_into(buf, 0, LAYOUT, KINDS[kind], local_object)
    AtomicInt64(segment, _SLOTS_OFFSET).store(SLOTS, "relaxed")
    # release [CU0]: every field above is written before an opener sees the magic.
    AtomicInt64(segment, 0).store(MAGIC, "release")
