"""The queue exporter's lease journal: a copy, in shared memory on the
exporting host, of every item the exporter took from its local queue and
has not had acknowledged, so that the items of an exporter that was killed
(SIGKILL, a crash) go back into the queue instead of vanishing with its
memory (docs/BRIDGE.md "Queues", docs/PROTOCOL.md section 9 "Lease journal").

A journal is one or more raw segments named ``shmring-journal-<pid>-<hex>``,
made ``persistent`` so that neither the exporter's death nor ``shmring gc``
removes them: each is an append-only log of entries, committed by one store
of its ``tail`` after the entries are written, and released from its
``head`` as acknowledgements arrive.  The exporter's thread is the only
writer.  Nobody reads a journal while its writer lives: a later exporter of
the same queue reads it only once the segment's creator is dead (its death,
seen through /proc, orders every store it made before it), claims it with a
compare-and-swap, puts the entries still out back into the queue, and
removes it.  Nothing here needs Zenoh."""

from __future__ import annotations

import logging
import os
import struct
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .. import _core
from .._errors import SegmentError
from ..segment import Segment, unique_name
from ..sync import AtomicInt64

__all__ = ["PREFIX", "LeaseJournal", "JournalFile", "Batch", "Recovered", "recover", "journal_names", "read_entries"]

log = logging.getLogger("shmring.bridge")

PREFIX = "shmring-journal"
SHM_DIR = "/dev/shm"
LAYOUT = 1
# Payload offsets (native byte order, as the segments' own integers).
MAGIC_OFFSET = 0  # u64: the bytes "SRLJ" then the layout (u32), stored last at creation
HEAD_OFFSET = 8  # u64: data offset of the first entry not known to be acknowledged
TAIL_OFFSET = 16  # u64: data offset just past the last committed entry
TAKING_OFFSET = 24  # u64: items the writer may be taking from the queue right now, 0 otherwise
CLAIM_OFFSET = 32  # u64: token of the process putting the entries back, 0 none
EXPORTER_OFFSET = 40  # u64: the exporter's id (on the wire)
QUEUE_ID_OFFSET = 48  # u64: the local queue's queue_id (its control block)
GETS_OFFSET = 56  # u64: the queue's `gets` counter when the current take began
NAME_OFFSET = 64  # u16 length, then the queue's name (at most 254 bytes)
DATA_OFFSET = 320
_MAGIC = int.from_bytes(b"SRLJ" + LAYOUT.to_bytes(4, "little"), "little")
# An entry is one take: u32 count, u32 take tag (_take_tag of the queue's
# `gets` when the take began; 0 for an entry of no take), u64 the first item's id
# (the others follow, +1 each); then a state byte per item, its length (u32
# each), its kind (u8 each: 0 bytes, 1 pickle), the payloads back to back,
# and padding to a multiple of 8.
ENTRY = struct.Struct("=IIQ")
OUT = 1  # leased, not acknowledged
DONE = 2  # acknowledged (or put back): skipped by a reader
DEFAULT_FILE_BYTES = 4 << 20
_PID_BITS = 22  # Linux pids are below 2**22 (PID_MAX_LIMIT)


def _signed(value: int) -> int:
    """A u64 as the AtomicInt64 that holds it (two's complement)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _unsigned(value: int) -> int:
    return value & ((1 << 64) - 1)


def _take_tag(gets: int) -> int:
    """The u32 an entry of a take carries, from the queue's ``gets`` when the
    take began (as the file's ``gets`` word holds it): never 0."""
    return (gets & 0x7FFFFFFF) | 0x80000000


def entry_size(count: int, payload_bytes: int) -> int:
    return (ENTRY.size + 6 * count + payload_bytes + 7) & ~7


class Batch:
    """One journal entry as its writer keeps track of it."""

    __slots__ = ("file", "offset", "size", "first", "count", "remaining")

    def __init__(self, file: JournalFile, offset: int, size: int, first: int, count: int) -> None:
        self.file, self.offset, self.size, self.first, self.count = file, offset, size, first, count
        self.remaining = count  # items still out


def _token(pid: int) -> int:
    """A process's claim token: its pid and start time (a reused pid has
    another start time)."""
    return ((_core.process_start_time(pid) or 0) << _PID_BITS) | pid


def _token_alive(token: int) -> bool:
    return _core.process_alive(token & ((1 << _PID_BITS) - 1), token >> _PID_BITS)


class JournalFile:
    """One journal segment, written by its creator alone."""

    def __init__(self, segment: Segment) -> None:
        self.segment = segment
        self.buf = segment.buf
        self.capacity = segment.size - DATA_OFFSET
        self._head = AtomicInt64(segment, HEAD_OFFSET)
        self._tail = AtomicInt64(segment, TAIL_OFFSET)
        self.taking = AtomicInt64(segment, TAKING_OFFSET)
        self.claim = AtomicInt64(segment, CLAIM_OFFSET)
        self.gets = AtomicInt64(segment, GETS_OFFSET)
        self.head = self._head.load()
        self.tail = self._tail.load()
        self.batches: deque[Batch] = deque()  # the entries from head on, in order

    @classmethod
    def create(cls, queue: str, exporter_id: int, queue_id: int, size: int) -> JournalFile:
        encoded = queue.encode()
        segment = Segment.create(unique_name(PREFIX), DATA_OFFSET + size, persistent=True)
        journal = cls(segment)
        AtomicInt64(segment, EXPORTER_OFFSET).store(_signed(exporter_id), "relaxed")
        AtomicInt64(segment, QUEUE_ID_OFFSET).store(_signed(queue_id), "relaxed")
        journal.buf[NAME_OFFSET:NAME_OFFSET + 2 + len(encoded)] = struct.pack("=H", len(encoded)) + encoded
        # [J0] published: pairs with a reader's load of the magic; everything
        # above is written before it.
        AtomicInt64(segment, MAGIC_OFFSET).store(_MAGIC, "release")
        return journal

    @property
    def name(self) -> str:
        return self.segment.name

    def fits(self, size: int) -> bool:
        return self.tail + size <= self.capacity

    def write(self, first_id: int, taken: Sequence[tuple[int, bytes]], size: int, tag: int = 0) -> Batch:
        """Append one entry (uncommitted): items (kind, payload) numbered
        from ``first_id``, ``size`` bytes in all (entry_size); ``tag`` its
        take's (_take_tag)."""
        count = len(taken)
        payloads = [payload for _, payload in taken]
        blob = b"".join([ENTRY.pack(count, tag, first_id), bytes([OUT]) * count,
                         struct.pack(f"={count}I", *map(len, payloads)), bytes(kind for kind, _ in taken), *payloads])
        start = DATA_OFFSET + self.tail
        self.buf[start:start + len(blob)] = blob
        batch = Batch(self, self.tail, size, first_id, count)
        self.batches.append(batch)
        self.tail += size
        return batch

    def commit(self) -> None:
        # [J2] the entries written so far are in the journal: pairs with a
        # reader's load of tail (after the writer died); written before it.
        self._tail.store(self.tail, "release")

    def release(self, batch: Batch, index: int) -> bool:
        """Mark an item acknowledged; whether it was out."""
        at = DATA_OFFSET + batch.offset + ENTRY.size + index
        if self.buf[at] != OUT:
            return False
        # A plain byte: only read once this process is dead (see the module).
        self.buf[at] = DONE
        batch.remaining -= 1
        return True

    def advance(self) -> bool:
        """Move head past the entries whose items are all acknowledged;
        whether the file is empty now (head == tail)."""
        head = self.head
        while self.batches and self.batches[0].remaining == 0:
            batch = self.batches.popleft()
            head = batch.offset + batch.size
        if head != self.head:
            self.head = head
            # [J3] entries below head are acknowledged (their state bytes were
            # written before it): a reader starts at head.
            self._head.store(head, "release")
        return self.head == self.tail

    def rewind(self) -> None:
        """An empty file starts again at offset 0: head first, so that a
        reader between the two stores finds only acknowledged entries."""
        self.head = self.tail = 0
        self._head.store(0, "release")
        self._tail.store(0, "release")

    def remove(self) -> None:
        """Nothing left to put back: forget the entries, then remove the
        segment (once every process attached has left)."""
        self._head.store(self.tail, "release")
        self.taking.store(0, "release")
        self.segment.persistent = False
        del self.buf
        self.segment.close()


class LeaseJournal:
    """The exporter's side: every leased item is journaled before it is sent
    and released when its acknowledgement is applied.  Items go into the
    newest file; a file that has no room starts a new one, and an older
    file is removed once all its items are acknowledged."""

    def __init__(self, queue: str, exporter_id: int, queue_id: int, file_bytes: int = DEFAULT_FILE_BYTES) -> None:
        self.queue, self.exporter_id, self.queue_id, self.file_bytes = queue, exporter_id, queue_id, file_bytes
        self.files = [JournalFile.create(queue, exporter_id, queue_id, file_bytes)]
        # Every entry not known to be acknowledged in all, by first id (ids
        # grow from entry to entry), to find an item's entry by bisection.
        self._batches: list[Batch] = []
        self._firsts: list[int] = []
        self._out = 0
        self._taking: JournalFile | None = None

    def begin_take(self, count: int, gets: int) -> None:
        """Before items are taken from the queue: up to ``count``, with the
        queue's ``gets`` counter now (a reader of a dead writer's journal
        compares it with the queue's to tell whether anything was taken)."""
        current = self.files[-1]
        current.gets.store(gets, "relaxed")
        # [J1] set before the take, cleared after the commit ([J2]): a reader
        # that finds it set knows the writer died in between.
        current.taking.store(count, "release")
        self._taking = current

    def record(self, taken: Sequence[tuple[int, bytes]], first_id: int) -> None:
        """Journal the items taken, (kind, payload) each, numbered from
        ``first_id``, as one entry, and commit it."""
        if not taken:
            return
        size = entry_size(len(taken), sum(len(payload) for _, payload in taken))
        if not self.files[-1].fits(size):
            self.files.append(JournalFile.create(self.queue, self.exporter_id, self.queue_id,
                                                 max(self.file_bytes, size)))
            self._move_take(self.files[-1])
        file = self.files[-1]
        tag = _take_tag(file.gets.load("relaxed")) if self._taking is file else 0
        self._batches.append(file.write(first_id, taken, size, tag))
        self._firsts.append(first_id)
        self._out += len(taken)
        file.commit()

    def _move_take(self, file: JournalFile) -> None:
        """The take in progress commits in ``file``, a new one: its mark goes
        there, where a reader finds the commit beside it (left on the older
        file, a death after the commit counted the items both put back and
        maybe lost).  Set there first, then cleared here: a reader always
        finds one (both, in between: the same take, counted once by recover)."""
        old = self._taking
        if old is None or old is file:
            return
        file.gets.store(old.gets.load("relaxed"), "relaxed")
        file.taking.store(old.taking.load("relaxed"), "release")  # [J1], as begin_take's
        old.taking.store(0, "release")  # [J1]
        self._taking = file

    def end_take(self) -> None:
        if self._taking is not None:
            self._taking.taking.store(0, "release")  # [J1] after [J2]
            self._taking = None

    def release(self, item_ids: Iterable[int]) -> None:
        """Acknowledged items (ids the journal does not hold are skipped)."""
        touched: set[JournalFile] = set()
        batches, firsts = self._batches, self._firsts
        for item_id in item_ids:
            i = bisect_right(firsts, item_id) - 1
            if i < 0:
                continue
            batch = batches[i]
            index = item_id - batch.first
            if index < batch.count and batch.remaining and batch.file.release(batch, index):
                self._out -= 1
                touched.add(batch.file)
        for file in touched:
            if file.advance():
                if file is self.files[-1]:
                    file.rewind()
                else:
                    self.files.remove(file)
                    file.remove()
        done = 0
        while done < len(batches) and batches[done].remaining == 0:
            done += 1
        if done:
            del batches[:done], firsts[:done]

    def discard(self) -> None:
        """Every item is back in the queue (or acknowledged): remove the journal."""
        self._batches.clear()
        self._firsts.clear()
        self._out = 0
        for file in self.files:
            file.remove()
        self.files.clear()

    def leave(self) -> None:
        """Stop writing and leave the files as they are (persistent): what is
        still out in them goes back into the queue by the next exporter of it
        that looks once this process is dead."""
        for file in self.files:
            del file.buf
            file.segment.close()
        self.files.clear()

    def __len__(self) -> int:
        return self._out


@dataclass
class Recovered:
    """What was found in dead exporters' journals of one queue."""

    items: int = 0  # put back into the queue
    files: int = 0
    maybe_lost: int = 0  # taken by a writer that died before journaling them (at most)
    damaged: int = 0  # bytes of entries that could not be read
    left: int = 0  # items not put back (the queue full): their journals stay for the next look
    # (exporter, gets) of each take counted in maybe_lost: a take whose mark
    # was moving to a new file when its writer died is on two files.
    takes: set[tuple[int, int]] = field(default_factory=set, repr=False)


def journal_names() -> list[str]:
    try:
        return sorted(name for name in os.listdir(SHM_DIR) if name.startswith(PREFIX + "-"))
    except OSError:
        return []


def _read_queue_name(buf: memoryview) -> str | None:
    (length,) = struct.unpack_from("=H", buf, NAME_OFFSET)
    if length > DATA_OFFSET - NAME_OFFSET - 2:
        return None
    return bytes(buf[NAME_OFFSET + 2:NAME_OFFSET + 2 + length]).decode(errors="replace")


def read_entries(buf: memoryview, head: int, tail: int) -> tuple[list[tuple[int, int, bytes]], int]:
    """The items still out in the entries between head and tail (item id,
    kind, payload), and how many bytes could not be read (a damaged entry
    ends the walk)."""
    items, damaged = _read_entries_at(buf, head, tail)
    return [(item_id, kind, payload) for item_id, kind, payload, _ in items], damaged


def _read_entries_at(buf: memoryview, head: int, tail: int) -> tuple[list[tuple[int, int, bytes, int]], int]:
    """read_entries, with each item's state byte's offset in ``buf``."""
    items: list[tuple[int, int, bytes, int]] = []
    at, capacity = head, len(buf) - DATA_OFFSET
    if not head <= tail <= capacity:
        return [], max(0, min(tail, capacity) - min(head, capacity))
    while tail - at >= ENTRY.size:
        count, _, first = ENTRY.unpack_from(buf, DATA_OFFSET + at)
        table = DATA_OFFSET + at + ENTRY.size
        if count == 0 or at + entry_size(count, 0) > tail:
            break
        states = bytes(buf[table:table + count])
        lengths = struct.unpack_from(f"={count}I", buf, table + count)
        kinds = bytes(buf[table + 5 * count:table + 6 * count])
        if at + entry_size(count, sum(lengths)) > tail or not set(states) <= {OUT, DONE} or not set(kinds) <= {0, 1}:
            break
        start = table + 6 * count
        for index in range(count):
            if states[index] == OUT:
                items.append((first + index, kinds[index], bytes(buf[start:start + lengths[index]]), table + index))
            start += lengths[index]
        at += entry_size(count, sum(lengths))
    return items, tail - at


def _claim(segment: Segment) -> AtomicInt64 | None:
    """Claim a dead writer's journal for this process, or None if it is not
    one (another queue's, its writer alive, another live process on it)."""
    claim = AtomicInt64(segment, CLAIM_OFFSET)
    mine = _token(os.getpid())
    held = claim.load()
    if held == mine or (held and _token_alive(held)):
        return None
    ok, _ = claim.compare_exchange(held, mine)
    return claim if ok else None


def recover(queue: str, put_back: Callable[[list[tuple[int, bytes]]], int],
            queue_state: Callable[[], tuple[int, int, bool]]) -> Recovered:
    """Put back into ``queue`` the entries still out in every journal of it
    whose writer is dead.  ``put_back`` receives (kind, payload) pairs and
    answers how many of them, from the first, it put into the queue (it may
    stop early when the queue is full: the rest stay in the journal, marked
    so, for the next look); ``queue_state`` says (queue_id, gets, whether
    the lock's holder is dead)."""
    found = Recovered()
    for name in journal_names():
        try:
            segment = Segment.open(name)
        except (OSError, SegmentError, ValueError):  # gone meanwhile, or not ready yet
            continue
        try:
            if segment.size < DATA_OFFSET or AtomicInt64(segment, MAGIC_OFFSET).load("acquire") != _MAGIC:
                continue
            if _read_queue_name(segment.buf) != queue or segment.info().alive:
                continue
            claim = _claim(segment)
            if claim is None:
                continue
            try:
                finished = _recover_file(JournalFile(segment), put_back, queue_state, found)
            except BaseException:
                claim.store(0)  # left as it was, for the next look (this one's or another's)
                raise
            if not finished:
                claim.store(0)  # the rest, for the next look (this one's or another's)
        finally:
            if not segment.closed:
                segment.close()
    return found


def _recover_file(file: JournalFile, put_back: Callable[[list[tuple[int, bytes]]], int],
                  queue_state: Callable[[], tuple[int, int, bool]], found: Recovered) -> bool:
    """Put back what ``file`` (claimed) holds; whether all of it went (then
    the file is removed)."""
    entries, damaged = _read_entries_at(file.buf, file.head, file.tail)
    put = put_back([(kind, payload) for _, kind, payload, _ in entries]) if entries else 0
    for _, _, _, state in entries[:put]:
        # A plain byte, as the writer's: read by whoever claims the file next.
        file.buf[state] = DONE
    taking = _take_lost(file, queue_state, found)
    found.items += put
    found.maybe_lost += taking
    name, exporter = _read_queue_name(file.buf), _unsigned(AtomicInt64(file.segment, EXPORTER_OFFSET).load())
    lost = f"; up to {taking} items it was taking when it died may be lost" if taking else ""
    if put < len(entries):
        found.left += len(entries) - put
        log.warning("queue %s: journal %s of dead exporter %016x: %d items put back into the local queue, %d left "
                    "in the journal for the next look (the queue is full)%s", name, file.name, exporter, put,
                    len(entries) - put, lost)
        return False
    found.files += 1
    found.damaged += damaged
    log.warning("queue %s: journal %s of dead exporter %016x: %d items put back into the local queue%s%s",
                name, file.name, exporter, len(entries), lost,
                f"; {damaged} bytes of damaged entries not read" if damaged else "")
    file.remove()
    return True


def _take_lost(file: JournalFile, queue_state: Callable[[], tuple[int, int, bool]], found: Recovered) -> int:
    """How many items the dead writer may have lost in the take it was in
    (0 if none, or counted already); the mark is cleared once counted."""
    taking = file.taking.load()
    if not taking:
        return 0
    if _last_entry_tag(file) == _take_tag(file.gets.load()):
        file.taking.store(0)  # the take's entry is committed beside the mark: nothing lost
        return 0
    take = (_unsigned(AtomicInt64(file.segment, EXPORTER_OFFSET).load()), file.gets.load())
    queue_id, gets, holder_dead = queue_state()
    same_queue = queue_id == _unsigned(AtomicInt64(file.segment, QUEUE_ID_OFFSET).load())
    taken = gets - file.gets.load() if same_queue and not holder_dead else taking
    file.taking.store(0)  # counted: not again at a later look at this file
    if take in found.takes:
        return 0
    found.takes.add(take)
    return max(0, min(taking, taken))


def _last_entry_tag(file: JournalFile) -> int:
    """The take tag of the last whole entry from head to tail (0: none)."""
    buf, at, tag = file.buf, file.head, 0
    if not 0 <= at <= file.tail <= file.capacity:
        return 0
    while file.tail - at >= ENTRY.size:
        count, entry_tag, _ = ENTRY.unpack_from(buf, DATA_OFFSET + at)
        if count == 0 or at + entry_size(count, 0) > file.tail:
            break
        lengths = struct.unpack_from(f"={count}I", buf, DATA_OFFSET + at + ENTRY.size + count)
        size = entry_size(count, sum(lengths))
        if at + size > file.tail:
            break
        at, tag = at + size, entry_tag
    return tag
